"""YuNet against the Haar cascade on scikit-image's photos: faces found, false faces, ms a photo.

    .venv/bin/python benchmarks/detectors.py [--runs 5]

Every photo that ships with scikit-image (nothing downloads): two with a face (astronaut; camera,
a man in three-quarter view behind a camera) and the rest without one (a cup, a cat, a rocket,
cells, text, a logo, coins, ...). Each is searched as `fertool predict` searches it
(`detect.find_faces` on `photo_from_pixels`, the default DetectConfig but the detector), and
timed: the median of `--runs` searches, after one warm-up.

Then scikit-image's LFW subset: 100 faces and 100 non-faces, 25 x 25 px each, each upscaled to
100 px and set in a 200 px mid-gray canvas: the share of faces found (at several YuNet
thresholds), and the false faces found in the non-faces. Last, a mosaic of 12 LFW faces (4 x 3,
96 px each): how many of the 12 each finder finds. Prints markdown.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import subprocess
import time
from dataclasses import replace

import numpy as np
from PIL import Image

from fertool.detect import DetectConfig, Face, find_faces, photo_from_pixels

# The true faces, by eye: [x, y, w, h] in each photo's pixels.
TRUE_FACES = {"astronaut": [(178, 63, 90, 113)], "camera": [(196, 113, 61, 81)]}
PHOTOS = [
    "astronaut",
    "camera",
    "coffee",
    "chelsea",
    "rocket",
    "immunohistochemistry",
    "hubble_deep_field",
    "retina",
    "logo",
    "page",
    "text",
    "clock",
    "coins",
    "horse",
    "brick",
    "moon",
    "cell",
]


def cpu_name() -> str:
    try:
        lines = subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines()
        return next(line.split(":", 1)[1].strip() for line in lines if "Model name" in line)
    except (OSError, StopIteration):
        return platform.processor() or "unknown CPU"


def overlap(a: tuple[int, ...], b: tuple[int, ...]) -> float:
    """Intersection over union of two boxes x, y, w, h."""
    ix = max(0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / (a[2] * a[3] + b[2] * b[3] - inter)


def pixels(name: str) -> np.ndarray:
    import skimage.data

    image = getattr(skimage.data, name)()
    if image.ndim == 3 and image.shape[2] == 4:  # the logo: RGBA, on white
        alpha = image[..., 3:4] / 255.0
        image = np.rint(image[..., :3] * alpha + 255 * (1 - alpha)).astype(np.uint8)
    return np.ascontiguousarray(image.astype(np.uint8))


def canvas(face: np.ndarray, px: int = 100, side: int = 200) -> np.ndarray:
    big = np.asarray(
        Image.fromarray(np.rint(face * 255).astype(np.uint8)).resize(
            (px, px), Image.Resampling.LANCZOS
        )
    )
    image = np.full((side, side), 128, np.uint8)
    start = (side - px) // 2
    image[start : start + px, start : start + px] = big
    return image


def timed(image: np.ndarray, config: DetectConfig, runs: int) -> tuple[list[Face], float]:
    photo = photo_from_pixels(image)
    faces = find_faces(photo, config)  # warm-up (and the model's load)
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        find_faces(photo_from_pixels(image), config)
        times.append(time.perf_counter() - started)
    return faces, 1000 * statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    import cv2
    import skimage

    configs = {
        "yunet": DetectConfig(),
        "haar": DetectConfig(detector="haar"),
    }
    print(
        f"{cpu_name()}, OpenCV {getattr(cv2, '__version__', '?')}, "
        f"scikit-image {getattr(skimage, '__version__', '?')}, "
        f"{cv2.getNumThreads()} OpenCV threads; median of {args.runs} runs\n"
    )
    print(
        "| photo | size | true faces | yunet found | yunet false | yunet ms | haar found "
        "| haar false | haar ms |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    found_true = dict.fromkeys(configs, 0)
    found_false = dict.fromkeys(configs, 0)
    millis: dict[str, list[float]] = {name: [] for name in configs}
    for photo in PHOTOS:
        image = pixels(photo)
        truth = TRUE_FACES.get(photo, [])
        cells = []
        for name, config in configs.items():
            faces, ms = timed(image, config, args.runs)
            hits = sum(any(overlap(f.box, t) > 0.3 for f in faces) for t in truth)
            false = sum(not any(overlap(f.box, t) > 0.3 for t in truth) for f in faces)
            found_true[name] += hits
            found_false[name] += false
            millis[name].append(ms)
            scores = ""
            if name == "yunet" and faces:
                scores = " (" + ", ".join(f"{f.score:.2f}" for f in faces) + ")"
            cells += [f"{hits}{scores}", str(false), f"{ms:.1f}"]
        height, width = image.shape[:2]
        print(f"| {photo} | {width}x{height} | {len(truth)} | " + " | ".join(cells) + " |")
    true_total = sum(len(t) for t in TRUE_FACES.values())
    summary = []
    for name in configs:
        median = statistics.median(millis[name])
        summary += [f"{found_true[name]}/{true_total}", str(found_false[name]), f"{median:.1f}"]
    print(f"| **all {len(PHOTOS)}** | | {true_total} | " + " | ".join(summary) + " |")

    import skimage.data

    lfw = skimage.data.lfw_subset()
    faces, others = lfw[:100], lfw[100:]
    print("\nLFW subset, 25 px faces upscaled to 100 px in a 200 px canvas:\n")
    print("| finder | faces found (of 100) | false faces in 100 non-faces |")
    print("|---|---:|---:|")
    rows = [
        (f"yunet, threshold {t}", replace(configs["yunet"], threshold=t))
        for t in (0.3, 0.5, 0.6, 0.7, 0.8, 0.9)
    ]
    rows.append(("haar", configs["haar"]))
    for label, config in rows:
        found = sum(bool(find_faces(photo_from_pixels(canvas(f)), config)) for f in faces)
        false = sum(len(find_faces(photo_from_pixels(canvas(f)), config)) for f in others)
        print(f"| {label} | {found} | {false} |")

    tiles = [
        np.asarray(Image.fromarray(np.rint(f * 255).astype(np.uint8)).resize((96, 96)))
        for f in faces[:12]
    ]
    mosaic = np.vstack([np.hstack(tiles[row * 4 : row * 4 + 4]) for row in range(3)])
    print("\nA mosaic of 12 LFW faces (4 x 3, 96 px each, 384 x 288):\n")
    for name, config in configs.items():
        in_mosaic, ms = timed(mosaic, config, args.runs)
        print(f"- {name}: {len(in_mosaic)} of 12 found, {ms:.1f} ms")


if __name__ == "__main__":
    main()
