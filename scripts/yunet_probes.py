"""Two probes of YuNet behind choices in detect.py (docs/experiments/2026-12-07-detector.md).

    python scripts/yunet_probes.py fer.safetensors

1. Large faces: the astronaut's face cropped to fill 30-90 % of the image, searched at 96-640 px:
   is one pass at most 640 px enough, or does a face filling the image need a coarser pass?
2. Looking again: YuNet's eye landmarks under-read a tilt. Turn the face by the angle read,
   detect again on the levelled patch, add the new reading: how close do one and two more looks
   come to the true angle, on the first `--faces` FER2013 val faces turned by 0 and +-20 degrees?
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from fertool.artifacts import load_artifact
from fertool.detect import (
    DetectConfig,
    Face,
    _cv2,
    _yunet,
    eye_angle,
    find_faces,
    photo_from_pixels,
)
from fertool.evaluate import select_split

sys.path.insert(0, str(Path(__file__).parent))
from align_experiment import canvas  # noqa: E402


def large_faces() -> None:
    import skimage.data

    cv2 = _cv2()
    detector = _yunet(0.3)
    bgr = np.ascontiguousarray(skimage.data.astronaut()[..., ::-1])
    cx, cy, height = 224, 119, 112  # her face's centre and YuNet's box height
    print("| face fills | crop | 640 px | 320 px | 160 px | 96 px |")
    print("|---:|---|---:|---:|---:|---:|")
    for share in (0.3, 0.5, 0.7, 0.9):
        half = int(height / share / 2)
        crop = bgr[max(0, cy - half) : cy + half, max(0, cx - half) : cx + half]
        cells = []
        for side in (640, 320, 160, 96):
            ratio = side / max(crop.shape[:2])
            size = (round(crop.shape[1] * ratio), round(crop.shape[0] * ratio))
            shrink = cv2.INTER_AREA if ratio < 1 else cv2.INTER_LINEAR
            image = cv2.resize(crop, size, interpolation=shrink)
            detector.setInputSize(size)
            _, found = detector.detect(image)
            cells.append("none" if found is None else f"{max(found[:, 14]):.2f}")
        print(f"| {share:.0%} | {crop.shape[1]}x{crop.shape[0]} | " + " | ".join(cells) + " |")


def read_again(rgb: np.ndarray, face: Face, looks: int) -> float:
    """The tilt after `looks` more readings on the patch levelled by the tilt read so far."""
    cv2 = _cv2()
    detector = _yunet(0.3)
    x, y, w, h = face.box
    centre, side = (x + w / 2, y + h / 2), int(2 * max(w, h))
    total = eye_angle(face)
    for _ in range(looks):
        turn = cv2.getRotationMatrix2D(centre, total, 1.0)
        turn[:, 2] += (side / 2 - centre[0], side / 2 - centre[1])
        patch = cv2.warpAffine(rgb, turn, (side, side), borderMode=cv2.BORDER_REPLICATE)
        detector.setInputSize((side, side))
        _, found = detector.detect(np.ascontiguousarray(patch[..., ::-1]))
        if found is None:
            break
        row = min(
            found,
            key=lambda r: (r[0] + r[2] / 2 - side / 2) ** 2 + (r[1] + r[3] / 2 - side / 2) ** 2,
        )
        total += float(np.degrees(np.arctan2(row[7] - row[5], row[6] - row[4])))
    return total


def looking_again(data: Path, faces: int) -> None:
    images, _, _ = select_split(load_artifact(data, expect="dataset"), "val")
    search = DetectConfig(threshold=0.3, min_face=0)
    print(
        "\n| angle | faces | median read: once / twice / three times "
        "| mean abs error: once / twice / three times |"
    )
    print("|---:|---:|---|---|")
    for angle in (0.0, 20.0, -20.0):
        reads = []
        for face in images[:faces].numpy():
            photo = photo_from_pixels(canvas(face, 160, angle))
            found = find_faces(photo, search)
            if found and photo.rgb is not None:
                best = max(found, key=lambda f: f.score)
                reads.append([read_again(photo.rgb, best, looks) for looks in (0, 1, 2)])
        table = np.array(reads)
        median = " / ".join(f"{v:+.1f}" for v in np.median(table, 0))
        error = " / ".join(f"{v:.1f}" for v in np.abs(table - angle).mean(0))
        print(f"| {angle:+.0f} | {len(table)} | {median} | {error} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data", type=Path, help="a prepared FER2013 dataset (fertool prepare)")
    parser.add_argument("--faces", type=int, default=40, help="the first N val faces")
    args = parser.parse_args()
    large_faces()
    looking_again(args.data, args.faces)


if __name__ == "__main__":
    main()
