"""`--precision auto` on CPUs: bf16 only where the CPU has native bf16 instructions."""

from __future__ import annotations

import pytest
import torch

from fertool import runtime
from fertool.errors import BadInputError

CPU = torch.device("cpu")


def fake_cpu(monkeypatch, avx512_bf16: bool, amx: bool, mkldnn_bf16: bool = True) -> None:
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)
    # oneDNN says yes on any AVX-512 CPU, emulating bf16 where the instructions are missing:
    # the decision must not follow it.
    monkeypatch.setattr(
        torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: mkldnn_bf16, raising=False
    )


@pytest.mark.parametrize(
    ("avx512_bf16", "amx", "expected"),
    [(True, False, torch.bfloat16), (False, True, torch.bfloat16), (False, False, None)],
    ids=[
        "avx512-bf16 (Zen 4, Cooper Lake)",
        "amx (Sapphire Rapids)",
        "avx-512 alone (Skylake-Ice Lake)",
    ],
)
def test_auto_picks_bf16_only_with_native_bf16(monkeypatch, avx512_bf16, amx, expected):
    fake_cpu(monkeypatch, avx512_bf16, amx)
    assert runtime.resolve_precision("auto", CPU) is expected


def test_auto_is_fp32_when_torch_lacks_the_probes(monkeypatch):
    monkeypatch.delattr(torch.cpu, "_is_avx512_bf16_supported")
    monkeypatch.delattr(torch.cpu, "_is_amx_tile_supported")
    assert runtime.resolve_precision("auto", CPU) is None


def test_an_explicit_precision_is_obeyed_whatever_the_cpu(monkeypatch):
    fake_cpu(monkeypatch, avx512_bf16=False, amx=False)
    assert runtime.resolve_precision("bf16", CPU) is torch.bfloat16
    assert runtime.resolve_precision("fp32", CPU) is None
    with pytest.raises(BadInputError, match="fp16: not supported on CPU"):
        runtime.resolve_precision("fp16", CPU)
    with pytest.raises(BadInputError, match="choose one of auto, fp32, bf16, fp16"):
        runtime.resolve_precision("half", CPU)
