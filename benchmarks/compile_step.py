"""Does torch.compile pay on this machine? Eager against compiled, training step and inference.

    .venv/bin/python benchmarks/compile_step.py

Batch 100, channels_last, fp32, random data; median of steps 6-30, plus the first (compiling)
step's time. fertool does not compile by default because on the project's CPU box compiling
made training slower and saved less at inference than it cost (docs/BENCHMARKS.md).
"""

from __future__ import annotations

import statistics
import time

import torch
import torch.nn.functional as F

from fertool.models import build_classifier


def rate(
    arch: str, compiled: bool, infer: bool, steps: int = 30, batch: int = 100
) -> tuple[float, float]:
    torch.manual_seed(0)
    model = build_classifier(arch, {"num_classes": 7}, {"mean": 0.5, "std": 0.25}).to(
        memory_format=torch.channels_last
    )
    optimizer = torch.optim.Adam(model.parameters(), 1e-4)
    forward = torch.compile(model) if compiled else model
    x = torch.rand(batch, 1, 48, 48).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 7, (batch,))
    model.train(not infer)
    times = []
    for _ in range(steps):
        started = time.perf_counter()
        if infer:
            with torch.inference_mode():
                forward(x)
        else:
            loss = F.cross_entropy(forward(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        times.append(time.perf_counter() - started)
    return batch / statistics.median(times[5:]), times[0]


def main() -> None:
    for arch in ("dexpression", "dexpression_bn", "dexpression_bn_gentle_wide"):
        for infer in (False, True):
            eager, _ = rate(arch, False, infer)
            compiled, first = rate(arch, True, infer)
            print(
                f"{arch:>15} {'infer' if infer else 'train'}: eager {eager:5.0f} img/s, "
                f"compiled {compiled:5.0f} img/s (first step {first:.1f} s)",
                flush=True,
            )


if __name__ == "__main__":
    main()
