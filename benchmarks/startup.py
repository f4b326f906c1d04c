"""How long fertool's commands take to start: each timed as a fresh process, median of runs.

    .venv/bin/python benchmarks/startup.py               # this checkout
    .venv/bin/python benchmarks/startup.py --src OTHER/src --runs 5   # another checkout's code

Commands that only read files (info, confusion, curves) never import torch; the others pay for
it on every start, and train-branch also for torch._dynamo, which torch.optim's constructor
imports. The inputs are made once, in a temporary folder: 300 synthetic faces, a 1-epoch
`tiny` branch and its predictions, so what is timed is start-up, not work.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def seconds(command: list[str], env: dict[str, str], runs: int) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run(command, env=env, check=True, capture_output=True)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--src", type=Path, help="import fertool from this folder instead of the installed one"
    )
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    if args.src:
        env["PYTHONPATH"] = str(args.src.resolve())
    fertool = [sys.executable, "-m", "fertool"]
    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        data, model, preds = tmp / "data.safetensors", tmp / "tiny.safetensors", tmp / "preds.npz"
        subprocess.run(
            [*fertool, "prepare", "--synthetic", "300", "-o", str(data)],
            env=env,
            check=True,
            capture_output=True,
        )
        subprocess.run(
            [
                *fertool,
                "train-branch",
                str(data),
                "-o",
                str(model),
                "--arch",
                "tiny",
                "--epochs",
                "1",
            ],
            env=env,
            check=True,
            capture_output=True,
        )
        subprocess.run(
            [*fertool, "eval", str(data), str(model), "-o", str(preds)],
            env=env,
            check=True,
            capture_output=True,
        )
        rows = {
            "python -c 'import torch'": [sys.executable, "-c", "import torch"],
            "... and construct an optimizer (imports torch._dynamo)": [
                sys.executable,
                "-c",
                "import torch; torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)",
            ],
            "fertool --version": [*fertool, "--version"],
            "fertool info (the bundled model)": [*fertool, "info"],
            "fertool info MODEL": [*fertool, "info", str(model)],
            "fertool confusion PREDS -o c.png": [
                *fertool,
                "confusion",
                str(preds),
                "-o",
                str(tmp / "c.png"),
            ],
            "fertool curves MODEL -o curves.png": [
                *fertool,
                "curves",
                str(model),
                "-o",
                str(tmp / "curves.png"),
            ],
            "fertool eval DATA MODEL (300 faces)": [*fertool, "eval", str(data), str(model)],
            "fertool train-branch DATA --arch tiny --epochs 1": [
                *fertool,
                "train-branch",
                str(data),
                "-o",
                str(tmp / "again.safetensors"),
                "--arch",
                "tiny",
                "--epochs",
                "1",
            ],
        }
        print(f"| command (median of {args.runs} fresh processes) | seconds |")
        print("| --- | --- |")
        for name, command in rows.items():
            print(f"| {name} | {seconds(command, env, args.runs):.2f} |", flush=True)


if __name__ == "__main__":
    main()
