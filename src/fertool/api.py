"""fertool from Python: load a model once, then name the expression of faces in photos or crops.

    import fertool
    model = fertool.load_model()                         # the bundled model (cached)
    for face in fertool.predict("party.jpg", model):     # a path, a PIL image or a numpy array
        print(face.box, face.label, face.probabilities["happy"])
    probs = fertool.predict_proba(crops, model)          # uint8 N x 48 x 48 -> N x 7
    for row in fertool.predict_video("clip.mp4", model, fps=5, smooth=True):
        print(row.time, row.track, row.label)            # rows as the video is decoded

These are the calls `fertool predict` and `fertool eval` make (facemodel.FaceModel,
detect.photo_faces, detect.classify_faces, video.predict_video), so a notebook or a web service
gets the command line's numbers. torch and ONNX Runtime are imported on the first call, not by
`import fertool`.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Union

if TYPE_CHECKING:
    import numpy as np
    from PIL import Image

    from fertool.detect import DetectConfig
    from fertool.facemodel import FaceModel
    from fertool.video import VideoRow

    ImageLike = Union[str, Path, Image.Image, np.ndarray]  # what `predict` reads faces from


@dataclass(frozen=True)
class FacePrediction:
    """One face found in an image: where it is and what expression it shows."""

    box: tuple[int, int, int, int]  # x, y, width, height in the image's own pixels
    label: str  # the most probable class
    probabilities: dict[str, float]  # every class, in the model's class order; they sum to 1
    score: float = 1.0  # the face finder's confidence (1.0 for haar and detect=False)
    # right_eye, left_eye, nose, mouth_right, mouth_left: [x, y] in the image's own pixels;
    # None for haar and detect=False
    landmarks: dict[str, list[float]] | None = None

    def to_dict(self) -> dict[str, Any]:
        """The JSON shape of `fertool predict --json`'s faces."""
        return {
            "box": list(self.box),
            "label": self.label,
            "probabilities": dict(self.probabilities),
            "score": self.score,
            "landmarks": self.landmarks,
        }


def load_model(path: str | Path | None = None) -> FaceModel:
    """The model in `path`, or the bundled one for None: a `.safetensors` branch or ensemble
    (run by torch) or a `.onnx` export (run by ONNX Runtime, `pip install 'fertool[onnx]'`).

    Loaded once per file: a second call with the same unchanged file returns the same object.
    """
    if path is None:
        return _load_cached(None, 0)
    resolved = Path(path).expanduser().resolve()
    stamp = resolved.stat().st_mtime_ns if resolved.exists() else 0
    return _load_cached(str(resolved), stamp)


@functools.lru_cache(maxsize=8)
def _load_cached(path: str | None, modified_ns: int) -> FaceModel:
    # The modification time is part of the key: a file written again is loaded again.
    from fertool.bundled import load_face_model

    return load_face_model(None if path is None else Path(path))


def _model(model: FaceModel | str | Path | None) -> FaceModel:
    from fertool.facemodel import FaceModel

    return model if isinstance(model, FaceModel) else load_model(model)


def _photo(image: ImageLike, max_side: int) -> Any:
    """A detect.Photo from a path, a PIL image or uint8 pixels (H x W gray, H x W x 3 RGB)."""
    import numpy as np
    from PIL import Image

    from fertool.detect import photo_from_image, photo_from_pixels, read_photo
    from fertool.errors import BadInputError

    if isinstance(image, (str, Path)):
        return read_photo(Path(image), max_side)
    if isinstance(image, Image.Image):
        return photo_from_image(image, "<PIL image>", max_side)
    if isinstance(image, np.ndarray):
        return photo_from_pixels(image, "<array>", max_side)
    raise BadInputError(
        f"predict: expected a path, a PIL image or a numpy uint8 array, got {type(image).__name__}"
    )


def predict(
    image: ImageLike,
    model: FaceModel | str | Path | None = None,
    *,
    detect: bool = True,
    margin: float | None = None,
    tta: str = "auto",
    config: DetectConfig | None = None,
) -> list[FacePrediction]:
    """The faces in `image`, left to right, each with its box, label and class probabilities.

    `image`: a file path, a PIL image, or a numpy uint8 array (H x W gray or H x W x 3 RGB).
    `model`: a loaded model, a model path, or None for the bundled model. `detect=False`
    classifies the whole image (its centred square), as `fertool predict --no-detect`; a 48x48
    image is taken as a face crop. `margin` (0.2, or `config`'s) and `tta` are `fertool
    predict`'s --margin and --tta;
    `config` (a detect.DetectConfig) sets the rest of how faces are found: the detector, its
    threshold, the smallest face, alignment. An image without a face gives an empty list.
    """
    from dataclasses import replace

    from fertool.detect import DetectConfig, classify_faces, photo_faces
    from fertool.photos import detector_fields

    face_model = _model(model)
    config = config or DetectConfig()
    if margin is not None:
        config = replace(config, margin=margin)
    photo = _photo(image, config.max_side)
    faces, crops = photo_faces(photo, config, detect=detect)
    probabilities = classify_faces(face_model, crops, tta=face_model.resolve_tta(tta))
    classes = face_model.classes
    return [
        FacePrediction(
            box=tuple(photo.to_original(face.box)),
            label=classes[int(row.argmax())],
            probabilities={name: float(p) for name, p in zip(classes, row)},
            **detector_fields(photo, face),
        )
        for face, row in zip(faces, probabilities)
    ]


def predict_proba(
    faces: np.ndarray, model: FaceModel | str | Path | None = None, tta: str = "auto"
) -> np.ndarray:
    """Class probabilities (float64 N x 7, in `model.classes` order) of face crops: uint8
    N x 48 x 48 gray, one face each, as `fertool.detect.face_crops` makes them."""
    face_model = _model(model)
    return face_model.probabilities(faces, tta=tta)


def predict_video(
    source: str | Path | int,
    model: FaceModel | str | Path | None = None,
    *,
    every: int = 1,
    fps: float | None = None,
    start: float = 0.0,
    end: float | None = None,
    smooth: bool = False,
    tta: str = "auto",
    config: DetectConfig | None = None,
) -> Iterator[VideoRow]:
    """The faces of a video (a path, or a camera's index), one `video.VideoRow` per face per
    sampled frame, yielded as the video is decoded: frame, time (s, from the stream's
    timestamps), track (a face keeps its id across frames), box, label, probabilities, and with
    `smooth` each track's 0.5 s exponential average. A sampled frame without a face gives a row
    whose track is None. `row.to_dict()` is `fertool predict VIDEO --json`'s record.

    `every` (every Nth frame) or `fps` (frames per second of video time) choose the frames,
    `start`/`end` (seconds) the range; `tta="auto"` runs the fewest views the model can (one,
    for torch). A video that cannot be read raises fertool.errors.BadInputError, after the rows
    read before the break.
    """
    from fertool.detect import DetectConfig
    from fertool.video import VideoConfig
    from fertool.video import predict_video as video_rows

    face_model = _model(model)
    video_config = VideoConfig(
        detect=config or DetectConfig(),
        every=every,
        fps=fps,
        start=start,
        end=end,
        smooth=smooth,
        tta=face_model.video_tta(tta),
    )
    return video_rows(source, face_model, face_model.classes, video_config)
