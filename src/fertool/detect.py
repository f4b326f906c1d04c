"""Faces in photos: read a photo of any size, find its faces, crop them to 48x48, classify them.

    photo = read_photo(Path("party.jpg"))                 # gray (+ colour), at most 1280 px
    faces = find_faces(photo)                             # Face(box, score, landmarks), gray pixels
    crops = face_crops(photo, faces)                      # uint8 N x 48 x 48, eyes levelled
    probs = classify_faces(model, crops)                  # N x 7, softmax of image and its mirror
    photo.to_original(faces[0].box)                       # [x, y, w, h] in the photo's own pixels

Faces are found by YuNet (Shiqi Yu's group, 2023; ~75 k parameters), an ONNX file shipped inside
the package with its MIT licence (detectors/), run by OpenCV's `cv2.FaceDetectorYN`: nothing is
downloaded and nothing but OpenCV is needed. It replaced OpenCV's frontal-face Haar cascade of
2001 as the default because, on scikit-image's photos and LFW faces, it found the faces the
cascade missed (a three-quarter face, tilted ones), drew no box on a non-face, and took a fifth
of the time (docs/BENCHMARKS.md, "Face finders"). The cascade stays as `detector="haar"`: it
ships inside OpenCV 4.x wheels (`cv2.data.haarcascades`), not OpenCV 5's. YuNet also gives five
landmarks, which level the eyes of each face before its crop (docs/experiments/
2026-12-07-detector.md measured that on turned FER2013 faces). Boxes in the photo's own pixels
follow its EXIF orientation (the photo as a viewer shows it).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont, ImageOps

# data.py's decoding rules, so a photo fails (or not) exactly as a face image would.
from fertool.constants import IMAGE_SIZE
from fertool.data import DECODE_ERRORS, failure_reason, single_channel, to_gray48
from fertool.errors import BadInputError, FertoolError


@dataclass(frozen=True)
class DetectConfig:
    """How faces are found and cropped; the CLI's options map onto these fields."""

    detector: str = "yunet"  # options.Detector: yunet (shipped ONNX model) or haar (OpenCV 4's)
    # YuNet's score below which a candidate is dropped. Measured on scikit-image's photos and
    # LFW faces (docs/experiments/2026-12-07-detector.md): real faces score 0.85-0.96, nothing
    # else reached 0.5.
    threshold: float = 0.6
    # Faces narrower than this, in the photo's own pixels, are skipped (and counted): a face of a
    # few pixels upscaled to 48x48 is a blur the model labels at random.
    min_face: int = 16
    align: bool = True  # rotate each face so its eyes are level before cropping (YuNet only)
    margin: float = 0.2  # added on every side of a box, as a share of its width/height
    # alt2 rather than "default": on scikit-image's sample photos searched at 512-1200 px, default
    # found 1-5 false faces in the cat, coffee, rocket, cell and suit ones; alt2 only the real face.
    cascade: str = "haarcascade_frontalface_alt2.xml"
    max_side: int = (
        1280  # photos are searched at most this large: faces from 1/50 of the longer side up
    )
    scale_factor: float = 1.1  # the cascade's step between window sizes
    min_neighbors: int = 5  # overlapping hits needed to keep a face: higher, fewer false faces
    min_size: int = 24  # Haar: smallest face searched for, in pixels of the reduced photo
    # YuNet searches a copy at most this large: it finds faces of ~10-300 px, and at 640 px it
    # still found the astronaut's face filling 90 % of the image, so one pass covers both ends.
    yunet_side: int = 640

    def __post_init__(self) -> None:
        """Python callers pass plain values: refuse the ones the command line would refuse."""
        from fertool.options import Detector

        if self.detector not in Detector.values():
            raise BadInputError(
                f"detector {self.detector!r}: choose one of {', '.join(Detector.values())}"
            )
        if not 0.0 <= self.threshold <= 1.0:
            raise BadInputError(f"detector threshold {self.threshold}: give a score from 0 to 1")
        if self.min_face < 0:
            raise BadInputError(f"min_face {self.min_face}: give a width in pixels, 0 or more")


@dataclass(frozen=True)
class Face:
    """A face found in a photo, in the pixels of the image searched (`Photo.gray`)."""

    box: tuple[int, int, int, int]  # x, y, w, h
    score: float = 1.0  # the finder's confidence; 1.0 where it gives none (Haar, whole image)
    # Five (x, y) points where the finder gives them (YuNet): right eye, left eye, nose tip,
    # right and left mouth corner. None for Haar and whole-image boxes.
    landmarks: tuple[tuple[float, float], ...] | None = None


@dataclass
class Photo:
    """A photo decoded to gray at detection size, with the way back to its own pixels."""

    path: Path
    gray: np.ndarray  # uint8 H x W, at most max_side on its longer side
    size: tuple[int, int]  # (width, height) of the photo itself, EXIF rotation applied
    scale: tuple[float, float]  # photo pixels per `gray` pixel, along x and y
    # The same pixels in colour (uint8 H x W x 3 RGB, the size of `gray`), which YuNet reads; None
    # where the source has no colour (gray, 16-bit), and the finder then reads `gray`.
    rgb: np.ndarray | None = None

    def to_original(self, box: Sequence[int]) -> list[int]:
        """A box [x, y, w, h] in `gray` pixels -> the same box in the photo's own pixels,
        clipped."""
        (sx, sy), (width, height) = self.scale, self.size
        x0, y0 = round(box[0] * sx), round(box[1] * sy)
        x1, y1 = (
            min(round((box[0] + box[2]) * sx), width),
            min(round((box[1] + box[3]) * sy), height),
        )
        return [x0, y0, x1 - x0, y1 - y0]


def read_photo(path: Path, max_side: int = DetectConfig.max_side) -> Photo:
    """Decode any image file to gray (and colour, where it has colour), reduced so its longer side
    is at most `max_side`.

    Raises `BadInputError` naming the file and the reason when it cannot be decoded.
    """
    path = Path(path)
    try:
        with Image.open(path) as image:
            stored = image.size
            if max(stored) > max_side:  # JPEG decodes big photos at 1/2..1/8 scale, much faster
                image.draft("RGB" if image.mode == "RGB" else image.mode, (max_side, max_side))
            image.load()
            decoded = image.size
            upright = ImageOps.exif_transpose(image)
            turned = upright.size != decoded
            size = (stored[1], stored[0]) if turned else stored
            return photo_from_image(upright, path, max_side, size=size, upright=True)
    except DECODE_ERRORS as err:
        raise BadInputError(f"{path}: cannot read image ({failure_reason(path, err)})") from err


def photo_from_image(
    image: Image.Image,
    path: Path | str = "<PIL image>",
    max_side: int = DetectConfig.max_side,
    *,
    size: tuple[int, int] | None = None,
    upright: bool = False,
) -> Photo:
    """A Photo from an opened PIL image, decoded as `read_photo` decodes a file: EXIF rotation
    applied (unless `upright`), transparent parts on white, 16-bit and float scaled to 0..255.
    `size` is the photo's own size where the image was decoded smaller (JPEG draft)."""
    if not upright:
        image = ImageOps.exif_transpose(image)
    return _reduced(Path(path), single_channel(image), size or image.size, max_side, _colour(image))


def photo_from_pixels(
    pixels: np.ndarray, path: Path | str = "<pixels>", max_side: int = DetectConfig.max_side
) -> Photo:
    """A Photo from decoded pixels (a video frame, an array from a notebook): uint8 H x W gray or
    H x W x 3 RGB. `path` only names it in messages and rows."""
    shape_ok = pixels.ndim == 2 or pixels.ndim == 3 and pixels.shape[2] == 3
    if pixels.dtype != np.uint8 or not shape_ok:
        raise BadInputError(
            f"{path}: expected uint8 pixels, H x W gray or H x W x 3 RGB; got "
            f"{pixels.dtype} {' x '.join(map(str, pixels.shape))}"
        )
    image = Image.fromarray(np.ascontiguousarray(pixels))
    gray = image.convert("L") if image.mode != "L" else image
    return _reduced(Path(path), gray, image.size, max_side, image if image.mode == "RGB" else None)


def _colour(image: Image.Image) -> Image.Image | None:
    """The image in RGB (transparent parts on white, as in `single_channel`), or None where it
    has no colour: gray, 16-bit and float images are searched in gray."""
    if image.mode in ("RGBA", "RGBa", "PA") or (
        image.mode in ("RGB", "P") and "transparency" in image.info
    ):
        white = Image.new("RGBA", image.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, image.convert("RGBA")).convert("RGB")
    if image.mode in ("RGB", "P", "YCbCr", "CMYK", "RGBX", "LAB", "HSV"):
        return image.convert("RGB")
    return None


def _reduced(
    path: Path,
    gray: Image.Image,
    size: tuple[int, int],
    max_side: int,
    colour: Image.Image | None = None,
) -> Photo:
    """The Photo of an upright gray image (and its colour twin) whose own size is `size`, reduced
    to `max_side`."""
    if max(gray.size) > max_side:
        ratio = max_side / max(gray.size)
        reduced = (max(1, round(gray.width * ratio)), max(1, round(gray.height * ratio)))
        gray = gray.resize(reduced, Image.Resampling.BOX)
        colour = colour.resize(reduced, Image.Resampling.BOX) if colour is not None else None
    pixels = np.asarray(gray)
    if gray.mode == "F":
        pixels = np.clip(np.rint(pixels), 0, 255)
    pixels = np.ascontiguousarray(pixels, dtype=np.uint8)
    rgb = np.ascontiguousarray(np.asarray(colour), dtype=np.uint8) if colour is not None else None
    scale = (size[0] / pixels.shape[1], size[1] / pixels.shape[0])
    return Photo(path, pixels, size, scale, rgb)


# Shipped in the package with its MIT licence beside it (detectors/LICENSE): nothing downloads.
YUNET_MODEL = Path(__file__).with_name("detectors") / "face_detection_yunet_2023mar.onnx"
YUNET_SHA256 = "8f2383e4dd3cfbb4553ea8718107fc0423210dc964f9f4280604804ed2552fa4"
_YUNET_NMS = 0.3  # overlap above which YuNet keeps only the better of two boxes (its default)


def _cv2() -> Any:
    try:
        import cv2
    except ImportError as err:
        raise FertoolError(
            "finding faces needs OpenCV: pip install 'opencv-python-headless>=4.8,<5'"
        ) from err
    return cv2


@functools.lru_cache(maxsize=4)
def _cascade(name: str) -> Any:
    cv2 = _cv2()
    path = Path(getattr(getattr(cv2, "data", None), "haarcascades", "")) / name
    if not path.is_file():
        raise FertoolError(
            f"OpenCV {cv2.__version__} ships no Haar cascade {name}: use --detector yunet, "
            "or install OpenCV 4 for haar: pip install 'opencv-python-headless>=4.8,<5'"
        )
    cascade = cv2.CascadeClassifier(str(path))
    if cascade.empty():
        raise FertoolError(
            f"{path}: OpenCV could not load its face cascade; reinstall opencv-python-headless"
        )
    return cascade


# One detector per threshold, made once: loading the ONNX file costs more than a search. It is
# not thread-safe (each search sets its input size): search from one thread at a time.
@functools.lru_cache(maxsize=4)
def _yunet(threshold: float) -> Any:
    cv2 = _cv2()
    if not hasattr(cv2, "FaceDetectorYN"):
        raise FertoolError(
            f"OpenCV {cv2.__version__} has no FaceDetectorYN for YuNet: "
            "pip install 'opencv-python-headless>=4.8,<5', or use --detector haar"
        )
    if not YUNET_MODEL.is_file():
        raise FertoolError(
            f"{YUNET_MODEL}: the shipped face detector is missing; reinstall fertool"
        )
    return cv2.FaceDetectorYN.create(str(YUNET_MODEL), "", (320, 320), threshold, _YUNET_NMS, 5000)


def find_faces(
    photo: Photo, config: DetectConfig = DetectConfig(), *, skipped: list[Face] | None = None
) -> list[Face]:
    """The faces in `photo.gray` pixels, left to right, at least `config.min_face` wide in the
    photo's own pixels; the narrower ones are appended to `skipped` when it is given."""
    from fertool.options import Detector

    detector = Detector(config.detector)  # checked by DetectConfig
    found = _find_yunet(photo, config) if detector is Detector.YUNET else _find_haar(photo, config)
    kept = []
    for face in sorted(found, key=lambda f: (f.box[0], f.box[1])):
        wide_enough = face.box[2] * photo.scale[0] >= config.min_face
        if wide_enough:
            kept.append(face)
        elif skipped is not None:
            skipped.append(face)
    return kept


def _find_haar(photo: Photo, config: DetectConfig) -> list[Face]:
    cv2 = _cv2()
    cascade = _cascade(config.cascade)
    if min(photo.gray.shape) < config.min_size:
        return []
    found = cascade.detectMultiScale(
        cv2.equalizeHist(photo.gray),
        scaleFactor=config.scale_factor,
        minNeighbors=config.min_neighbors,
        minSize=(config.min_size, config.min_size),
    )
    return [Face(tuple(int(v) for v in box)) for box in found]  # type: ignore[arg-type]


def _find_yunet(photo: Photo, config: DetectConfig) -> list[Face]:
    """YuNet on a copy at most `config.yunet_side` large, in colour where the photo has it (YuNet
    was trained on colour: BGR, 3 channels); boxes and landmarks scaled back to `gray` pixels."""
    cv2 = _cv2()
    detector = _yunet(config.threshold)
    height, width = photo.gray.shape
    if min(height, width) < 8:  # nothing a face could be found in, and YuNet's strides need 8
        return []
    image = photo.rgb if photo.rgb is not None else np.repeat(photo.gray[..., None], 3, axis=2)
    ratio = min(1.0, config.yunet_side / max(height, width))
    searched = (max(8, round(width * ratio)), max(8, round(height * ratio)))
    if searched != (width, height):
        image = cv2.resize(image, searched, interpolation=cv2.INTER_AREA)
    detector.setInputSize(searched)
    _, found = detector.detect(np.ascontiguousarray(image[..., ::-1]))  # RGB -> BGR
    sx, sy = width / searched[0], height / searched[1]
    faces = []
    for row in [] if found is None else found:
        x0, y0 = max(0, round(row[0] * sx)), max(0, round(row[1] * sy))
        x1 = min(width, round((row[0] + row[2]) * sx))
        y1 = min(height, round((row[1] + row[3]) * sy))
        if x1 <= x0 or y1 <= y0:
            continue
        points = tuple((float(px * sx), float(py * sy)) for px, py in row[4:14].reshape(5, 2))
        faces.append(Face((x0, y0, x1 - x0, y1 - y0), float(row[14]), points))
    return faces


def whole_image_face(photo: Photo) -> Face:
    """The centred square that classifying the whole image uses (the whole image when square)."""
    height, width = photo.gray.shape
    side = min(width, height)
    return Face(((width - side) // 2, (height - side) // 2, side, side))


def photo_faces(
    photo: Photo,
    config: DetectConfig = DetectConfig(),
    detect: bool = True,
    *,
    skipped: list[Face] | None = None,
) -> tuple[list[Face], np.ndarray]:
    """(faces in `photo.gray` pixels, their uint8 N x 48 x 48 crops): the faces the finder finds,
    or one face, the whole image's centred square, where `detect` is off or the photo is a 48x48
    face crop already (no margin then: there is nothing around it). Faces narrower than
    `config.min_face` go to `skipped` when it is given."""
    whole = not detect or photo.size == (IMAGE_SIZE, IMAGE_SIZE)
    faces = [whole_image_face(photo)] if whole else find_faces(photo, config, skipped=skipped)
    margin = 0.0 if whole else config.margin
    return faces, face_crops(photo, faces, margin=margin, align=config.align)


def face_crops(
    photo: Photo,
    faces: Sequence[Face],
    margin: float = DetectConfig.margin,
    *,
    align: bool = DetectConfig.align,
) -> np.ndarray:
    """uint8 N x 48 x 48: each face's box grown by `margin` on every side, in gray.

    `align`, for faces with landmarks: the photo is turned about the box's centre so that the
    eyes are level (FER2013's faces are upright), and the grown box is cut from it, its parts
    outside the photo filled with the nearest edge. Otherwise the grown box is clipped to the
    photo.
    """
    height, width = photo.gray.shape
    crops = []
    for face in faces:
        if align and face.landmarks is not None:
            crops.append(to_gray48(Image.fromarray(_level_eyes(photo.gray, face, margin))))
            continue
        x, y, w, h = face.box
        dx, dy = round(w * margin), round(h * margin)
        x0, y0 = max(0, x - dx), max(0, y - dy)
        x1, y1 = min(width, x + w + dx), min(height, y + h + dy)
        crops.append(to_gray48(Image.fromarray(photo.gray[y0:y1, x0:x1])))
    return np.stack(crops) if crops else np.zeros((0, IMAGE_SIZE, IMAGE_SIZE), np.uint8)


def eye_angle(face: Face) -> float:
    """Degrees the face is turned clockwise (as seen) from upright: the slope of the line from
    its right eye (left in the image) to its left eye; 0 without landmarks."""
    if face.landmarks is None:
        return 0.0
    (rx, ry), (lx, ly) = face.landmarks[:2]
    return math.degrees(math.atan2(ly - ry, lx - rx))


def _level_eyes(gray: np.ndarray, face: Face, margin: float) -> np.ndarray:
    """The box grown by `margin`, cut from `gray` turned about the box's centre by the face's eye
    angle: one affine warp of just the crop's pixels, not of the whole photo."""
    cv2 = _cv2()
    x, y, w, h = face.box
    size = (max(1, round(w * (1 + 2 * margin))), max(1, round(h * (1 + 2 * margin))))
    centre = (x + w / 2, y + h / 2)
    # OpenCV's positive angle turns the image counter-clockwise as seen: it undoes a clockwise tilt.
    matrix = cv2.getRotationMatrix2D(centre, eye_angle(face), 1.0)
    matrix[:, 2] += (size[0] / 2 - centre[0], size[1] / 2 - centre[1])
    return cv2.warpAffine(
        gray, matrix, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
    )


def classify_faces(
    model: Any,
    crops: np.ndarray,
    batch_size: int = 256,
    on_batch: Callable[[int], None] | None = None,
    tta: str = "flip",
) -> np.ndarray:
    """Class probabilities (float64 N x K; 0 x 0 for no crops) of uint8 N x 48 x 48 crops, in
    batches.

    `model` is a facemodel.FaceModel (torch or ONNX Runtime; a torch module is wrapped in one).
    Test-time augmentation (evaluate.predict_logits): at least the mean of the softmax of each
    crop and of its mirror image, the flip every model is trained with; `tta="crops"` adds
    zoomed-in centre crops.
    """
    from fertool.facemodel import as_face_model

    if len(crops) == 0:
        return np.zeros((0, 0))
    return as_face_model(model).probabilities(crops, tta, batch_size, on_batch)


def open_for_drawing(path: Path) -> Image.Image:
    """The photo in RGB at full size, upright, transparent parts on white: a canvas for boxes."""
    with Image.open(path) as image:
        image.load()
        upright = ImageOps.exif_transpose(image)
    if (
        upright.mode in ("RGB", "L", "1", "P", "CMYK", "YCbCr")
        and "transparency" not in upright.info
    ):
        return upright.convert("RGB")
    if upright.mode in ("RGBA", "LA", "PA", "P", "L", "RGB"):  # alpha, or a transparent colour
        white = Image.new("RGBA", upright.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, upright.convert("RGBA")).convert("RGB")
    return single_channel(upright).convert("L").convert("RGB")  # 16-bit, float: scaled to 0..255


def annotate(
    image: Image.Image, boxes: Sequence[Sequence[int]], captions: Sequence[str]
) -> Image.Image:
    """A copy of `image` with each box outlined and its caption (e.g. "happy 91%") written on it."""
    canvas = image.convert("RGB")
    draw = ImageDraw.Draw(canvas)
    line = max(1, round(min(canvas.size) / 200))
    font = _font(max(8, round(min(canvas.size) / 30)))
    for (x, y, w, h), caption in zip(boxes, captions):
        draw.rectangle((x, y, x + w - 1, y + h - 1), outline=(255, 215, 0), width=line)
        left, top, right, bottom = draw.textbbox((0, 0), caption, font=font)
        tw, th = right - left + 2 * line, bottom - top + 2 * line
        ty = y - th if y - th >= 0 else min(y + h, canvas.height - th)  # above the box, else below
        draw.rectangle((x, ty, x + tw, ty + th), fill=(255, 215, 0))
        draw.text((x + line - left, ty + line - top), caption, fill=(0, 0, 0), font=font)
    return canvas


def _font(size: int) -> Any:
    try:
        return ImageFont.load_default(size=size)  # Pillow >= 10.1 with FreeType: a scalable font
    except (TypeError, ValueError, OSError, ImportError):
        return ImageFont.load_default()
