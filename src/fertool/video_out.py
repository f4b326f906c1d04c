"""An annotated copy of a video: every frame of the range, with each face's box, track id and
label drawn, encoded as H.264 in MP4 (what browsers, phones and desktop players open).

    stats = VideoStats()  # the writer takes the input's frame rate from it
    with AnnotatedVideo(Path("out.mp4"), stats) as video:
        for result in frame_results("clip.mp4", model, classes, config, True, stats):
            video.write(result)

A frame that was not sampled (`--every`, `--fps`) shows the boxes of the last sampled frame, so
the copy has as many frames as the range read, at the input's own timestamps. PyAV's wheels
carry libx264; where an FFmpeg lacks it, MPEG-4 Part 2 is written instead (VLC and ffplay open
it, browsers do not). H.264 with 4:2:0 colour needs even sides: an odd last row or column is
cropped. The file appears only when complete (written beside, then renamed).
"""

from __future__ import annotations

import fractions
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from fertool.video import FrameResult, VideoRow, VideoStats

ENCODERS = ("libx264", "h264", "mpeg4")  # first one this FFmpeg has
_MILLISECOND = fractions.Fraction(1, 1000)


def captions(rows: list[VideoRow]) -> list[str]:
    """ "#2 happy 91%": track, label, and the label's probability (smoothed when smoothing)."""
    texts = []
    for row in rows:
        probs = row.smoothed or row.probabilities or {}
        texts.append(f"#{row.track} {row.label} {probs.get(row.label or '', 0.0):.0%}")
    return texts


class AnnotatedVideo:
    """Writes annotated frames to `path`; `count` says how many went in."""

    def __init__(self, path: Path, stats: VideoStats | None = None):
        self.path, self.stats = path, stats
        self.tmp = path.with_name(f".{path.name}.part")
        self.count, self.last_pts = 0, -1
        self.shown: list[VideoRow] = []
        self.container: Any = None
        self.stream: Any = None

    def __enter__(self) -> AnnotatedVideo:
        from fertool.artifacts import check_output_path

        check_output_path(self.path)
        return self

    def __exit__(self, kind: Any, error: Any, trace: Any) -> None:
        from fertool.errors import BadInputError

        # A video that broke half way keeps the frames written before; an interrupt, a crash
        # or a range without frames leaves no file.
        keep = self.count > 0 and (kind is None or issubclass(kind, BadInputError))
        try:
            if self.container is not None:
                if keep:
                    for packet in self.stream.encode():
                        self.container.mux(packet)
                self.container.close()
            if keep:
                self.tmp.replace(self.path)
        finally:
            self.tmp.unlink(missing_ok=True)

    def _open(self, width: int, height: int) -> None:
        import av

        self.container = av.open(str(self.tmp), "w", format="mp4")
        for name in ENCODERS:
            try:
                rate = fractions.Fraction(self.stats.rate if self.stats else 25)
                stream = self.container.add_stream(name, rate=rate.limit_denominator(1001))
                break
            except (av.FFmpegError, ValueError):
                continue
        else:
            from fertool.errors import FertoolError

            raise FertoolError(
                f"{self.path}: this FFmpeg (PyAV {av.__version__}) has none of the encoders "
                f"{', '.join(ENCODERS)}; reinstall PyAV from its wheel: pip install av"
            )
        stream.width, stream.height = width, height
        stream.pix_fmt = "yuv420p"
        stream.codec_context.time_base = _MILLISECOND
        if stream.codec_context.name in ("libx264", "h264"):
            stream.options = {"preset": "veryfast", "crf": "23"}
        self.stream = stream

    def write(self, result: FrameResult) -> None:
        """One frame of the range, with the boxes of its rows (or of the last sampled frame)."""
        import av

        from fertool.detect import annotate

        assert result.pixels is not None, "frame_results(..., keep_pixels=True) gives pixels"
        if result.sampled:
            self.shown = [row for row in result.rows if row.track is not None]
        height, width = (side - side % 2 for side in result.pixels.shape[:2])
        if self.container is None:
            self._open(width, height)
        image = Image.fromarray(result.pixels[:height, :width])
        if self.shown:
            image = annotate(image, [row.box or [] for row in self.shown], captions(self.shown))
        frame = av.VideoFrame.from_ndarray(np.asarray(image), format="rgb24")
        # The input's own clock, in milliseconds, kept strictly increasing as MP4 requires.
        pts = max(round(result.time * 1000), self.last_pts + 1)
        frame.pts, frame.time_base, self.last_pts = pts, _MILLISECOND, pts
        for packet in self.stream.encode(frame):
            self.container.mux(packet)
        self.count += 1
