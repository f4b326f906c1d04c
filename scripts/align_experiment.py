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
    parser.add_argument("--faces", type=int, default=600, help="the first N val faces")
    parser.add_argument("--face-px", type=int, default=160)
    parser.add_argument("--angles", type=float, nargs="+", default=[-20, -10, 0, 10, 20])
    parser.add_argument("--margins", type=float, nargs="+", default=[0.1, 0.2, 0.3])
    args = parser.parse_args()

    val_images, val_labels, _ = select_split(load_artifact(args.data, expect="dataset"), "val")
    images, labels = val_images[: args.faces].numpy(), val_labels[: args.faces].numpy()
    model, meta, _ = resolve_model(None)
    tta = model_tta(meta, "auto")
    default = DetectConfig()
    search = replace(default, threshold=0.3, min_face=0)

    def accuracy(crops: np.ndarray, truth: np.ndarray) -> float:
        if len(crops) == 0:
            return float("nan")
        return float((classify_faces(model, crops, tta=tta).argmax(1) == truth).mean())

    started = time.perf_counter()
    print(f"{len(images)} FER2013 val faces at {args.face_px} px, bundled model, tta {tta}\n")
    print(
        "| angle | found (score >= 0.3) | found (>= default "
        f"{default.threshold}) | median score | original 48 px | unaligned crop | aligned crop "
        "| median measured tilt |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    at_zero: list[tuple[np.ndarray, Face]] = []
    for angle in args.angles:
        found: list[tuple[int, np.ndarray, Face]] = []
        for i, face in enumerate(images):
            photo = photo_from_pixels(canvas(face, args.face_px, angle))
            faces = find_faces(photo, search)
            if faces:
                found.append((i, photo.gray, max(faces, key=lambda f: f.score)))
        index = np.array([i for i, _, _ in found], dtype=int)
        scores = np.array([f.score for _, _, f in found])
        photos = [photo_from_pixels(gray) for _, gray, _ in found]
        plain = [
            face_crops(p, [f], default.margin, align=False)[0]
            for p, (_, _, f) in zip(photos, found)
        ]
        level = [
            face_crops(p, [f], default.margin, align=True)[0] for p, (_, _, f) in zip(photos, found)
        ]
        tilts = [_tilt(f) for _, _, f in found]
        if angle == 0:
            at_zero = [(p.gray, f) for p, (_, _, f) in zip(photos, found)]
            zero_index = index
        print(
            f"| {angle:+.0f} | {len(found) / len(images):.1%} "
            f"| {(scores >= default.threshold).mean() * len(found) / len(images):.1%} "
            f"| {np.median(scores) if len(scores) else float('nan'):.2f} "
            f"| {accuracy(images[index], labels[index]):.1%} "
            f"| {accuracy(np.stack(plain), labels[index]):.1%} "
            f"| {accuracy(np.stack(level), labels[index]):.1%} "
            f"| {np.median(tilts) if tilts else float('nan'):.1f} |",
            flush=True,
        )
    if at_zero:
        print("\nMargin at 0 degrees (aligned crops):\n")
        print("| margin | accuracy |")
        print("|---:|---:|")
        for margin in args.margins:
            crops = np.stack([face_crops(photo_from_pixels(g), [f], margin)[0] for g, f in at_zero])
            print(f"| {margin} | {accuracy(crops, labels[zero_index]):.1%} |", flush=True)
    print(f"\n{time.perf_counter() - started:.0f} s")


def _tilt(face: Face) -> float:
    from fertool.detect import eye_angle

    return eye_angle(face)


if __name__ == "__main__":
    main()
