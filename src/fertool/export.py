"""ONNX export: a branch or ensemble, with its preprocessing and test-time views, as one graph.

    path = export_onnx(Path("default.safetensors"), Path("default.onnx"), tta="auto")

The graph takes faces as fertool crops them (`faces`: N x 48 x 48 gray pixels, 0..255, uint8 or
float32 as chosen) and returns `probabilities` (float32 N x 7): scaling to [0, 1], each
branch's normalisation, the views (mirror image, zoomed-in centre crops), the temperature and
the mean of the views' softmax are all inside, so a caller in a phone app or a web service
feeds pixels and reads probabilities, with nothing of fertool's to reimplement. The metadata
properties say what goes in and out, and which model file it came from (onnxmodel.py reads them).
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fertool.constants import IMAGE_SIZE
from fertool.errors import BadInputError, FertoolError
from fertool.onnxmodel import FORMAT, ONNX_MISSING
from fertool.options import FaceInput
from fertool.version import __version__

OPSET = 17  # onnxruntime >= 1.18 runs it; GridSample-free, so no newer opset is needed
INPUT_TYPES = FaceInput.values()


def zoom_matrix(zoom: float, side: int = IMAGE_SIZE) -> torch.Tensor:
    """side x side M with `zoom_about_centre(x, zoom) == M @ x @ M.T` for any image x.

    The zoom is bilinear along each axis with the edge repeated, so it is one linear map per axis;
    probing it with an image of one bright column per batch item reads that map off. A matrix
    product needs only MatMul in the graph, where affine_grid needs opset 20, and runs faster.
    """
    from fertool.augment import zoom_about_centre

    probes = torch.eye(side).view(side, 1, 1, side).expand(side, 1, side, side).contiguous()
    zoomed = zoom_about_centre(probes, zoom)  # probe k: column k lit
    return zoomed[:, 0, 0, :].T.contiguous()  # M[j, k]: weight of column k in output column j


class ExportGraph(nn.Module):
    """faces (N x 48 x 48, 0..255) -> probabilities: the mean over the views of
    softmax(logits / temperature), as evaluate.tta_logits computes them."""

    zooms: torch.Tensor  # a buffer: one matrix per zoomed-in crop

    def __init__(self, model: nn.Module, tta: str, temperature: float = 1.0):
        from fertool.evaluate import CROP_ZOOMS, check_tta

        super().__init__()
        check_tta(tta)
        self.model = model.eval()
        self.tta = tta
        self.inverse_temperature = 1.0 / temperature
        crops = CROP_ZOOMS[1:] if tta == "crops" else ()
        matrices = [zoom_matrix(zoom) for zoom in crops]
        self.crop_count = len(matrices)  # a Python int: the tracer unrolls the loop over it
        self.register_buffer(
            "zooms", torch.stack(matrices) if matrices else torch.zeros(0, IMAGE_SIZE, IMAGE_SIZE)
        )

    def views(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The views of evaluate.tta_views, in its order."""
        if self.tta == "none":
            return [x]
        views = [x, x.flip(-1)]
        for index in range(self.crop_count):
            matrix = self.zooms[index]
            crop = matrix @ x @ matrix.T
            views += [crop, crop.flip(-1)]
        return views

    def forward(self, faces: torch.Tensor) -> torch.Tensor:
        x = faces.float().div(255.0).unsqueeze(1)  # as evaluate.to_input scales
        views = self.views(x)
        logits = self.model(torch.cat(views)).float() * self.inverse_temperature
        return logits.softmax(dim=-1).view(len(views), x.shape[0], -1).mean(dim=0)


def export_metadata(
    meta: dict[str, Any], source: Path, tta: str, temperature: float, input_type: str
) -> dict[str, str]:
    """The ONNX metadata properties (strings; lists as JSON) an export carries."""
    from fertool.provenance import file_sha256

    classes = list(meta["classes"])
    return {
        "fertool_format": FORMAT,
        "classes": json.dumps(classes),
        "label_order": ", ".join(f"{i} {name}" for i, name in enumerate(classes)),
        "input_format": f"faces: {input_type} N x {IMAGE_SIZE} x {IMAGE_SIZE}, gray 0..255, "
        "one face per image (normalisation is inside the graph)",
        "output_format": f"probabilities: float32 N x {len(classes)}, in label_order, "
        "rows sum to 1",
        "input_size": json.dumps(meta.get("input_size", [1, IMAGE_SIZE, IMAGE_SIZE])),
        "tta": tta,
        "temperature": repr(temperature),
        "source_model": source.name,
        "source_sha256": file_sha256(source),
        "source_kind": str(meta["kind"]),
        "source_arch": str(meta.get("arch", meta["kind"])),
        "fertool_version": __version__,
    }


def export_onnx(
    model_path: Path | None,
    output: Path,
    tta: str = "auto",
    input_type: str = "uint8",
) -> dict[str, str]:
    """Write `model_path` (the bundled model for None) as ONNX to `output`, atomically, and
    return its metadata properties. `tta="auto"` bakes in the views the model file asks for."""
    from fertool.artifacts import atomic_path, check_output_path
    from fertool.bundled import resolve_model
    from fertool.evaluate import model_tta

    try:
        import onnx
    except ImportError as err:
        raise FertoolError(ONNX_MISSING) from err
    if input_type not in INPUT_TYPES:
        raise BadInputError(f"--input {input_type}: choose one of {', '.join(INPUT_TYPES)}")
    if output.suffix.lower() != ".onnx":
        raise BadInputError(f"-o {output}: an export is an ONNX file; name it FILE.onnx")
    check_output_path(output, inputs=[model_path])
    model, meta, name = resolve_model(model_path)
    views = model_tta(meta, tta)
    temperature = model.temperature  # models.load_model read it; schemas checked it is > 0
    graph = ExportGraph(model.float().cpu(), views, temperature)
    example = torch.full(
        (2, IMAGE_SIZE, IMAGE_SIZE), 128, dtype=getattr(torch, input_type)
    )  # two faces: a batch of 1 would let the exporter fix the batch size
    properties = export_metadata(meta, Path(name), views, temperature, input_type)
    with atomic_path(output) as tmp, warnings.catch_warnings():
        # The TorchScript exporter warns that it is the old one; it is chosen on purpose (below).
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            graph,
            (example,),
            str(tmp),
            input_names=["faces"],
            output_names=["probabilities"],
            dynamic_axes={"faces": {0: "N"}, "probabilities": {0: "N"}},
            opset_version=OPSET,
            dynamo=False,  # the TorchScript exporter: no onnxscript needed, one self-contained file
        )
        proto = onnx.load(str(tmp))
        proto.producer_name, proto.producer_version = "fertool", __version__
        proto.doc_string = f"{name}: facial expression probabilities ({', '.join(meta['classes'])})"
        for key, value in properties.items():
            proto.metadata_props.add(key=key, value=value)
        # The mean over views leaves the class axis unnamed ("ReduceMean..._dim_1"); a reader of
        # the file should see N x 7.
        (output_shape,) = (out.type.tensor_type.shape for out in proto.graph.output)
        output_shape.dim[1].Clear()
        output_shape.dim[1].dim_value = len(meta["classes"])
        onnx.checker.check_model(proto, full_check=True)
        onnx.save(proto, str(tmp))
    return properties
