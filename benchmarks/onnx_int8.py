"""Is an int8 export worth offering? ONNX Runtime's dynamic quantizer on an fp32 export, then the
accuracy and time on FER2013 val (PublicTest) through the same FaceModel calls as `fertool eval`.

    fertool export -o default.onnx
    .venv/bin/python benchmarks/onnx_int8.py default.onnx fer.safetensors

The answer on 2026-12-07 (docs/experiments/2026-12-07-onnx-export.md): val accuracy 71.36 % ->
71.27 %, the file 18.1 -> 4.7 MB, and ~6x slower on a 2-core AVX512 EPYC (ConvInteger), so
`fertool export` offers no --int8.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

from fertool.artifacts import load_artifact
from fertool.bundled import load_face_model
from fertool.evaluate import select_split


def main() -> None:
    from onnxruntime.quantization import (  # type: ignore[import-untyped]  # no type information
        QuantType,
        quantize_dynamic,
    )

    source, data = Path(sys.argv[1]), sys.argv[2]
    images, labels, _ = select_split(load_artifact(data, expect="dataset"), "val")
    with tempfile.TemporaryDirectory() as folder:
        target = Path(folder) / "int8.onnx"
        quantize_dynamic(str(source), str(target), weight_type=QuantType.QInt8)
        for path in (source, target):
            model = load_face_model(path)
            started = time.perf_counter()
            probabilities = model.probabilities(images.numpy(), batch_size=100)
            seconds = time.perf_counter() - started
            accuracy = (probabilities.argmax(1) == labels.numpy()).mean()
            print(
                f"{path.name}: {path.stat().st_size / 1e6:.1f} MB, views {model.tta}, "
                f"val accuracy {accuracy:.4%}, {seconds:.0f} s",
                flush=True,
            )


if __name__ == "__main__":
    main()
