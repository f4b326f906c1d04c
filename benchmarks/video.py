"""Frames/s of `fertool predict VIDEO` end to end, the split between its stages, and peak memory.

    .venv/bin/python benchmarks/video.py --frames 100 --runs 3 --json video.json
    .venv/bin/python benchmarks/video.py --detect-side 640 --tta flip   # levers, one at a time

The clip is written first: 640x480 H.264 at 25 frames/s, scikit-image's astronaut (her face at
about 130 px) moving across a grey frame. A run is what the command does for a video, in this
process: decode, detect (and track), crop, classify, write each row as a JSON line (to
/dev/null); frames/s is frames decoded over wall time, the median of `--runs` runs after one
warm-up run, with the CPU time per frame beside it (less sensitive to other jobs on a shared
machine; with `--threads 1`, 1000 / it is what one idle core would run). Peak memory is the
peak RSS of a fresh process running `fertool predict` on the clip and on a clip 10x longer
(`--every` as given): the same when frames are streamed.
"""

from __future__ import annotations

import argparse
import fractions
import json
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import av
import numpy as np
from PIL import Image


def write_clip(path: Path, frames: int, rate: int = 25) -> Path:
    from skimage import data

    face = Image.fromarray(data.astronaut()[0:300, 100:400]).resize((260, 260))
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=rate)
        stream.width, stream.height, stream.pix_fmt = 640, 480, "yuv420p"
        for i in range(frames):
            canvas = Image.new("RGB", (640, 480), (90, 96, 104))
            x = round(10 + 360 * (i % 250) / 249)  # across the frame every 10 s
            canvas.paste(face, (x, 110))
            frame = av.VideoFrame.from_ndarray(np.asarray(canvas), format="rgb24")
            frame.pts, frame.time_base = i, fractions.Fraction(1, rate)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def one_run(clip: Path, model, classes, config) -> dict:
    from fertool.video import VideoStats, VideoSummary, frame_results

    stats, summary = VideoStats(), VideoSummary(str(clip), classes)
    write = 0.0
    started, cpu = time.perf_counter(), time.process_time()
    with open("/dev/null", "w") as sink:
        for result in frame_results(clip, model, classes, config, stats=stats):
            t = time.perf_counter()
            for row in result.rows:
                sink.write(json.dumps(row.to_dict()) + "\n")
            sink.flush()
            summary.add(result.rows)
            write += time.perf_counter() - t
    wall, cpu = time.perf_counter() - started, time.process_time() - cpu
    seconds = {**stats.seconds, "write": write}
    seconds["other"] = wall - sum(seconds.values())
    faces = summary.to_dict()["faces"]
    return {
        "fps": stats.decoded / wall,
        "cpu_ms_per_frame": 1000 * cpu / stats.decoded,
        "faces": faces,
        "seconds": seconds,
    }


def peak_memory_mb(clip: Path, every: int, tta: str) -> float:
    """Peak RSS (MB) of `fertool predict CLIP --json` in a fresh process."""
    code = (
        "import resource, runpy, sys; sys.argv = sys.argv[1:]\n"
        "try:\n    runpy.run_module('fertool', run_name='__main__')\n"
        "except SystemExit:\n    pass\n"
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, file=sys.stderr)"
    )
    argv = ["fertool", "predict", str(clip), "--json", "--every", str(every), "--tta", tta]
    done = subprocess.run(
        [sys.executable, "-c", code, *argv], capture_output=True, text=True, check=True
    )
    return float(done.stderr.strip().splitlines()[-1])


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=100)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--tta", default="none")
    parser.add_argument("--detect-side", type=int, default=400, help="VideoConfig.detect_side")
    parser.add_argument("--buffer", type=int, default=16, help="VideoConfig.buffer_frames")
    parser.add_argument("--model", default=None, help="a model file [default: the bundled one]")
    parser.add_argument("--memory-every", type=int, default=0, help="also measure peak memory")
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads [default: torch's own]"
    )
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    from fertool.bundled import resolve_model
    from fertool.video import VideoConfig

    model, meta, name = resolve_model(Path(args.model) if args.model else None)
    classes = list(meta["classes"])
    config = VideoConfig(detect_side=args.detect_side, tta=args.tta, buffer_frames=args.buffer)
    folder = Path(tempfile.mkdtemp(prefix="fertool-video-bench-"))
    clip = write_clip(folder / "clip.mp4", args.frames)
    one_run(clip, model, classes, config)  # warm-up: lazy imports, the cascade, oneDNN kernels
    runs = [one_run(clip, model, classes, config) for _ in range(args.runs)]
    median = statistics.median(r["fps"] for r in runs)
    middle = min(runs, key=lambda r: abs(r["fps"] - median))
    report = {
        "cpu": cpu_name(),
        "torch_threads": torch.get_num_threads(),
        "model": str(name),
        "tta": args.tta,
        "detect_side": args.detect_side,
        "buffer_frames": args.buffer,
        "frames": args.frames,
        "faces_per_run": middle["faces"],
        "fps_median": round(median, 2),
        "fps_runs": [round(r["fps"], 2) for r in runs],
        # CPU time of this process (all its threads): on a machine shared with other jobs, wall
        # time grows with their load and this much less.
        "cpu_ms_per_frame": round(middle["cpu_ms_per_frame"], 1),
        # with one thread, frames/s that one idle core would give
        "fps_from_cpu_time": round(1000 / middle["cpu_ms_per_frame"], 1),
        "ms_per_frame": {k: round(1000 * v / args.frames, 2) for k, v in middle["seconds"].items()},
    }
    if args.memory_every:
        long_clip = write_clip(folder / "long.mp4", 10 * args.frames)
        report["memory_every"] = args.memory_every
        report["peak_mb_short"] = round(peak_memory_mb(clip, args.memory_every, args.tta), 1)
        report["peak_mb_10x"] = round(peak_memory_mb(long_clip, args.memory_every, args.tta), 1)
    print(json.dumps(report, indent=2))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
