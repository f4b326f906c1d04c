"""Does levelling the eyes before the 48 px crop help? FER2013 val faces turned by known angles.

    python scripts/align_experiment.py fer.safetensors --faces 600

Each val face (FER2013 PublicTest; never the test split) is upscaled to `--face-px` pixels, set in
the middle of a canvas twice as large (mid gray), and the canvas is turned by each angle. YuNet
(`detect.find_faces`, threshold 0.3 so that the scores can be read off at any higher threshold)
looks for the face; the best-scoring face found is cropped as `predict` crops it, with and
without alignment, and classified by the bundled model with its own test-time views. Printed as
markdown: per angle, how often YuNet finds the face (at the default threshold and at 0.3), and
the accuracy of the aligned and the unaligned crops over the faces found, beside the accuracy
of the original 48x48 crops of those same faces. A margin sweep at 0 degrees follows.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
from PIL import Image

from fertool.artifacts import load_artifact
from fertool.bundled import resolve_model
from fertool.detect import (
    DetectConfig,
    Face,
    classify_faces,
    eye_angle,
    face_crops,
    find_faces,
    photo_from_pixels,
)
from fertool.evaluate import model_tta, select_split


def canvas(face: np.ndarray, face_px: int, angle: float) -> np.ndarray:
    """The 48x48 face upscaled to face_px, centred on a mid-gray canvas 2x as large, turned by
    `angle` degrees clockwise as seen (a positive angle tilts the head to its left shoulder)."""
    import cv2

    big = np.asarray(Image.fromarray(face).resize((face_px, face_px), Image.Resampling.LANCZOS))
    side = 2 * face_px
    image = np.full((side, side), 128, np.uint8)
    start = (side - face_px) // 2
    image[start : start + face_px, start : start + face_px] = big
    turn = cv2.getRotationMatrix2D((side / 2, side / 2), -angle, 1.0)
    turned = cv2.warpAffine(image, turn, (side, side), flags=cv2.INTER_LINEAR, borderValue=128)
    return np.ascontiguousarray(np.repeat(turned[..., None], 3, axis=2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data", type=Path, help="a prepared FER2013 dataset (fertool prepare)")
    parser.add_argument("--faces", type=int, default=400, help="the first N val faces")
    parser.add_argument("--face-px", type=int, default=160)
    parser.add_argument("--angles", type=float, nargs="+", default=[0, 10, -10, 20, -20])
    parser.add_argument("--margins", type=float, nargs="+", default=[0.1, 0.3])
    parser.add_argument(
        "--dead-zones",
        type=float,
        nargs="+",
        default=[3, 5, 8],
        help="also score: level only faces whose eyes YuNet reads as tilted at least this much",
    )
    args = parser.parse_args()

    val_images, val_labels, _ = select_split(load_artifact(args.data, expect="dataset"), "val")
    images, labels = val_images[: args.faces].numpy(), val_labels[: args.faces].numpy()
    model, meta, _ = resolve_model(None)
    tta = model_tta(meta, "auto")
    default = DetectConfig()
    search = replace(default, threshold=0.3, min_face=0)

    def right(crops: np.ndarray, truth: np.ndarray) -> np.ndarray:
        """Whether the bundled model labels each crop right (one pass for all)."""
        return np.asarray(classify_faces(model, crops, tta=tta).argmax(1) == truth)

    started = time.perf_counter()
    original = right(images, labels)
    print(
        f"{len(images)} FER2013 val faces at {args.face_px} px, bundled model, tta {tta}; "
        f"original 48 px crops: {original.mean():.1%}\n"
    )
    print(
        "| angle | found (score >= 0.3) | found (>= default "
        f"{default.threshold}) | median score | original 48 px | unaligned crop | aligned crop | "
        + " | ".join(f"aligned if tilt >= {zone:g}" for zone in args.dead_zones)
        + " | median tilt read | mean abs tilt error |"
    )
    print("|---:|" + "---:|" * (8 + len(args.dead_zones)))
    at_zero: list[tuple[np.ndarray, Face]] = []
    zero_index = np.zeros(0, dtype=int)
    for angle in args.angles:
        index, grays, faces = [], [], []
        for i, face in enumerate(images):
            photo = photo_from_pixels(canvas(face, args.face_px, angle))
            found = find_faces(photo, search)
            if found:
                index.append(i)
                grays.append(photo.gray)
                faces.append(max(found, key=lambda f: f.score))
        chosen = np.array(index, dtype=int)
        if len(chosen) == 0:
            print(f"| {angle:+.0f} | 0 | 0 | | | | |" + " |" * (3 + len(args.dead_zones)))
            continue
        scores = np.array([f.score for f in faces])
        tilts = np.array([eye_angle(f) for f in faces])
        photos = [photo_from_pixels(gray) for gray in grays]
        plain = [face_crops(p, [f], default.margin, align=False)[0] for p, f in zip(photos, faces)]
        level = [face_crops(p, [f], default.margin, align=True)[0] for p, f in zip(photos, faces)]
        both = right(np.stack(plain + level), np.concatenate([labels[chosen]] * 2))
        plain_right, level_right = both[: len(chosen)], both[len(chosen) :]
        zones = [
            np.where(np.abs(tilts) >= zone, level_right, plain_right).mean()
            for zone in args.dead_zones
        ]
        if angle == 0:
            at_zero = list(zip(grays, faces))
            zero_index = chosen
        print(
            f"| {angle:+.0f} | {len(chosen) / len(images):.1%} "
            f"| {(scores >= default.threshold).sum() / len(images):.1%} "
            f"| {np.median(scores):.2f} "
            f"| {original[chosen].mean():.1%} "
            f"| {plain_right.mean():.1%} "
            f"| {level_right.mean():.1%} | "
            + " | ".join(f"{z:.1%}" for z in zones)
            + f" | {np.median(tilts):+.1f} | {np.abs(tilts - angle).mean():.1f} |",
            flush=True,
        )
    if at_zero:
        print(f"\nMargin at 0 degrees (aligned crops; {default.margin} is in the table above):\n")
        print("| margin | accuracy |")
        print("|---:|---:|")
        for margin in args.margins:
            crops = np.stack([face_crops(photo_from_pixels(g), [f], margin)[0] for g, f in at_zero])
            print(f"| {margin:g} | {right(crops, labels[zero_index]).mean():.1%} |", flush=True)
    print(f"\n{time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
