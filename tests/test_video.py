"""fertool predict on real videos, written here from scikit-image's astronaut: two faces (hers
and its mirror image) moving in opposite directions for 2 s at 10 frames/s; tracks, timestamps,
sampling, streaming, the timeline figure, the annotated copy, and every bad input.

The model is the FER2013 DeXpression branch kept in results/fer2013 (fast: one branch).
"""

from __future__ import annotations

import csv
import fractions
import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from fertool.cli import app

av = pytest.importorskip("av", reason="PyAV decodes video")
skimage_data = pytest.importorskip("skimage.data", reason="scikit-image bundles the test photos")

MODEL = Path(__file__).resolve().parents[1] / "results" / "fer2013" / "branch1.safetensors"
FRAMES, RATE, SIZE = 20, 10, (320, 240)
runner = CliRunner()


def face_tile(side: int = 110) -> np.ndarray:
    """The astronaut's face with some context, side x side RGB."""
    return np.asarray(
        Image.fromarray(skimage_data.astronaut()[20:210, 130:320]).resize((side, side))
    )


def frame_with_faces(i: int, faces: bool = True) -> np.ndarray:
    """Frame i: her face in the top half moving right, its mirror image below moving left."""
    frame = np.full((SIZE[1], SIZE[0], 3), 96, np.uint8)
    if faces:
        tile = face_tile()
        shift = round(150 * i / (FRAMES - 1))
        frame[5:115, 20 + shift : 130 + shift] = tile
        frame[125:235, 190 - shift : 300 - shift] = tile[:, ::-1]
    else:
        coffee = np.asarray(Image.fromarray(skimage_data.coffee()).resize(SIZE))
        frame[:] = np.roll(coffee, 4 * i, axis=1)
    return frame


def write_video(path: Path, frames: list[np.ndarray], codec: str = "libx264", rate: int = RATE):
    """Frames at `rate`, with explicit timestamps (ms), so every container keeps them."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=rate)
        stream.width, stream.height, stream.pix_fmt = SIZE[0], SIZE[1], "yuv420p"
        stream.codec_context.time_base = fractions.Fraction(1, 1000)
        for i, pixels in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(pixels, format="rgb24")
            frame.pts, frame.time_base = i * 1000 // rate, fractions.Fraction(1, 1000)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("clips")
    write_video(folder / "two.mp4", [frame_with_faces(i) for i in range(FRAMES)])
    write_video(folder / "coffee.mp4", [frame_with_faces(i, faces=False) for i in range(6)])
    write_video(folder / "two.mkv", [frame_with_faces(i) for i in range(FRAMES)])
    return folder


def predict(*args: object, code: int = 0):
    result = runner.invoke(app, ["predict", str(MODEL), *map(str, args)])
    assert result.exit_code == code, result.output + (result.stderr or "")
    assert "Traceback" not in result.output
    return result


def json_lines(*args: object, code: int = 0) -> list[dict]:
    return [json.loads(line) for line in predict(*args, "--json", code=code).stdout.splitlines()]


@pytest.fixture(scope="module")
def rows(clips: Path) -> list[dict]:
    return json_lines(clips / "two.mp4", "--smooth")


def faces_of(records: list[dict]) -> list[dict]:
    return [r for r in records if r["type"] == "face"]


def test_both_faces_are_found_in_every_frame_with_increasing_timestamps(rows):
    faces = faces_of(rows)
    frames = sorted({r["frame"] for r in faces})
    assert frames == list(range(FRAMES))
    assert all(sum(r["frame"] == f for r in faces) == 2 for f in frames)
    times = [r["time"] for r in faces[::2]]
    assert times == pytest.approx([f / RATE for f in range(FRAMES)], abs=1e-3)
    assert all(b > a for a, b in zip(times, times[1:]))
    assert all(abs(sum(r["probabilities"].values()) - 1) < 1e-4 for r in faces)
    assert all(r["label"] == max(r["smoothed"], key=r["smoothed"].get) for r in faces)


def test_each_face_keeps_its_track_while_they_cross(rows):
    faces = faces_of(rows)
    top = {r["track"] for r in faces if r["box"][1] < 120}
    bottom = {r["track"] for r in faces if r["box"][1] >= 120}
    assert len(top) == 1 and len(bottom) == 1 and top != bottom
    first, last = (next(r for r in faces if r["frame"] == f and r["box"][1] < 120) for f in (0, 19))
    assert last["box"][0] - first["box"][0] > 120  # it did move across


def test_the_summary_closes_the_stream_with_time_on_screen_per_track(rows):
    summary = rows[-1]
    assert summary["type"] == "summary" and all(r["type"] != "summary" for r in rows[:-1])
    assert summary["frames_decoded"] == FRAMES and summary["faces"] == 2 * FRAMES
    assert [t["frames"] for t in summary["tracks"]] == [FRAMES, FRAMES]
    for track in summary["tracks"]:
        assert track["seconds"] == pytest.approx(FRAMES / RATE)
        assert sum(track["shares"].values()) == pytest.approx(1)


@pytest.mark.parametrize(
    "options, frames",
    [
        (["--every", "5"], [0, 5, 10, 15]),
        (["--fps", "2"], [0, 5, 10, 15]),
        (["--start", "0.5", "--end", "1.2"], list(range(5, 12))),
        (["--start", "1", "--every", "4"], [10, 14, 18]),
    ],
)
def test_every_fps_start_and_end_pick_the_frames(clips, options, frames):
    faces = faces_of(json_lines(clips / "two.mp4", *options))
    assert sorted({r["frame"] for r in faces}) == frames


def test_rows_come_out_while_the_video_is_still_being_decoded(clips):
    from fertool.models import load_model
    from fertool.video import VideoConfig, VideoStats, predict_video

    model, meta = load_model(MODEL)
    stats = VideoStats()
    rows = predict_video(
        clips / "two.mp4", model, meta["classes"], VideoConfig(buffer_frames=4), stats
    )
    first = next(rows)
    assert first.frame == 0 and first.to_dict()["type"] == "face"
    assert stats.decoded < FRAMES  # the rest is not decoded yet
    assert len([first, *rows]) == 2 * FRAMES


def test_a_pipe_reads_json_lines_before_the_video_ends(tmp_path):
    import subprocess
    import sys

    clip = write_video(tmp_path / "long.mp4", [frame_with_faces(i % FRAMES) for i in range(300)])
    command = [sys.executable, "-m", "fertool", "predict", str(MODEL), str(clip), "--json"]
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )
    try:
        first = json.loads(process.stdout.readline())  # type: ignore[union-attr]
        still_running = process.poll() is None
    finally:
        process.kill()
        process.wait()
    assert first["type"] == "face" and first["frame"] == 0
    assert still_running  # 300 frames take far longer than the first 16


def test_csv_has_a_row_per_face_with_the_json_numbers(clips, rows):
    result = predict(clips / "two.mp4", "--smooth", "--csv")
    table = list(csv.DictReader(io.StringIO(result.stdout)))
    faces = faces_of(rows)
    assert len(table) == len(faces)
    for line, face in zip(table, faces):
        assert (int(line["frame"]), int(line["track"])) == (face["frame"], face["track"])
        assert [int(line[k]) for k in "xywh"] == face["box"]
        assert float(line["happy"]) == pytest.approx(face["probabilities"]["happy"], abs=1e-6)
        assert float(line["smoothed_happy"]) == pytest.approx(face["smoothed"]["happy"], abs=1e-6)


def test_the_table_is_a_summary_per_track(clips):
    lines = predict(clips / "two.mp4").stdout.splitlines()
    assert len(lines) < 12
    assert "2 track(s)" in lines[-1] and "40 face(s)" in lines[-1]


def test_timeline_draws_a_panel_per_track_from_csv_and_json_lines(clips, rows, tmp_path):
    (tmp_path / "rows.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    (tmp_path / "rows.csv").write_text(predict(clips / "two.mp4", "--csv").stdout)
    for source in ("rows.jsonl", "rows.csv"):
        figure = tmp_path / f"{source}.png"
        result = runner.invoke(
            app, ["timeline", str(tmp_path / source), "-o", str(figure), "--json"]
        )
        assert result.exit_code == 0, result.output
        report = json.loads(result.stdout)
        assert len(report["tracks"]) == 2 and report["smoothed"] == (source == "rows.jsonl")
        pixels = np.asarray(Image.open(figure).convert("L"), float)
        assert pixels.shape[0] > 300 and pixels.std() > 10


def test_annotate_writes_an_h264_copy_with_every_frame_and_the_boxes_drawn(clips, tmp_path):
    target = tmp_path / "faces.mp4"
    summary = json_lines(clips / "two.mp4", "--every", "3", "--annotate", target)[-1]
    assert summary["annotated"] == str(target)
    with av.open(str(target)) as container:
        assert container.streams.video[0].codec_context.name == "h264"
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    assert len(frames) == FRAMES
    assert frames[0].shape == (SIZE[1], SIZE[0], 3)
    yellow = (frames[7][..., 0] > 200) & (frames[7][..., 1] > 170) & (frames[7][..., 2] < 80)
    assert yellow.sum() > 200  # boxes and captions held on frames that were not sampled


def test_a_folder_mixing_photos_and_videos_gives_rows_for_both(clips, tmp_path):
    folder = tmp_path / "mixed"
    folder.mkdir()
    Image.fromarray(skimage_data.astronaut()).save(folder / "astronaut.png")
    (folder / "coffee.mp4").write_bytes((clips / "coffee.mp4").read_bytes())
    records = json_lines(folder)
    photo = [r for r in records if r["video"].endswith("astronaut.png")]
    assert photo[0]["type"] == "face" and photo[0]["frame"] == 0 and photo[0]["label"] == "happy"
    assert photo[0]["score"] > 0.6 and set(photo[0]["landmarks"]) >= {"right_eye", "left_eye"}
    summaries = [r for r in records if r["type"] == "summary"]
    assert {Path(s["video"]).name for s in summaries} == {"astronaut.png", "coffee.mp4"}


def test_annotate_dir_takes_photos_as_png_and_videos_as_mp4(clips, tmp_path):
    Image.fromarray(skimage_data.astronaut()).save(tmp_path / "astronaut.png")
    out = tmp_path / "annotated"
    predict(
        tmp_path / "astronaut.png", clips / "two.mp4", "--every", "5", "--annotate", out, "--json"
    )
    assert sorted(p.name for p in out.iterdir()) == ["astronaut.png", "two.mp4"]
    with av.open(str(out / "two.mp4")) as container:
        assert sum(1 for _ in container.decode(video=0)) == FRAMES
    refused = predict(
        tmp_path / "astronaut.png", clips / "two.mp4", "--annotate", tmp_path / "x.mp4", code=3
    )
    assert "a video path takes one video as input" in one_error(refused)
    refused = predict(clips / "two.mp4", "--annotate", tmp_path / "x.mkv", code=3)
    assert "name it x.mp4" in one_error(refused)


def test_two_videos_of_one_name_get_two_annotated_copies(clips, tmp_path):
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "two.mp4").write_bytes((clips / "two.mp4").read_bytes())
    out = tmp_path / "annotated"
    predict(
        tmp_path / "a" / "two.mp4", tmp_path / "b" / "two.mp4", "--every", "10", "--annotate", out
    )
    assert sorted(p.name for p in out.iterdir()) == ["two-2.mp4", "two.mp4"]


def test_every_frame_comes_out_in_order_and_bad_sampling_is_refused(clips):
    from fertool.bundled import load_face_model
    from fertool.errors import BadInputError
    from fertool.video import VideoConfig, frame_results

    model = load_face_model(MODEL)
    results = list(frame_results(clips / "two.mp4", model, model.classes, VideoConfig(every=3)))
    assert [r.index for r in results] == list(range(FRAMES))
    assert [r.index for r in results if r.sampled] == list(range(0, FRAMES, 3))
    for bad in ({"fps": 0}, {"every": 0}, {"every": 2, "fps": 5.0}):
        with pytest.raises(BadInputError):
            VideoConfig(**bad)


def test_no_detect_classifies_each_whole_frame_as_one_track(clips):
    faces = faces_of(json_lines(clips / "two.mp4", "--no-detect", "--every", "4"))
    assert [r["frame"] for r in faces] == [0, 4, 8, 12, 16]
    assert {r["track"] for r in faces} == {1} and faces[0]["box"] == [40, 0, 240, 240]


def test_timeline_refuses_rows_it_cannot_read_in_one_line(tmp_path):
    for name, text in [
        ("photo.csv", "path,x,y,w,h,label\na.png,1,2,3,4,happy\n"),
        ("empty.jsonl", ""),
    ]:
        (tmp_path / name).write_text(text)
        result = runner.invoke(
            app, ["timeline", str(tmp_path / name), "-o", str(tmp_path / "t.png")]
        )
        assert result.exit_code == 3 and "Traceback" not in result.output
        assert str(tmp_path / name) in one_error(result)
    assert not (tmp_path / "t.png").exists()


def test_a_video_without_faces_gives_empty_frames_and_a_clear_count(clips):
    records = json_lines(clips / "coffee.mp4")
    assert [r["type"] for r in records] == ["no_face"] * 6 + ["summary"]
    assert records[-1]["faces"] == 0 and records[-1]["frames_without_face"] == 6
    line = predict(clips / "coffee.mp4").stdout.splitlines()[-1]
    assert "0 face(s) in 6 sampled frame(s)" in line and "6 frame(s) without a face" in line


# ---------------------------------------------------------------- bad input


def one_error(result) -> str:
    errors = [line for line in (result.stderr or result.output).splitlines() if line.strip()]
    assert "Traceback" not in result.output
    return "\n".join(errors)


@pytest.fixture(scope="module")
def noisy_mkv(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """The two faces with mild noise: every frame carries data, so damage falls mid-stream."""
    noise = np.random.default_rng(0).integers(-12, 12, (FRAMES, SIZE[1], SIZE[0], 3))
    frames = [
        np.clip(frame_with_faces(i) + noise[i], 0, 255).astype(np.uint8) for i in range(FRAMES)
    ]
    return write_video(tmp_path_factory.mktemp("noisy") / "whole.mkv", frames).read_bytes()


@pytest.mark.parametrize("where", [0.3, 0.7])
def test_a_video_damaged_half_way_keeps_its_rows_and_says_where_it_broke(
    noisy_mkv, tmp_path, where
):
    # 4 KiB of zeros: FFmpeg either reports the damage (InvalidDataError: "breaks after frame")
    # or loses the stream and ends early without a word (the duration check: "frames stop at").
    data = bytearray(noisy_mkv)
    at = int(len(data) * where)
    data[at : at + 4096] = bytes(4096)
    damaged = tmp_path / "damaged.mkv"
    damaged.write_bytes(bytes(data))
    result = predict(damaged, "--json", code=3)
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert 0 < len(faces_of(records)) < 2 * FRAMES
    assert records[-1]["type"] == "summary"
    assert "breaks after frame" in records[-1]["error"] or "frames stop at" in records[-1]["error"]
    assert str(damaged) in one_error(result)


def test_a_video_cut_short_keeps_its_rows_and_says_where_it_stops(noisy_mkv, tmp_path):
    data = noisy_mkv
    cut = tmp_path / "cut.mkv"
    cut.write_bytes(data[: len(data) * 6 // 10])
    result = predict(cut, "--json", code=3)
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert 0 < len(faces_of(records)) < 2 * FRAMES
    assert records[-1]["type"] == "summary" and "cut short" in records[-1]["error"]
    assert f"{cut}: the frames stop at" in one_error(result)


def test_unreadable_videos_are_one_line_each(clips, tmp_path):
    truncated = tmp_path / "truncated.mp4"  # MP4 keeps its index at the end: nothing to read
    truncated.write_bytes((clips / "two.mp4").read_bytes()[:3000])
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    audio = tmp_path / "audio.mp4"
    with av.open(str(audio), "w") as container:
        stream = container.add_stream("aac", rate=8000)
        sound = av.AudioFrame.from_ndarray(
            np.zeros((1, 1024), np.float32), format="fltp", layout="mono"
        )
        sound.sample_rate = 8000
        for packet in [*stream.encode(sound), *stream.encode()]:
            container.mux(packet)
    unknown = tmp_path / "unknown.mkv"  # Matroska naming a codec FFmpeg does not know
    unknown.write_bytes(
        (clips / "two.mkv").read_bytes().replace(b"V_MPEG4/ISO/AVC", b"V_QQQQQ/QQQ/QQQ")
    )
    result = predict(truncated, empty, audio, unknown, code=3)
    text = one_error(result)
    assert f"skipped {truncated}: cannot read video" in text
    assert f"skipped {empty}: cannot read video" in text
    assert f"skipped {audio}: no video stream" in text
    assert f"skipped {unknown}: this FFmpeg has no decoder" in text
    assert "4 input(s) could not be read" in text


def test_a_clip_without_frames_is_one_line(tmp_path):
    clip = tmp_path / "none.mkv"
    with av.open(str(clip), "w") as container:
        stream = container.add_stream("libx264", rate=RATE)
        stream.width, stream.height, stream.pix_fmt = SIZE[0], SIZE[1], "yuv420p"
        container.start_encoding()  # a header, then no frame
    result = predict(clip, code=3)
    assert f"skipped {clip}: the file ends before its first frame" in one_error(result)


def test_a_range_without_frames_is_an_empty_result(clips):
    records = json_lines(clips / "two.mp4", "--start", "5")
    assert [r["type"] for r in records] == ["summary"]
    assert records[0]["frames_sampled"] == 0 and records[0]["frames_decoded"] == FRAMES


def test_a_missing_camera_is_refused_in_one_line():
    if Path("/dev/video0").exists():
        pytest.skip("this machine has a camera")
    result = predict("-", code=3)
    assert "camera 0: no camera here" in one_error(result)


def test_every_and_fps_together_are_refused(clips):
    result = predict(clips / "two.mp4", "--every", "2", "--fps", "3", code=3)
    assert "--every and --fps" in one_error(result)


# ---------------------------------------------------------------- tracker and smoother


def test_the_tracker_keeps_ids_through_a_crossing_and_a_missed_frame():
    from fertool.tracks import IouTracker

    tracker = IouTracker(max_missed=2)
    assert tracker.update([(0, 0, 50, 50), (100, 0, 50, 50)]) == [1, 2]
    assert tracker.update([(110, 2, 50, 50), (8, 1, 50, 50)]) == [2, 1]
    assert tracker.update([(12, 2, 50, 50)]) == [1]  # 2 missed once
    assert tracker.update([(16, 2, 50, 50), (118, 3, 50, 50)]) == [1, 2]
    for _ in range(3):
        tracker.update([])
    assert tracker.update([(16, 2, 50, 50)]) == [3]  # retired after 2 missed frames


def test_the_smoother_is_an_exponential_average_in_seconds():
    from fertool.tracks import ExpressionSmoother

    smoother = ExpressionSmoother(seconds=1.0)
    assert smoother.update(1, 0.0, np.array([1.0, 0.0])) == pytest.approx([1, 0])
    keep = np.exp(-0.5)
    assert smoother.update(1, 0.5, np.array([0.0, 1.0])) == pytest.approx([keep, 1 - keep])
    assert smoother.update(1, 10.0, np.array([0.0, 1.0])) == pytest.approx([0, 1])  # a new start


def test_an_onnx_export_reads_a_video_with_its_own_views(clips, tmp_path):
    """`--tta auto` on video is the fewest views a model can run: one for torch, the views an
    export carries in its graph (no other can run); the rows are the torch model's."""
    pytest.importorskip("onnxruntime", reason="the onnx extra runs exports")
    from fertool.export import export_onnx

    flip = tmp_path / "flip.onnx"
    export_onnx(MODEL, flip, tta="flip")
    torch_rows = faces_of(json_lines(clips / "two.mp4", "--every", "5", "--tta", "flip"))
    result = runner.invoke(
        app, ["predict", str(flip), str(clips / "two.mp4"), "--every", "5", "--json"]
    )
    assert result.exit_code == 0, result.output
    onnx_rows = faces_of([json.loads(line) for line in result.stdout.splitlines()])
    assert len(onnx_rows) == 8  # frames 0, 5, 10, 15; two faces each
    assert [(r["frame"], r["track"], r["label"]) for r in onnx_rows] == [
        (r["frame"], r["track"], r["label"]) for r in torch_rows
    ]
    for ours, theirs in zip(onnx_rows, torch_rows):
        for name, p in ours["probabilities"].items():
            assert abs(p - theirs["probabilities"][name]) < 1e-4
