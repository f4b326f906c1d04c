"""Write the demo clip of the README's video timeline, from scikit-image's bundled photos.

    python scripts/demo_video.py demo.mp4
    fertool predict demo.mp4 --fps 10 --smooth --csv > demo.csv
    fertool timeline demo.csv -o docs/figures/video-timeline.png

640x480 H.264 at 25 frames/s, 8 s. Top: the astronaut's face (`skimage.data.astronaut`)
crossing the frame. Bottom: eight faces of `skimage.data.lfw_subset` (Labeled Faces in the Wild,
25x25, upscaled to 150 px), one per second in the same place, so one track whose expression
changes when the person does. Nothing here is a real recording: it shows what the rows and the
timeline look like, not how well the model reads real video.
"""

from __future__ import annotations

import fractions
import sys
from pathlib import Path

import av
import numpy as np
from PIL import Image
from skimage import data

RATE, SECONDS, SIZE = 25, 8, (640, 480)


def main(path: Path) -> None:
    astronaut = Image.fromarray(data.astronaut()[20:240, 120:340]).resize((170, 170))
    faces = data.lfw_subset()[:SECONDS]  # the first 100 are faces, 25 x 25 gray in [0, 1]
    lfw = [
        Image.fromarray((255 * f).astype(np.uint8)).resize((150, 150), Image.Resampling.BICUBIC)
        for f in faces
    ]
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=RATE)
        stream.width, stream.height, stream.pix_fmt = *SIZE, "yuv420p"
        for i in range(RATE * SECONDS):
            canvas = Image.new("RGB", SIZE, (92, 98, 106))
            canvas.paste(astronaut, (round(20 + 430 * i / (RATE * SECONDS - 1)), 20))
            canvas.paste(lfw[i // RATE].convert("RGB"), (245, 300))
            frame = av.VideoFrame.from_ndarray(np.asarray(canvas), format="rgb24")
            frame.pts, frame.time_base = i, fractions.Fraction(1, RATE)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    print(f"{path}: {RATE * SECONDS} frames, {SIZE[0]}x{SIZE[1]}, {RATE} frames/s")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "demo.mp4"))
