"""Images/s of one DeXpression training step under each precision and memory layout.

    .venv/bin/python benchmarks/train_step.py            # prints one line per variant

This is where docs/RESULTS.md's "bf16 is ~10x slower than fp32 on an AVX2 CPU" comes from, and
why `--precision auto` picks fp32 on CPUs without native bf16 units. Median of 10 timed steps
after 2 warm-up steps, batch 100, random data (the step's cost does not depend on the pixels).
"""

from __future__ import annotations

import statistics
import time

import torch
import torch.nn.functional as F

from fertool.models import create_model
from fertool.runtime import cpu_has_fast_bf16


def images_per_second(
    channels_last: bool, dtype: torch.dtype | None, batch: int = 100, steps: int = 12
) -> float:
    torch.manual_seed(0)
    model = create_model("dexpression")
    x, y = torch.rand(batch, 1, 48, 48), torch.randint(0, 7, (batch,))
    if channels_last:
        model, x = (
            model.to(memory_format=torch.channels_last),
            x.contiguous(memory_format=torch.channels_last),
        )
    optimizer = torch.optim.Adam(model.parameters(), 1e-4)
    times = []
    for _ in range(steps):
        started = time.perf_counter()
        with torch.autocast("cpu", dtype=dtype or torch.bfloat16, enabled=dtype is not None):
            loss = F.cross_entropy(model(x).float(), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        times.append(time.perf_counter() - started)
    return batch / statistics.median(times[2:])


def main() -> None:
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU capability "
        f"{torch.backends.cpu.get_cpu_capability()}, native bf16: {cpu_has_fast_bf16()}"
    )
    for channels_last in (False, True):
        for dtype in (None, torch.bfloat16):
            rate = images_per_second(channels_last, dtype)
            layout = "channels_last" if channels_last else "contiguous"
            print(f"{layout:>14} {'bf16' if dtype else 'fp32'}: {rate:7.0f} train images/s")


if __name__ == "__main__":
    main()
