"""Data sources: the FER2013 CSV, folders of face images, and built-in synthetic faces.

Every source returns a `RawDataset`: uint8 N x 48 x 48 images, int64 labels in FER2013's class
order (`CLASSES`) and a split code per image (0 train, 1 val, 2 test; `prepare --holdout` later
moves some training faces to 3, holdout).

    from pathlib import Path
    from fertool.data import load_csv, load_folders, synthetic_faces

    ds = load_csv(Path("fer2013.csv"))                   # Kaggle release; Usage column -> split
    ds = load_folders(Path("fer2013/"))                  # ROOT/<split>/<class>/*.jpg
    ds = load_folders(Path("faces/"), split="test")      # ROOT/<class>/*.png, all in one split
    ds = load_folders(Path("faces/"), split="test", skip_bad=True)  # skip unreadable files
    ds = synthetic_faces(3000, seed=0)                   # drawn faces; ds.masks marks the features
    print(ds.source, ds.images.shape, np.bincount(ds.labels), np.bincount(ds.split))

A problem the user can fix (unreadable image, malformed CSV line, unknown class folder) raises
`BadInputError` with a one-line message that names the file (and CSV line) and what to do.
"""

from __future__ import annotations

import multiprocessing
import os
import struct
import sys
import warnings
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from fertool.constants import CLASSES, IMAGE_SIZE
from fertool.errors import BadInputError
from fertool.synthetic import draw_faces

N_PIXELS = IMAGE_SIZE * IMAGE_SIZE

IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".pgm", ".ppm"}
)
# Folder names seen in the FER2013 image releases and their copies; compared after _normalise().
SPLIT_NAMES = {
    **dict.fromkeys(("train", "training"), 0),
    **dict.fromkeys(("val", "valid", "validation", "publictest"), 1),
    **dict.fromkeys(("test", "testing", "privatetest"), 2),
}
CLASS_NAMES = {
    **dict.fromkeys(("angry", "anger", "0"), 0),
    **dict.fromkeys(("disgust", "disgusted", "1"), 1),
    **dict.fromkeys(("fear", "fearful", "scared", "afraid", "2"), 2),
    **dict.fromkeys(("happy", "happiness", "joy", "3"), 3),
    **dict.fromkeys(("sad", "sadness", "4"), 4),
    **dict.fromkeys(("surprise", "surprised", "5"), 5),
    **dict.fromkeys(("neutral", "6"), 6),
}
# The FER2013 image releases keep the CSV's Usage in the file name; it wins over the folder.
USAGE_PREFIXES = {"training_": 0, "publictest_": 1, "privatetest_": 2}
USAGE_NAMES = {"training": 0, "publictest": 1, "privatetest": 2}
LAYOUT_HELP = (
    "lay images out as ROOT/<split>/<class>/*.jpg (split: train, val or test) "
    "or as ROOT/<class>/*.jpg and pass --split train|val|test"
)
_CHUNK = 512  # images per pool task: big enough to amortise pickling, small enough to balance


@dataclass
class RawDataset:
    """Images, labels and split codes from one source, before normalisation or augmentation."""

    images: np.ndarray  # uint8, N x 48 x 48
    labels: np.ndarray  # int64, N, indices into CLASSES
    split: np.ndarray  # uint8, N: codes into SPLITS
    source: str  # e.g. "csv:fer2013.csv", "folders:/data/fer", "synthetic:n=2000,seed=0"
    skipped: list[str] = field(default_factory=list)  # "path: reason", with skip_bad
    masks: np.ndarray | None = None  # synthetic only: 1 where eyes, brows, mouth are drawn

    def __post_init__(self) -> None:
        n = len(self.images)
        if (
            self.images.shape[1:] != (IMAGE_SIZE, IMAGE_SIZE)
            or len(self.labels) != n
            or len(self.split) != n
        ):
            raise ValueError(
                f"inconsistent shapes {self.images.shape}, {self.labels.shape}, {self.split.shape}"
            )


# --- single images -----------------------------------------------------------------------------


def to_gray48(image: Image.Image) -> np.ndarray:
    """Any PIL image (any mode, any size, animated or not) -> uint8 48 x 48 grayscale.

    Non-square images are centre-cropped to a square, then resized: faces sit near the centre of a
    crop, and padding instead would shrink the face and add bands the model never saw in training.
    Lanczos antialiases when shrinking. 16-bit and float images are scaled to 0..255; transparent
    pixels are composited on white; animated images use their first frame.
    """
    if getattr(image, "is_animated", False):
        image.seek(0)
    if image.mode == "L" and image.size == (IMAGE_SIZE, IMAGE_SIZE):
        return np.array(image)  # fast path for FER2013's own files: a quarter of the decode time
    gray = single_channel(image)
    width, height = gray.size
    side = min(width, height)
    left, top = (width - side) // 2, (height - side) // 2
    gray = gray.crop((left, top, left + side, top + side))
    if side != IMAGE_SIZE:
        gray = gray.resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.LANCZOS)
    pixels = np.asarray(gray)
    if gray.mode == "F":  # Lanczos overshoots a little at edges: round and clip
        return np.clip(np.rint(pixels), 0, 255).astype(np.uint8)
    return np.array(pixels, dtype=np.uint8)


def single_channel(image: Image.Image) -> Image.Image:
    """Mode "L" for 8-bit sources, mode "F" (0..255) for 16-bit, 32-bit and float ones."""
    has_alpha = image.mode in ("RGBA", "LA", "PA", "La", "RGBa") or "transparency" in image.info
    if has_alpha:
        image = image.convert("LA") if image.mode == "La" else image  # PIL has no La -> RGBA
        white = Image.new("RGBA", image.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, image.convert("RGBA")).convert("L")
    if image.mode in ("I", "F") or image.mode.startswith("I;16"):
        return Image.fromarray(_scale_to_255(np.asarray(image, dtype=np.float32), image.mode))
    if image.mode in ("1", "L", "P", "RGB", "YCbCr"):
        return image.convert("L")
    return image.convert("RGB").convert("L")  # CMYK, LAB, HSV: PIL converts these only to RGB


def _scale_to_255(values: np.ndarray, mode: str) -> np.ndarray:
    """Map 16/32-bit or float pixel values onto 0..255 (float32)."""
    values = np.nan_to_num(values, nan=0.0, posinf=0.0, neginf=0.0)
    low, high = float(values.min()), float(values.max())
    if mode.startswith("I;16") or (mode == "I" and low >= 0 and 255 < high <= 65535):
        return values / 257.0  # the full 16-bit range, as 16-bit PNG/TIFF writers use it
    if mode == "F" and low >= 0 and high <= 1.0:
        return values * 255.0  # floats in 0..1
    if low >= 0 and high <= 255:
        return values  # 8-bit data stored as I or F
    # Anything else (negative values, 32-bit range): stretch the image's own range.
    return (values - low) * (255.0 / max(high - low, 1e-12))


def read_image(path: Path) -> np.ndarray:
    """Decode one image file to uint8 48 x 48; any decode failure raises `BadInputError`."""
    pixels, reason = _try_read(Path(path))
    if pixels is None:
        raise BadInputError(
            f"{path}: cannot read image ({reason}); pass a PNG, JPEG or other image Pillow reads"
        )
    return pixels


# Everything Pillow's decoders are known to raise on corrupt or hostile files.
DECODE_ERRORS = (
    OSError,
    ValueError,
    SyntaxError,
    EOFError,
    IndexError,
    struct.error,
    Image.DecompressionBombError,
)


def _try_read(path: Path) -> tuple[np.ndarray | None, str | None]:
    """(pixels, None) or (None, why it failed): never raises for a bad file."""
    try:
        with Image.open(path) as opened:
            if max(opened.size) > 2 * IMAGE_SIZE:  # JPEG: decode big photos at 1/2..1/8 scale
                opened.draft("L", (2 * IMAGE_SIZE, 2 * IMAGE_SIZE))
            opened.load()
            image: Image.Image = opened
            if opened.format != "JPEG" or "exif" in opened.info:  # phones store rotation in EXIF
                image = ImageOps.exif_transpose(opened)
            return to_gray48(image), None
    except DECODE_ERRORS as err:
        return None, failure_reason(path, err)


def failure_reason(path: Path, err: Exception) -> str:
    """Why a file did not decode, in a few words (Pillow's messages repeat the path)."""
    if not path.is_file():
        return "no such file" if not path.exists() else "not a file"
    if path.stat().st_size == 0:
        return "empty file"
    if isinstance(err, UnidentifiedImageError):
        return "not an image, or a format Pillow cannot decode"
    return " ".join(str(err).replace(str(path), "").split()).strip(" :'\"") or type(err).__name__


# --- the FER2013 CSV ----------------------------------------------------------------------------


def load_csv(path: Path) -> RawDataset:
    """Read Kaggle's fer2013.csv (header `emotion,pixels,Usage`, columns in any order).

    `pixels` holds 2304 space-separated integers 0..255 (row-major 48 x 48); `Usage` maps
    Training/PublicTest/PrivateTest to train/val/test. Without a Usage column every row is train.
    The real file (35,887 rows, 290 MB) loads in a few seconds: np.fromstring parses each row in C.
    """
    path = Path(path)
    lines = _read_lines(path)
    columns = _parse_header(path, lines[0])
    images = np.empty((len(lines) - 1, N_PIXELS), np.uint8)
    labels: list[int] = []
    splits: list[int] = []
    with warnings.catch_warnings():
        warnings.simplefilter(
            "error", DeprecationWarning
        )  # numpy < 2 warns on junk instead of raising
        for number, line in enumerate(lines[1:], start=2):
            if not line.strip():
                continue  # blank lines, usually the one after the final newline
            fields = _split_fields(path, number, line, columns["names"])
            images[len(labels)] = _parse_pixels(path, number, fields[columns["pixels"]])
            labels.append(_parse_label(path, number, fields[columns["emotion"]]))
            splits.append(
                _parse_usage(path, number, fields[columns["usage"]]) if "usage" in columns else 0
            )
    if not labels:
        raise BadInputError(
            f"{path}: no data rows after the header; add rows like '3,<2304 pixels>,Training'"
        )
    source = f"csv:{path}" + ("" if "usage" in columns else " (no Usage column: all rows train)")
    faces = images[: len(labels)].reshape(-1, IMAGE_SIZE, IMAGE_SIZE)
    return RawDataset(faces, np.array(labels, np.int64), np.array(splits, np.uint8), source)


def _line_error(path: Path, number: int, problem: str) -> BadInputError:
    return BadInputError(f"{path}: line {number}: {problem}; fix or remove that line")


def _read_lines(path: Path) -> list[str]:
    """The file's lines as text; missing, empty, binary and non-UTF-8 files raise BadInputError."""
    try:
        data = path.read_bytes()
    except OSError as err:
        raise BadInputError(
            f"{path}: cannot read ({err.strerror or err}); check the path"
        ) from None
    if not data.strip():
        raise BadInputError(
            f"{path}: empty file; expected a FER2013 CSV with header emotion,pixels,Usage"
        )
    nul = data.find(b"\0")
    if nul >= 0:  # NUL bytes never occur in text: this is an image, archive, npz...
        raise BadInputError(
            f"{path}: line {_line_at(data, nul)}: binary data, not a CSV text file; "
            "pass the fer2013.csv file (unzip it first if it is an archive)"
        )
    try:
        text = data.decode("utf-8-sig")  # -sig: tolerate the BOM that spreadsheet programs add
    except UnicodeDecodeError as err:
        raise BadInputError(
            f"{path}: line {_line_at(data, err.start)}: not UTF-8 text; re-save the CSV as UTF-8"
        ) from None
    return [
        line.rstrip("\r") for line in text.split("\n")
    ]  # not splitlines(): keep line numbers exact


def _line_at(data: bytes, offset: int) -> int:
    return data.count(b"\n", 0, offset) + 1


def _parse_header(path: Path, line: str) -> dict:
    """Column positions: {"names": [...], "emotion": i, "pixels": j, maybe "usage": k}."""
    names = [name.strip().strip('"').strip() for name in line.split(",")]
    columns: dict = {"names": names}
    for i, name in enumerate(names):
        if name.lower() in ("emotion", "pixels", "usage"):
            columns[name.lower()] = i
    if "emotion" not in columns or "pixels" not in columns:
        found = (line[:40] + "...") if len(line) > 40 else line
        what = "no header (the first line is data)" if names[0].isdigit() else f"header '{found}'"
        raise BadInputError(
            f"{path}: line 1: {what}; the first line must name the columns "
            "emotion,pixels,Usage (Usage optional)"
        )
    return columns


def _parse_label(path: Path, number: int, value: str) -> int:
    if value.isascii() and value.isdigit() and int(value) < len(CLASSES):
        return int(value)
    choices = ", ".join(f"{i} {name}" for i, name in enumerate(CLASSES))
    raise _line_error(
        path, number, f"emotion must be an integer 0..6 ({choices}), found '{value[:20]}'"
    )


def _parse_usage(path: Path, number: int, value: str) -> int:
    code = USAGE_NAMES.get(value.lower())
    if code is None:
        raise _line_error(
            path,
            number,
            f"unknown Usage '{value[:20]}'; expected Training, PublicTest or PrivateTest",
        )
    return code


def _split_fields(path: Path, number: int, line: str, names: list[str]) -> list[str]:
    fields = [value.strip().strip('"').strip() for value in line.split(",")]
    if len(fields) != len(names):
        raise _line_error(
            path,
            number,
            f"expected {len(names)} comma-separated fields ({','.join(names)}), "
            f"found {len(fields)}",
        )
    return fields


def _parse_pixels(path: Path, number: int, text: str) -> np.ndarray:
    """One row's pixel string -> 2304 ints (np.fromstring: ~80 us a row, in C)."""
    try:
        values = np.fromstring(text, dtype=np.int64, sep=" ")
    except (ValueError, DeprecationWarning):  # junk such as "12x" or "1.5"
        values = None
    if values is None or values.size != N_PIXELS or values.min() < 0 or values.max() > 255:
        raise _line_error(path, number, _pixel_problem(text))
    return values


def _pixel_problem(text: str) -> str:
    """Say what is wrong with one row's pixel string (the slow path, run only on a bad row)."""
    tokens = text.split()
    for k, token in enumerate(tokens, start=1):
        if not (token.isascii() and token.isdigit()):
            return f"pixel {k} is '{token[:20]}', not an integer 0..255"
    if len(tokens) != N_PIXELS:
        return f"expected {N_PIXELS} pixel values, found {len(tokens)}"
    for k, token in enumerate(tokens, start=1):
        if int(token) > 255:
            return f"pixel {k} is {token}, outside 0..255"
    return "cannot parse the pixel values"


# --- image folders ------------------------------------------------------------------------------


def load_folders(
    root: Path, split: str | None = None, skip_bad: bool = False, workers: int | None = None
) -> RawDataset:
    """Read ROOT/<split>/<class>/* or ROOT/<class>/* (then `split` says which split they are).

    Folder names are matched case-insensitively, with synonyms (see SPLIT_NAMES, CLASS_NAMES).
    A Training_/PublicTest_/PrivateTest_ file-name prefix sets the split whatever the folder.
    `split` only applies to files that neither a split folder nor a prefix places. Unreadable
    images raise BadInputError, or with `skip_bad` are left out and listed in `skipped`.
    `workers` processes decode in parallel (default: one per CPU); the result does not depend on it.
    """
    root = Path(root)
    if not root.is_dir():
        raise BadInputError(f"{root}: not a folder; pass a folder of class folders ({LAYOUT_HELP})")
    default_split = None if split is None else _split_argument(split)
    files = _list_images(root)
    if not files:
        raise BadInputError(
            f"{root}: no image files ({', '.join(sorted(IMAGE_EXTENSIONS))}); {LAYOUT_HELP}"
        )
    paths = [path for path, _, _ in files]
    splits = [_split_of(path, folder_split, default_split) for path, _, folder_split in files]
    pixels, reasons = _read_images(paths, workers)
    skipped = [f"{path}: {reason}" for path, reason in zip(paths, reasons) if reason is not None]
    if skipped and not skip_bad:
        bad = next(i for i, reason in enumerate(reasons) if reason is not None)
        raise BadInputError(
            f"{paths[bad]}: cannot read image ({reasons[bad]}); fix or remove it, "
            "or pass --skip-bad"
        )
    keep = np.array([reason is None for reason in reasons], dtype=bool)
    if not keep.any():
        raise BadInputError(
            f"{root}: none of the {len(paths)} images could be read; first: {skipped[0]}"
        )
    labels = np.array([label for _, label, _ in files], np.int64)[keep]
    return RawDataset(
        pixels[keep], labels, np.array(splits, np.uint8)[keep], f"folders:{root}", skipped
    )


def _normalise(name: str) -> str:
    return (
        name.lower().replace("_", "").replace("-", "").replace(" ", "")
    )  # "Public_Test" == "publictest"


def _split_argument(split: str) -> int:
    code = SPLIT_NAMES.get(_normalise(split))
    if code is None:
        raise BadInputError(f"unknown split '{split}'; pass --split train, val or test")
    return code


def _split_of(path: Path, folder_split: int | None, default_split: int | None) -> int:
    name = path.name.lower()
    for prefix, code in USAGE_PREFIXES.items():
        if name.startswith(prefix):
            return code
    if folder_split is not None:
        return folder_split
    if default_split is None:
        raise BadInputError(
            f"{path}: no split folder or Usage prefix says which split this image is in; "
            f"pass --split train|val|test, or {LAYOUT_HELP}"
        )
    return default_split


def _visible(entries: list[Path]) -> list[Path]:
    return sorted(entry for entry in entries if not entry.name.startswith("."))


def _is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith(".")


def _list_images(root: Path) -> list[tuple[Path, int, int | None]]:
    """(file, label, split code from its folder or None) for every image, sorted by path."""
    children = _visible(list(root.iterdir()))
    folders = [child for child in children if child.is_dir()]
    split_folders = [folder for folder in folders if _normalise(folder.name) in SPLIT_NAMES]
    if split_folders and len(split_folders) < len(folders):
        other = next(folder for folder in folders if folder not in split_folders)
        raise BadInputError(
            f"{other}: not a split folder, but its neighbour {split_folders[0].name} is; "
            f"{LAYOUT_HELP}"
        )
    _refuse_stray_images(children)
    if not split_folders:
        return sorted(_images_in_class_folders(folders, None))  # os.walk order is the disk's: sort
    files = []
    for folder in split_folders:
        children = _visible(list(folder.iterdir()))
        _refuse_stray_images(children)
        split = SPLIT_NAMES[_normalise(folder.name)]
        files += _images_in_class_folders([child for child in children if child.is_dir()], split)
    return sorted(files)


def _refuse_stray_images(children: list[Path]) -> None:
    stray = next((child for child in children if child.is_file() and _is_image(child)), None)
    if stray is not None:  # silently dropping it would lose data; guessing its class is worse
        raise BadInputError(
            f"{stray}: image outside a class folder; move it into one ({LAYOUT_HELP})"
        )


def _images_in_class_folders(
    folders: list[Path], split: int | None
) -> list[tuple[Path, int, int | None]]:
    files = []
    for folder in folders:
        label = CLASS_NAMES.get(_normalise(folder.name))
        if label is None:
            raise BadInputError(
                f"{folder}: unknown class folder '{folder.name}'; class folders must be "
                f"named one of {_accepted_class_names()} (any case); {LAYOUT_HELP}"
            )
        for parent, subfolders, names in os.walk(folder):
            subfolders[:] = [name for name in subfolders if not name.startswith(".")]
            files += [(Path(parent, name), label, split) for name in names if _is_image(Path(name))]
    return files


def _accepted_class_names() -> str:
    synonyms = {
        index: [name for name, i in CLASS_NAMES.items() if i == index and not name.isdigit()]
        for index in range(len(CLASSES))
    }
    return ", ".join("/".join(names) for names in synonyms.values()) + " (or 0-6)"


def _read_images(paths: list[Path], workers: int | None) -> tuple[np.ndarray, list[str | None]]:
    """Decode every file, in parallel processes when it pays; order follows `paths`."""
    if workers is None:
        workers = (
            len(os.sched_getaffinity(0))
            if hasattr(os, "sched_getaffinity")
            else os.cpu_count() or 1
        )
    chunks = [paths[i : i + _CHUNK] for i in range(0, len(paths), _CHUNK)]
    if workers <= 1 or len(chunks) <= 1:
        results = [_read_chunk(chunk) for chunk in chunks]
    else:  # processes: decoding 48x48 JPEGs is mostly Python overhead, which holds the GIL
        pool = ProcessPoolExecutor(min(workers, len(chunks)), mp_context=_pool_context())
        with warnings.catch_warnings(), pool:
            warnings.filterwarnings(
                "ignore", ".*fork.*", DeprecationWarning
            )  # 3.12+: see _pool_context
            results = list(pool.map(_read_chunk, chunks))
    pixels = np.concatenate([images for images, _ in results])
    return pixels, [reason for _, reasons in results for reason in reasons]


def _pool_context() -> multiprocessing.context.BaseContext:
    """fork on Linux: no re-import of the caller's modules (torch takes seconds), and the workers
    only run Pillow, so the usual fork-after-threads hazards do not apply (torch's DataLoader
    does the same). Elsewhere the platform default (spawn), which needs a __main__ guard."""
    if sys.platform == "linux":
        return multiprocessing.get_context("fork")
    return multiprocessing.get_context()


def _read_chunk(paths: list[Path]) -> tuple[np.ndarray, list[str | None]]:
    """Pool task: decode a list of files; failures become zero images plus a reason."""
    images = np.zeros((len(paths), IMAGE_SIZE, IMAGE_SIZE), np.uint8)
    reasons: list[str | None] = []
    for i, path in enumerate(paths):
        pixels, reason = _try_read(path)
        if pixels is not None:
            images[i] = pixels
        reasons.append(reason)
    return images, reasons


# --- synthetic faces ----------------------------------------------------------------------------


def synthetic_faces(
    n: int,
    seed: int = 0,
    val_fraction: float = 0.15,
    test_fraction: float = 0.15,
    with_masks: bool = True,
) -> RawDataset:
    """n drawn faces (see fertool.synthetic): balanced shuffled labels, stratified splits, and
    `masks` (1 on the eyes, brows, mouth and expression wrinkles, grown by one pixel).

    The same (n, seed) gives the same bytes. Bad n or fractions raise ValueError (a caller's bug).
    """
    images, labels, split, masks = draw_faces(
        n, seed, val_fraction, test_fraction, with_masks, CLASSES
    )
    return RawDataset(images, labels, split, f"synthetic:n={n},seed={seed}", masks=masks)
