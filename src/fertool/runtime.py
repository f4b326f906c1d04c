"""Where and how fast to compute: device and precision selection, shared by every step.

    device = resolve_device("auto")             # cuda if present, else mps, else cpu
    dtype = resolve_precision("auto", device)   # torch.bfloat16, torch.float16 or None (fp32)
    with autocast(device, dtype): logits = model(x)

`auto` picks the fastest precision that is correct on the machine. bf16 is only fast on CPUs
with native bf16 matrix units (Intel AMX, AVX512-BF16): on an AVX2 CPU, bf16 autocast made a
DeXpression training step ~10x slower than fp32 (measured on this project's AMD EPYC dev box),
and ~3x slower on an AVX-512 Xeon without AVX512-BF16, so there `auto` stays fp32.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch

from fertool.errors import BadInputError
from fertool.options import Precision

PRECISIONS = Precision.values()
_DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_device(name: str = "auto") -> torch.device:
    """'auto' | 'cpu' | 'cuda' | 'cuda:N' | 'mps' -> a torch.device that exists here."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError as err:
        raise BadInputError(
            f"--device {name}: not a device name; use auto, cpu, cuda, cuda:N or mps"
        ) from err
    if device.type == "cuda" and not torch.cuda.is_available():
        raise BadInputError(
            f"--device {name}: no CUDA GPU is visible here; use --device cpu or auto"
        )
    if (
        device.type == "cuda"
        and device.index is not None
        and device.index >= torch.cuda.device_count()
    ):
        raise BadInputError(
            f"--device {name}: only {torch.cuda.device_count()} CUDA device(s) here"
        )
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise BadInputError(f"--device {name}: MPS is not available here; use --device cpu or auto")
    return device


def cpu_has_fast_bf16() -> bool:
    """True where the CPU multiplies bf16 matrices natively (AMX or AVX512-BF16).

    Asks for the instructions themselves: oneDNN's own `_is_mkldnn_bf16_supported()` also says
    yes on AVX-512 CPUs without them (Skylake to Ice Lake), where it emulates bf16 and a training
    step ran ~3x slower than fp32 (an Intel Xeon in this project's docs/RESULTS.md).
    """
    cpu = torch.cpu
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    # Private probes of torch.cpu; where one is missing the answer is fp32: at worst a missed
    # speed-up, never the 3-10x slow-down of emulated bf16.
    return any(getattr(cpu, name, lambda: False)() for name in checks)


def resolve_precision(name: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for `name` on `device`; None means plain fp32."""
    if name not in PRECISIONS:
        raise BadInputError(f"--precision {name}: choose one of {', '.join(PRECISIONS)}")
    if name != "auto":
        if name == "fp16" and device.type == "cpu":
            raise BadInputError("--precision fp16: not supported on CPU; use bf16 or fp32")
        return _DTYPES[name]
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "cpu" and cpu_has_fast_bf16():
        return torch.bfloat16
    return None


def model_placement(model: torch.nn.Module) -> tuple[torch.device, torch.dtype]:
    """Device and floating dtype of the model's weights: where and how to feed it."""
    weight = next((p for p in model.parameters() if p.is_floating_point()), None)
    return (
        (weight.device, weight.dtype)
        if weight is not None
        else (torch.device("cpu"), torch.float32)
    )


def precision_name(dtype: torch.dtype | None) -> str:
    return {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[dtype]


@contextlib.contextmanager
def autocast(device: torch.device, dtype: torch.dtype | None) -> Iterator[None]:
    if dtype is None:
        yield
        return
    with torch.autocast(device_type=device.type, dtype=dtype):
        yield


@contextlib.contextmanager
def eval_mode(model: torch.nn.Module) -> Iterator[torch.nn.Module]:
    """The model in eval mode for the block, then back in the mode it was in (even on error)."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)
