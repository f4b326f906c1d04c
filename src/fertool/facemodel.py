"""A model that names the expression of 48x48 faces, whichever runtime runs it.

    model = bundled.load_face_model(None)              # the bundled model, run by torch
    model = bundled.load_face_model(Path("x.onnx"))    # an export, run by ONNX Runtime
    probs = model.probabilities(faces)                 # uint8 N x 48 x 48 -> float64 N x 7
    model.classes, model.tta, model.name, model.meta   # what it predicts, its own views, ...

Every place that runs a model on faces (`fertool eval`, `fertool predict`, the Python API) holds
one of these, so a `.safetensors` file and its ONNX export go through the same calls and give
the same numbers. The torch side is here; the ONNX side is onnxmodel.py.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from fertool.errors import BadInputError


class FaceModel:
    """What eval, predict and the Python API need of a model: its classes, its own test-time
    views, and the class probabilities of uint8 faces. Subclasses run it."""

    runtime = "none"  # "torch" or "onnxruntime": which runtime runs it

    def __init__(self, meta: dict[str, Any], name: str):
        self.meta = meta
        self.name = name

    @property
    def classes(self) -> list[str]:
        return list(self.meta["classes"])

    @property
    def tta(self) -> str:
        """The views the model's file asks for (`--tta auto`)."""
        return str(self.meta.get("tta", "none"))

    def resolve_tta(self, requested: str) -> str:
        """`auto` -> the model's own views; another name is checked and returned."""
        from fertool.schemas import model_tta

        return model_tta(self.meta, requested)

    def video_tta(self, requested: str) -> str:
        """The views for video frames: `auto` is the fewest this model can run (one, for torch;
        an export's own, which are in its graph), since a video shows the model each face many
        times and every view is a forward pass; another name is checked and returned."""
        return self.resolve_tta(self.fewest_views if requested == "auto" else requested)

    @property
    def fewest_views(self) -> str:
        return "none"

    def place(self, device: str = "auto", precision: str = "auto") -> tuple[str, str]:
        """Run on `device` at `precision` from now on; returns their resolved names."""
        raise NotImplementedError

    def log_probabilities(
        self,
        faces: np.ndarray,
        tta: str = "auto",
        batch_size: int = 100,
        on_batch: Callable[[int], None] | None = None,
    ) -> np.ndarray:
        """float32 N x K scores whose softmax is the class probabilities (what `fertool eval`
        keeps as logits): the torch model's logits (or log mean probabilities over views), the
        log of an export's probabilities."""
        raise NotImplementedError

    def probabilities(
        self,
        faces: np.ndarray,
        tta: str = "auto",
        batch_size: int = 256,
        on_batch: Callable[[int], None] | None = None,
    ) -> np.ndarray:
        """Class probabilities, float64 N x K, rows summing to 1 within 1e-15, of uint8
        N x 48 x 48 faces: the mean over the views of `tta` of each view's softmax."""
        faces = check_faces(faces)
        if len(faces) == 0:
            return np.zeros((0, len(self.classes)))
        from fertool.stats import softmax

        return softmax(self.log_probabilities(faces, tta, batch_size, on_batch).astype(np.float64))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, tta={self.tta!r})"


class TorchFaceModel(FaceModel):
    """A branch or ensemble (models.Classifier) run by torch, on the CPU unless `place`d."""

    runtime = "torch"

    def __init__(self, module: Any, meta: dict[str, Any], name: str):
        import torch

        from fertool.runtime import model_placement

        super().__init__(meta, name)
        # Channels-last as evaluate.to_input feeds it: the same convolution kernels, so the same
        # numbers, whether `place` was called or not.
        self.module = module.eval().to(memory_format=torch.channels_last)
        self.device, _ = model_placement(module)
        self.dtype: Any = None  # autocast dtype; None: the weights' own

    def place(self, device: str = "auto", precision: str = "auto") -> tuple[str, str]:
        import torch

        from fertool.runtime import precision_name, resolve_device, resolve_precision

        self.device = resolve_device(device)
        self.dtype = resolve_precision(precision, self.device)
        self.module.to(self.device).to(memory_format=torch.channels_last)
        return str(self.device), precision_name(self.dtype)

    def log_probabilities(
        self,
        faces: np.ndarray,
        tta: str = "auto",
        batch_size: int = 100,
        on_batch: Callable[[int], None] | None = None,
    ) -> np.ndarray:
        import torch

        from fertool.evaluate import predict_logits

        faces = check_faces(faces)
        logits = predict_logits(
            self.module,
            torch.from_numpy(np.ascontiguousarray(faces)),
            self.device,
            self.dtype,
            batch_size,
            on_batch=on_batch,
            tta=self.resolve_tta(tta),
        )
        return logits.numpy()


def check_faces(faces: Any) -> np.ndarray:
    """uint8 N x 48 x 48 (a torch tensor is taken as its numpy array), or a one-line error."""
    from fertool.constants import IMAGE_SIZE

    if hasattr(faces, "numpy") and not isinstance(faces, np.ndarray):
        faces = faces.detach().cpu().numpy() if hasattr(faces, "detach") else faces.numpy()
    faces = np.asarray(faces)
    if faces.dtype != np.uint8 or faces.ndim != 3 or faces.shape[1:] != (IMAGE_SIZE, IMAGE_SIZE):
        raise BadInputError(
            f"faces: expected uint8 N x {IMAGE_SIZE} x {IMAGE_SIZE} gray crops, got {faces.dtype} "
            f"{' x '.join(map(str, faces.shape))}; crop and resize them first "
            "(fertool.detect.face_crops does)"
        )
    return faces


def as_face_model(model: Any, meta: dict[str, Any] | None = None, name: str = "<model>") -> Any:
    """`model` if it is a FaceModel already; a torch module wrapped in a TorchFaceModel."""
    if isinstance(model, FaceModel):
        return model
    return TorchFaceModel(model, meta if meta is not None else {"classes": []}, name)
