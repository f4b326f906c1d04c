"""The faces a command explains: image files, the faces found in photos, or a data set's images.

images, labels, names = gather_images([Path("face.png")], data=None, index=None)
images, labels, names = gather_images([], data=Path("fer.safetensors"), index="0-7")
x = to_unit_tensor(images)        # float N x 1 x 48 x 48 in [0, 1], as every model takes it
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from fertool.errors import BadInputError

if TYPE_CHECKING:
    from fertool.detect import DetectConfig


def parse_indices(text: str, flag: str = "--index") -> list[int]:
    """'3,17,40-42' -> [3, 17, 40, 41, 42]."""
    indices: list[int] = []
    usage = f"{flag} {text}: expected numbers like 3,17,40-42"
    try:
        for part in filter(None, (p.strip() for p in text.split(","))):
            low, _, high = part.partition("-")
            if high and int(high) < int(low):
                raise BadInputError(f"{usage} (a range runs low-high, not {part})")
            indices.extend(range(int(low), int(high) + 1) if high else [int(low)])
    except ValueError as err:
        raise BadInputError(usage) from err
    if not indices:
        raise BadInputError(f"{usage} (it names no image)")
    return indices


def gather_images(
    images: list[Path],
    data: Path | None,
    index: str | None,
    detect: bool = False,
    config: DetectConfig | None = None,
) -> tuple[np.ndarray, np.ndarray | None, list[str]]:
    """uint8 N x 48 x 48 images, their labels when known, and a name for each.

    `detect`: each image file is a photo whose faces are found (by `config`, default
    DetectConfig()) and cropped as `predict` crops them.
    """
    from fertool.artifacts import load_artifact
    from fertool.data import read_image

    if data is not None:
        if images:
            raise BadInputError(f"{images[0]}: give images or --data with --index, not both")
        dataset = load_artifact(data, expect="dataset")
        chosen = parse_indices(index or "0-7")
        total = len(dataset.tensors["labels"])
        bad = [i for i in chosen if not 0 <= i < total]
        if bad:
            raise BadInputError(
                f"{data}: has {total} images; --index {bad[0]} is out of range (0-{total - 1})"
            )
        return (
            dataset.tensors["images"][chosen].numpy(),
            dataset.tensors["labels"][chosen].numpy(),
            [f"#{i}" for i in chosen],
        )
    if not images:
        raise BadInputError("no images: pass image files, or --data DATA --index 3,17,42")
    if detect:
        crops, names = faces_in_photos(images, config)
        return crops, None, names
    return np.stack([read_image(p) for p in images]), None, [p.name for p in images]


def faces_in_photos(
    paths: list[Path], config: DetectConfig | None = None
) -> tuple[np.ndarray, list[str]]:
    """Every face of every photo, cropped as `predict` crops it (a 48x48 image is one face), named
    by its photo and, where a photo has several, its number and box x,y,w,h in the photo's
    pixels."""
    from fertool.detect import DetectConfig, Face, photo_faces, read_photo

    config = config or DetectConfig()
    crops, names = [], []
    for path in paths:
        photo = read_photo(path, config.max_side)
        small: list[Face] = []
        faces, found = photo_faces(photo, config, skipped=small)
        if not faces:
            fewer = (
                f" ({len(small)} narrower than --min-face {config.min_face} px skipped: "
                "lower --min-face)"
                if small
                else ""
            )
            raise BadInputError(
                f"{path}: no face found{fewer}; drop --detect to use the whole image"
            )
        crops.append(found)
        if len(faces) == 1:
            names.append(path.name)
        else:
            names += [
                f"{path.name} face {i} ({','.join(map(str, photo.to_original(face.box)))})"
                for i, face in enumerate(faces, 1)
            ]
    return np.concatenate(crops), names


def to_unit_tensor(images: np.ndarray) -> Any:
    """uint8 N x 48 x 48 -> float N x 1 x 48 x 48 in [0, 1], as every model takes it."""
    import torch

    from fertool.evaluate import to_input

    return to_input(torch.from_numpy(images), torch.device("cpu"))
