"""Faces/s through torch and through ONNX Runtime, batch 1 and 100: the bundled model (its own
views, crops: six per face) and each branch architecture (untrained weights, no views).

    .venv/bin/python benchmarks/onnx_vs_torch.py [fer.safetensors] [--threads 2] [--runs 5]

Both runtimes go through facemodel.FaceModel.probabilities, the call eval, predict and the Python
API make, in fp32 on the CPU with the same number of threads. Each figure is the median of
`--runs` timed passes, one runtime's after the other's, after a warm-up; batch 1 is 30 faces
one at a time, batch 100 one call of 100 faces. Faces: FER2013 val when a data set is given,
random pixels otherwise (the speed does not depend on them). docs/BENCHMARKS.md has a table of
its output.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from fertool.artifacts import load_artifact, save_tensors
from fertool.bundled import DEFAULT_MODEL, load_face_model
from fertool.evaluate import select_split
from fertool.export import export_onnx
from fertool.facemodel import FaceModel
from fertool.models import build_classifier, list_models
from fertool.onnxmodel import OnnxFaceModel

CLASSES = ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"]


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


def branch_file(folder: Path, arch: str) -> Path:
    model = build_classifier(arch, {"num_classes": 7}, {"mean": 0.5, "std": 0.25})
    path = folder / f"{arch}.safetensors"
    meta = {
        "arch": arch,
        "arch_args": {"num_classes": 7},
        "classes": CLASSES,
        "input_size": [1, 48, 48],
        "normalization": {"mean": 0.5, "std": 0.25},
    }
    save_tensors(path, model.state_dict(), kind="branch", meta=meta)
    return path


def one_run(model: FaceModel, faces: np.ndarray, batch: int) -> float:
    """faces/s of one pass over `faces`, fed `batch` at a time."""
    started = time.perf_counter()
    for start in range(0, len(faces), batch):
        model.probabilities(faces[start : start + batch], batch_size=batch)
    return len(faces) / (time.perf_counter() - started)


def medians(
    models: tuple[FaceModel, FaceModel], faces: np.ndarray, batch: int, runs: int
) -> tuple[float, float]:
    """Median faces/s of each model over `runs` passes, all of one model's passes before the
    other's, each after a warm-up pass (allocations, ORT's graph setup).

    Not alternated: ONNX Runtime's threads spin for a while after each run, and on 2 cores that
    starved torch's next pass (bundled model, batch 1: 1 face/s alternated, 30 alone)."""
    rates: tuple[list[float], list[float]] = ([], [])
    for model, found in zip(models, rates):
        model.probabilities(faces[:batch])
        found.extend(one_run(model, faces, batch) for _ in range(runs))
    return statistics.median(rates[0]), statistics.median(rates[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", nargs="?", help="a dataset artifact; its val faces are fed")
    parser.add_argument("--threads", type=int, default=2, help="torch and ONNX Runtime threads")
    parser.add_argument("--runs", type=int, default=5, help="timed runs per figure (median)")
    parser.add_argument("--models", nargs="*", help="only these (bundled, or architectures)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.data:
        images = select_split(load_artifact(args.data, expect="dataset"), "val")[0].numpy()
    else:
        images = np.random.default_rng(0).integers(0, 256, (100, 48, 48), dtype=np.uint8)
    sizes = {1: images[:30], 100: images[:100]}
    names = ["bundled", *(a for a in list_models() if a != "tiny")]
    print(f"# {cpu_name()}; {args.threads} threads each (torch {torch.__version__}, fp32)")
    print("| model | views | batch | torch faces/s | ONNX Runtime faces/s | ratio | max diff |")
    print("| --- | --- | --- | ---: | ---: | ---: | ---: |")
    with tempfile.TemporaryDirectory() as folder:
        for name in args.models or names:
            source = DEFAULT_MODEL if name == "bundled" else branch_file(Path(folder), name)
            target = Path(folder) / f"{name}.onnx"
            properties = export_onnx(source, target)
            torch_model = load_face_model(source)
            torch_model.place("cpu", "fp32")
            onnx_model = OnnxFaceModel(target, threads=args.threads)
            difference = np.abs(
                torch_model.probabilities(sizes[100]) - onnx_model.probabilities(sizes[100])
            ).max()
            for batch, faces in sizes.items():
                torch_rate, onnx_rate = medians((torch_model, onnx_model), faces, batch, args.runs)
                print(
                    f"| {name} | {properties['tta']} | {batch} | {torch_rate:,.0f} | "
                    f"{onnx_rate:,.0f} | {onnx_rate / torch_rate:.1f}x | {difference:.1e} |",
                    flush=True,
                )


if __name__ == "__main__":
    main()
