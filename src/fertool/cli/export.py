"""fertool export: a model as one ONNX file, its preprocessing and test-time views inside.

fertool export -o default.onnx                            # the bundled model, its own views
fertool export branch1.safetensors -o branch1.onnx --tta flip --input float32
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from fertool.cli.base import USE_PANEL, JsonOpt, ModelArg, TtaOpt, command, out, print_json
from fertool.options import FaceInput, Tta


@command(panel=USE_PANEL)
def export(
    model_path: ModelArg = None,
    output: Annotated[
        Path,
        typer.Option("-o", "--output", help="The ONNX file to write.", show_default=False),
    ] = Path("model.onnx"),
    tta: TtaOpt = Tta.AUTO,
    face_input: Annotated[
        FaceInput,
        typer.Option(
            "--input",
            help="Element type of the graph's input faces (N x 48 x 48 gray, 0..255 either way).",
        ),
    ] = FaceInput.UINT8,
    as_json: JsonOpt = False,
) -> None:
    """Write a branch or ensemble as an ONNX file that ONNX Runtime (or any ONNX runtime) runs.

    The graph takes faces (N x 48 x 48 gray pixels, 0..255) and returns the 7 class
    probabilities: scaling, normalisation, the views of --tta, the model's temperature and the
    mean over views are all inside. Class names, label order, input format, views and the source
    model's name and sha256 are in its metadata properties. `fertool eval` and `fertool predict`
    run the file through ONNX Runtime. Needs the onnx extra: pip install 'fertool[onnx]'.

    Example: fertool export branch1.safetensors -o branch1.onnx --tta flip
    """
    from fertool.export import export_onnx

    properties = export_onnx(model_path, output, tta.value, face_input.value)
    size = output.stat().st_size
    summary = {
        "output": str(output),
        "bytes": size,
        **{k: properties[k] for k in ("source_model", "source_sha256", "tta", "temperature")},
        "input": face_input.value,
    }
    if as_json:
        print_json(summary)
        return
    out.print(
        f"wrote {output} ({size / 1e6:.1f} MB): {properties['source_model']} with views "
        f"{properties['tta']}, input {face_input.value} N x 48 x 48, output N x 7 probabilities",
        highlight=False,
    )
