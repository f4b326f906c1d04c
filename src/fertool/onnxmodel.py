"""An ONNX export (export.py) run by ONNX Runtime, behind facemodel.FaceModel's calls.

    model = OnnxFaceModel(Path("default.onnx"))
    probs = model.probabilities(faces)        # uint8 N x 48 x 48 -> float64 N x 7
    model.meta["source_model"], model.tta     # from the file's metadata properties

The views are inside the graph, so `tta` is the one it was exported with, and it runs on the CPU
in fp32 only: other choices are refused in one line instead of being silently ignored. A file
fertool did not export (no `fertool_format` property) is refused too: what its input and output
mean is unknown.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import numpy as np

from fertool.errors import BadInputError, FertoolError, WrongKindError
from fertool.facemodel import FaceModel, check_faces

FORMAT = "fertool-onnx-1"  # the `fertool_format` property: what marks a file as our export
ONNX_MISSING = "ONNX export and ONNX Runtime are an extra: pip install 'fertool[onnx]'"
CPU_DEVICES = ("auto", "cpu")
FP32_PRECISIONS = ("auto", "fp32")


def open_session(path: Path, threads: int | None = None) -> Any:
    """An ONNX Runtime session on the CPU (`threads` for its operators; None: ONNX Runtime's
    default, one per physical core), or a one-line error for a file it cannot load."""
    try:
        import onnxruntime as ort  # type: ignore[import-untyped]  # no type information
    except ImportError as err:
        raise FertoolError(
            f"{path}: running an ONNX model needs ONNX Runtime; {ONNX_MISSING}"
        ) from err
    if not path.is_file():
        raise BadInputError(f"{path}: no such file")
    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only: no warnings on stderr for a good file
    if threads is not None:
        options.intra_op_num_threads = threads
    try:
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as err:  # ORT raises its own Fail/InvalidGraph/... types, none exported
        reason = str(err).strip().splitlines()[0][:160] if str(err).strip() else type(err).__name__
        raise BadInputError(
            f"{path}: not a readable ONNX model ({reason}); export one with "
            "`fertool export MODEL -o FILE.onnx`"
        ) from err


def export_summary(path: Path) -> dict[str, Any]:
    """What `fertool info` shows of an export: its input and output, then its metadata
    properties (JSON values decoded); a file fertool did not export is refused in one line."""
    session = open_session(path, threads=1)
    properties = dict(session.get_modelmeta().custom_metadata_map)
    meta_from_properties(path, properties)  # the check: a fertool export, readable
    summary: dict[str, Any] = {"kind": "onnx export"}
    for role, (tensor,) in (("input", session.get_inputs()), ("output", session.get_outputs())):
        summary[role] = f"{tensor.name}: {tensor.type} {' x '.join(map(str, tensor.shape))}"
    for key, value in sorted(properties.items()):
        try:
            summary[key] = json.loads(value) if value[:1] in "[{" else value
        except json.JSONDecodeError:
            summary[key] = value
    if "temperature" in summary:
        summary["temperature"] = float(summary["temperature"])
    return summary


def meta_from_properties(path: Path, properties: dict[str, str]) -> dict[str, Any]:
    """The FaceModel metadata of an export, from its ONNX metadata properties."""
    if properties.get("fertool_format") != FORMAT:
        raise WrongKindError(
            f"{path}: an ONNX model, but not one fertool exported (no fertool_format "
            f"{FORMAT!r} in its metadata); export a fertool model with "
            "`fertool export MODEL -o FILE.onnx`"
        )
    try:
        classes = json.loads(properties["classes"])
        meta = {
            "kind": properties["source_kind"],
            "classes": classes,
            "input_size": json.loads(properties["input_size"]),
            "tta": properties["tta"],
            "temperature": float(properties["temperature"]),
        }
    except (KeyError, ValueError) as err:
        raise BadInputError(
            f"{path}: its fertool metadata is damaged ({type(err).__name__}: {err}); "
            "export the model again"
        ) from err
    return {**properties, **meta}


class OnnxFaceModel(FaceModel):
    """A fertool ONNX export run by ONNX Runtime on the CPU."""

    runtime = "onnxruntime"

    def __init__(self, path: Path, threads: int | None = None):
        self.session = open_session(path, threads)
        properties = dict(self.session.get_modelmeta().custom_metadata_map)
        super().__init__(meta_from_properties(path, properties), str(path))
        (graph_input,) = self.session.get_inputs()
        self.input_name = graph_input.name
        self.input_dtype = np.float32 if "float" in graph_input.type else np.uint8

    @property
    def fewest_views(self) -> str:
        return self.tta  # the graph's own: no other can run

    def resolve_tta(self, requested: str) -> str:
        resolved = super().resolve_tta(requested)
        if resolved == self.tta:
            return resolved
        raise BadInputError(
            f"{self.name}: its views ({self.tta}) are built into the ONNX graph, so --tta "
            f"{requested} cannot apply; use --tta auto, or export the model again with "
            f"`fertool export MODEL --tta {requested}`"
        )

    def place(self, device: str = "auto", precision: str = "auto") -> tuple[str, str]:
        if device not in CPU_DEVICES:
            raise BadInputError(
                f"{self.name}: an ONNX model runs on the CPU here, so --device {device} cannot "
                "apply; use --device cpu (or auto), or the .safetensors model for a GPU"
            )
        if precision not in FP32_PRECISIONS:
            raise BadInputError(
                f"{self.name}: an ONNX model runs in fp32, so --precision {precision} cannot "
                "apply; use --precision fp32 (or auto)"
            )
        return "cpu (ONNX Runtime)", "fp32"

    def run(self, faces: np.ndarray) -> np.ndarray:
        """float32 probabilities of one batch of uint8 faces."""
        feed = {self.input_name: np.ascontiguousarray(faces, dtype=self.input_dtype)}
        return np.asarray(self.session.run(None, feed)[0], dtype=np.float32)

    def log_probabilities(
        self,
        faces: np.ndarray,
        tta: str = "auto",
        batch_size: int = 100,
        on_batch: Callable[[int], None] | None = None,
    ) -> np.ndarray:
        probabilities = self._run_batches(faces, tta, batch_size, on_batch)
        return np.log(np.maximum(probabilities, 1e-12)).astype(np.float32)

    def probabilities(
        self,
        faces: np.ndarray,
        tta: str = "auto",
        batch_size: int = 256,
        on_batch: Callable[[int], None] | None = None,
    ) -> np.ndarray:
        # The graph gives probabilities already: renormalised in float64, not logged and back.
        probabilities = self._run_batches(faces, tta, batch_size, on_batch).astype(np.float64)
        return probabilities / probabilities.sum(axis=1, keepdims=True).clip(min=1e-300)

    def _run_batches(
        self,
        faces: np.ndarray,
        tta: str,
        batch_size: int,
        on_batch: Callable[[int], None] | None,
    ) -> np.ndarray:
        """float32 N x K probabilities of uint8 faces, `batch_size` at a time."""
        faces = check_faces(faces)
        self.resolve_tta(tta)
        outputs = [np.zeros((0, len(self.classes)), np.float32)]
        for start in range(0, len(faces), batch_size):
            batch = faces[start : start + batch_size]
            outputs.append(self.run(batch))
            if on_batch is not None:
                on_batch(len(batch))
        return np.concatenate(outputs)
