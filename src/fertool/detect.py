"""Faces in photos: read a photo of any size, find its faces, crop them to 48x48, classify them.

    photo = read_photo(Path("party.jpg"))                 # gray, at most 1280 px, + its scale
    faces = find_faces(photo)                             # Face(box, score, landmarks), gray pixels
    crops = face_crops(photo, faces)                      # uint8 N x 48 x 48, 20 % margin
    probs = classify_faces(model, crops)                  # N x 7, softmax of image and its mirror
    photo.to_original(faces[0].box)                       # [x, y, w, h] in the photo's own pixels

Faces are found with a frontal-face Haar cascade that ships inside the OpenCV wheel
(`cv2.data.haarcascades`; OpenCV 4.x bundles them, OpenCV 5 no longer does): nothing is
downloaded. The cascade is old and misses faces turned away or tilted far, but it is small, fast
on a CPU and exact to reproduce. Boxes in the photo's own pixels follow its EXIF orientation (the
photo as a viewer shows it).
"""

from __future__ import annotations

import functools
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

    margin: float = 0.2  # added on every side of a box, as a share of its width/height
    # alt2 rather than "default": on scikit-image's sample photos searched at 512-1200 px, default
    # found 1-5 false faces in the cat, coffee, rocket, cell and suit ones; alt2 only the real face.
    cascade: str = "haarcascade_frontalface_alt2.xml"
    max_side: int = (
        1280  # photos are searched at most this large: faces from 1/50 of the longer side up
    )
    scale_factor: float = 1.1  # the cascade's step between window sizes
    min_neighbors: int = 5  # overlapping hits needed to keep a face: higher, fewer false faces
    min_size: int = 24  # smallest face searched for, in pixels of the reduced photo


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
    """Decode any image file to gray, reduced so its longer side is at most `max_side`.

    Raises `BadInputError` naming the file and the reason when it cannot be decoded.
    """
    path = Path(path)
    try:
        with Image.open(path) as image:
            stored = image.size
            if max(stored) > max_side:  # JPEG decodes big photos at 1/2..1/8 scale, much faster
                image.draft("L", (max_side, max_side))
            image.load()
            decoded = image.size
            upright = ImageOps.exif_transpose(image)
            gray = single_channel(upright)
    except DECODE_ERRORS as err:
        raise BadInputError(f"{path}: cannot read image ({failure_reason(path, err)})") from err
    turned = upright.size != decoded
    size = (stored[1], stored[0]) if turned else stored
    return _reduced(path, gray, size, max_side)


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
    return _reduced(Path(path), gray, image.size, max_side)


def _reduced(path: Path, gray: Image.Image, size: tuple[int, int], max_side: int) -> Photo:
    """The Photo of an upright gray image whose own size is `size`, reduced to `max_side`."""
    if max(gray.size) > max_side:
        ratio = max_side / max(gray.size)
        gray = gray.resize(
            (max(1, round(gray.width * ratio)), max(1, round(gray.height * ratio))),
            Image.Resampling.BOX,
        )
    pixels = np.asarray(gray)
    if gray.mode == "F":
        pixels = np.clip(np.rint(pixels), 0, 255)
    pixels = np.ascontiguousarray(pixels, dtype=np.uint8)
    return Photo(path, pixels, size, (size[0] / pixels.shape[1], size[1] / pixels.shape[0]))


@functools.lru_cache(maxsize=4)
def _cascade(name: str) -> Any:
    try:
        import cv2
    except ImportError as err:
        raise FertoolError(
            "finding faces needs OpenCV: pip install 'opencv-python-headless>=4.8,<5'"
        ) from err
    path = Path(getattr(getattr(cv2, "data", None), "haarcascades", "")) / name
    if not path.is_file():
        raise FertoolError(
            f"OpenCV {cv2.__version__} ships no Haar cascade {name}; "
            "install OpenCV 4: pip install 'opencv-python-headless>=4.8,<5'"
        )
    cascade = cv2.CascadeClassifier(str(path))
    if cascade.empty():
        raise FertoolError(
            f"{path}: OpenCV could not load its face cascade; reinstall opencv-python-headless"
        )
    return cascade


def find_faces(photo: Photo, config: DetectConfig = DetectConfig()) -> list[Face]:
    """The frontal faces in `photo.gray`, left to right."""
    import cv2

    cascade = _cascade(config.cascade)
    if min(photo.gray.shape) < config.min_size:
        return []
    found = cascade.detectMultiScale(
        cv2.equalizeHist(photo.gray),
        scaleFactor=config.scale_factor,
        minNeighbors=config.min_neighbors,
        minSize=(config.min_size, config.min_size),
    )
    boxes = sorted((tuple(int(v) for v in box) for box in found), key=lambda b: (b[0], b[1]))
    return [Face((x, y, w, h)) for x, y, w, h in boxes]


def whole_image_face(photo: Photo) -> Face:
    """The centred square that classifying the whole image uses (the whole image when square)."""
    height, width = photo.gray.shape
    side = min(width, height)
    return Face(((width - side) // 2, (height - side) // 2, side, side))


def photo_faces(
    photo: Photo, config: DetectConfig = DetectConfig(), detect: bool = True
) -> tuple[list[Face], np.ndarray]:
    """(faces in `photo.gray` pixels, their uint8 N x 48 x 48 crops): the faces the finder finds,
    or one face, the whole image's centred square, where `detect` is off or the photo is a 48x48
    face crop already (no margin then: there is nothing around it)."""
    whole = not detect or photo.size == (IMAGE_SIZE, IMAGE_SIZE)
    faces = [whole_image_face(photo)] if whole else find_faces(photo, config)
    return faces, face_crops(photo, faces, margin=0.0 if whole else config.margin)


def face_crops(
    photo: Photo, faces: Sequence[Face], margin: float = DetectConfig.margin
) -> np.ndarray:
    """uint8 N x 48 x 48: each face's box grown by `margin` on every side (clipped to the photo),
    in gray."""
    height, width = photo.gray.shape
    crops = []
    for x, y, w, h in (face.box for face in faces):
        dx, dy = round(w * margin), round(h * margin)
        x0, y0 = max(0, x - dx), max(0, y - dy)
        x1, y1 = min(width, x + w + dx), min(height, y + h + dy)
        crops.append(to_gray48(Image.fromarray(photo.gray[y0:y1, x0:x1])))
    return np.stack(crops) if crops else np.zeros((0, IMAGE_SIZE, IMAGE_SIZE), np.uint8)


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
