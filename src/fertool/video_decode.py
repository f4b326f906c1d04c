"""Video frames, one at a time, with their timestamps: files and cameras through PyAV.

    container = open_container(Path("clip.mp4"))          # BadInputError saying why not
    for index, seconds, frame in decoded_frames(container, "clip.mp4", VideoStats()):
        pixels = frame.to_ndarray(format="rgb24")

The decoder is PyAV (FFmpeg's libraries, bound to Python). Measured here on a 640x480 H.264
clip (docs/experiments/2026-12-07-video.md): OpenCV's VideoCapture decodes faster (~2000
frames/s to RGB against PyAV's ~680 with the slice threads used here, both over 25x what the
model needs) and both read the exact timestamps of a variable-frame-rate clip, but VideoCapture
cannot tell the end of a stream from a broken one (`read()` returns False for both), reports a
frame rate and count that are wrong for variable-rate video, and the OpenCV wheel can only write
MPEG-4 Part 2, which browsers and QuickTime do not play; PyAV raises a named error where the data
breaks, gives every frame's pts and time base, opens cameras through FFmpeg's device inputs, and
writes H.264 (its wheels carry libx264). torchcodec was not chosen: it needs FFmpeg's shared
libraries installed separately and pins the torch version, while PyAV's wheel (~100 MB) is
self-contained.
"""

from __future__ import annotations

import sys
import time as clock
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from fertool.errors import BadInputError

VIDEO_EXTENSIONS = frozenset(
    {".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".mpg", ".mpeg", ".ts", ".wmv", ".flv"}
)


@dataclass
class VideoStats:
    """What a run read and where its time went (seconds per stage)."""

    decoded: int = 0
    sampled: int = 0
    seconds: dict[str, float] = field(
        default_factory=lambda: {"decode": 0.0, "detect": 0.0, "classify": 0.0}
    )
    rate: float = 25.0  # the stream's average frame rate, once open


def is_video(path: Path) -> bool:
    return path.suffix.lower() in VIDEO_EXTENSIONS


def camera_index(argument: str) -> int | None:
    """`-` is the first camera, a bare number the camera of that index; anything else None."""
    if argument == "-":
        return 0
    return int(argument) if argument.isdigit() and not Path(argument).exists() else None


def open_container(source: str | Path | int) -> Any:
    """A PyAV container with a video stream, or BadInputError saying why not."""
    import av

    name = source_name(source)
    try:
        if isinstance(source, int):
            container = _open_camera(source)
        else:
            container = av.open(str(source))
    except BadInputError:
        raise
    except av.error.EOFError as error:
        raise BadInputError(
            f"{name}: the file ends before its first frame (an empty clip)"
        ) from error
    except av.FFmpegError as error:
        raise BadInputError(f"{name}: cannot read video ({_reason(error)})") from error
    except (OSError, ValueError) as error:
        raise BadInputError(f"{name}: cannot read video ({error})") from error
    if not container.streams.video:
        container.close()
        raise BadInputError(f"{name}: no video stream in this file (audio or data only)")
    stream = container.streams.video[0]
    if stream.codec_context is None:
        container.close()
        raise BadInputError(
            f"{name}: this FFmpeg has no decoder for its video codec; convert it, e.g. "
            f"ffmpeg -i {name} -c:v libx264 out.mp4"
        )
    return container


def _open_camera(index: int) -> Any:
    import av

    if sys.platform.startswith("linux"):
        device, fmt = f"/dev/video{index}", "v4l2"
        if not Path(device).exists():
            raise BadInputError(
                f"camera {index}: no camera here ({device} does not exist); pass a video file"
            )
    elif sys.platform == "darwin":
        device, fmt = str(index), "avfoundation"
    else:
        raise BadInputError(
            f"camera {index}: cameras are read on Linux and macOS only; record a file and pass it"
        )
    try:
        return av.open(device, format=fmt)
    except (av.FFmpegError, OSError) as error:
        raise BadInputError(f"camera {index}: cannot open {device} ({error})") from error


def source_name(source: str | Path | int) -> str:
    """How a video or camera is named in rows and messages."""
    return f"camera {source}" if isinstance(source, int) else str(source)


def _reason(error: Exception) -> str:
    text = getattr(error, "strerror", None) or str(error)
    return str(text).rstrip(".").lower()


def decoded_frames(
    container: Any, name: str, stats: VideoStats
) -> Iterator[tuple[int, float, Any]]:
    """(index, seconds, av frame) of each frame, in order; BadInputError where the data breaks.

    Times are the frame's pts in the stream's time base, less the first frame's, so a clip
    starts at 0 whatever its container's offset; a frame with no pts gets the previous time plus
    one frame at the stream's average rate.
    """
    import av

    stream = container.streams.video[0]
    # Slice threads, not frame threads: with frame threads FFmpeg drops a broken packet silently
    # (the video just ends early); slice threads still raise, at 3/4 of the speed (~680 frames/s).
    stream.thread_type = "SLICE"
    rate = float(stream.average_rate or stream.guessed_rate or 25)
    stats.rate = rate
    first, last, index = None, None, 0
    packets = container.decode(stream)
    while True:
        started = clock.perf_counter()
        try:
            frame = next(packets)
        except StopIteration:
            break
        except av.FFmpegError as error:
            where = f"after frame {index - 1} ({last:.2f} s)" if last is not None else "at start"
            raise BadInputError(
                f"{name}: the video breaks {where}: {_reason(error)}; "
                f"the {index} frame(s) before are kept"
            ) from error
        finally:
            stats.seconds["decode"] += clock.perf_counter() - started
        seconds = frame.time
        if seconds is None:
            seconds = (last + 1 / rate) if last is not None else 0.0
        if first is None:
            first = seconds
        last = seconds - first
        stats.decoded += 1
        yield index, last, frame
        index += 1
    _check_complete(container, stream, name, last, rate, index)


def _check_complete(
    container: Any, stream: Any, name: str, last: float | None, rate: float, count: int
) -> None:
    """BadInputError when the frames end well before the duration the header announces: a file
    cut short decodes without an error up to where it stops."""
    if stream.duration is not None and stream.time_base is not None:
        announced = float(stream.duration * stream.time_base)
    elif container.duration is not None and len(container.streams) == 1:
        announced = container.duration / 1_000_000  # microseconds, av.time_base
    else:
        return
    reached = (last or 0.0) + 1 / rate
    if announced - reached > max(3 / rate, 0.1 * announced):
        raise BadInputError(
            f"{name}: the frames stop at {reached:.2f} s of the {announced:.2f} s its header "
            f"announces: the file is cut short or damaged; the {count} frame(s) before are kept"
        )
