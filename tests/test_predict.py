"""fertool predict on real photos: scikit-image's bundled astronaut (one smiling face), coffee and
cat.

The model is the FER2013 DeXpression branch kept in results/fer2013 (51 % validation accuracy).
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from fertool.cli import app
from fertool.data import CLASSES

skimage_data = pytest.importorskip(
    "skimage.data", reason="scikit-image (the dev extra) bundles the test photos"
)

MODEL = Path(__file__).resolve().parents[1] / "results" / "fer2013" / "branch1.safetensors"
# Where her face is in the 512 x 512 photo, by eye and by YuNet (forehead to chin: taller than
# wide; the Haar cascade, --detector haar, boxes the square (177, 67, 93, 93)).
ASTRONAUT_FACE = (178, 63, 90, 113)
runner = CliRunner()


def predict(*args: object, code: int = 0) -> object:
    result = runner.invoke(app, ["predict", str(MODEL), *map(str, args)])
    assert result.exit_code == code, result.output + (result.stderr or "")
    return result


def predict_json(*args: object, code: int = 0) -> dict:
    return json.loads(predict(*args, "--json", code=code).stdout)


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("photos")
    Image.fromarray(skimage_data.astronaut()).save(folder / "astronaut.png")
    Image.fromarray(skimage_data.coffee()).save(folder / "coffee.jpg", quality=90)
    Image.fromarray(skimage_data.chelsea()).save(folder / "chelsea.png")
    return folder


@pytest.fixture(scope="module")
def found(photos: Path) -> dict:
    """predict --json on the three photos, shared by the tests that only read it."""
    return predict_json(photos / "astronaut.png", photos / "coffee.jpg", photos / "chelsea.png")


def near(box: list[int], expected: tuple[int, ...], tolerance: float) -> bool:
    return all(abs(a - b) <= tolerance for a, b in zip(box, expected))


def test_the_smiling_astronaut_is_one_happy_face_and_the_others_have_none(found):
    assert [r["path"].rsplit("/", 1)[-1] for r in found["results"]] == [
        "astronaut.png",
        "coffee.jpg",
        "chelsea.png",
    ]
    astronaut, coffee, cat = found["results"]
    assert len(astronaut["faces"]) == 1
    face = astronaut["faces"][0]
    assert face["label"] == "happy"
    assert list(face["probabilities"]) == list(CLASSES)
    assert sum(face["probabilities"].values()) == pytest.approx(1.0, abs=1e-9)
    assert max(face["probabilities"], key=face["probabilities"].get) == "happy"
    assert face["probabilities"]["happy"] > 0.5
    assert near(face["box"], ASTRONAUT_FACE, tolerance=8)
    assert astronaut["size"] == [512, 512]
    assert coffee["faces"] == [] and cat["faces"] == []
    assert coffee["size"] == [600, 400]
    assert found["skipped"] == [] and found["model"] == str(MODEL)


def test_csv_has_one_row_per_face_with_the_json_numbers(photos, found):
    result = predict(
        photos / "astronaut.png", photos / "coffee.jpg", photos / "chelsea.png", "--csv"
    )
    rows = list(csv.reader(io.StringIO(result.stdout)))
    assert rows[0] == ["path", "x", "y", "w", "h", "label", *CLASSES]
    assert len(rows) == 2  # the header and the astronaut's face; the coffee and the cat add no row
    face = found["results"][0]["faces"][0]
    path, *box, label = rows[1][:6]
    assert (
        path.endswith("astronaut.png")
        and [int(v) for v in box] == face["box"]
        and label == face["label"]
    )
    probabilities = [float(v) for v in rows[1][6:]]
    assert probabilities == pytest.approx([face["probabilities"][c] for c in CLASSES], abs=1e-6)
    assert sum(probabilities) == pytest.approx(1.0, abs=1e-5)


def test_table_names_each_photo_and_the_faces_found(photos, monkeypatch):
    monkeypatch.chdir(photos)  # short names, as a user in the photos' folder types them
    result = predict("astronaut.png", "coffee.jpg")
    text = result.stdout
    assert "astronaut.png" in text and "coffee.jpg" in text
    assert "happy" in text and "no face" in text
    assert "1 face in 2 photos, 1 without a face" in text


def test_piped_table_keeps_a_long_path_on_one_line(photos, tmp_path):
    """Output that is not a terminal gets the table's natural width: a folded path breaks grep."""
    deep = tmp_path / ("a-rather-long-folder-name-" * 4) / "holiday-photos-2026"
    deep.mkdir(parents=True)
    photo = deep / "the-astronaut-smiling-at-the-camera.png"
    photo.write_bytes((photos / "astronaut.png").read_bytes())
    assert len(str(photo)) > 80
    lines = predict(photo).stdout.splitlines()
    row = [line for line in lines if str(photo) in line]
    assert len(row) == 1 and "happy" in row[0], lines


def test_a_48x48_face_crop_is_classified_whole_like_the_face_in_the_photo(photos, tmp_path):
    # Without alignment, predict's crop is the box grown by the margin, its centred square.
    face = predict_json(photos / "astronaut.png", "--no-align")["results"][0]["faces"][0]
    x, y, w, h = face["box"]
    dx, dy = round(w * 0.2), round(h * 0.2)  # the margin predict adds around a face it finds
    side = min(w + 2 * dx, h + 2 * dy)
    left, top = x - dx + (w + 2 * dx - side) // 2, y - dy + (h + 2 * dy - side) // 2
    gray = Image.fromarray(skimage_data.astronaut()).convert("L")
    gray = gray.crop((left, top, left + side, top + side))
    gray.resize((48, 48), Image.Resampling.LANCZOS).save(tmp_path / "crop.png")
    crop = predict_json(tmp_path / "crop.png")["results"][0]
    assert len(crop["faces"]) == 1 and crop["faces"][0]["box"] == [0, 0, 48, 48]
    assert crop["faces"][0]["probabilities"] == pytest.approx(face["probabilities"], abs=1e-5)


def test_no_detect_classifies_the_centred_square_of_any_image(photos):
    results = predict_json(photos / "astronaut.png", photos / "coffee.jpg", "--no-detect")[
        "results"
    ]
    assert [r["faces"][0]["box"] for r in results] == [[0, 0, 512, 512], [100, 0, 400, 400]]
    for result in results:
        assert len(result["faces"]) == 1
        assert sum(result["faces"][0]["probabilities"].values()) == pytest.approx(1.0, abs=1e-9)


def test_folders_are_searched_recursively_and_globs_expanded(photos, tmp_path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "a" / ".cache").mkdir()
    Image.open(photos / "astronaut.png").save(tmp_path / "a" / "b" / "deep.png")
    Image.open(photos / "coffee.jpg").save(tmp_path / "a" / "top.jpg")
    Image.open(photos / "coffee.jpg").save(tmp_path / "a" / ".cache" / "hidden.jpg")
    (tmp_path / "a" / "notes.txt").write_text("not an image")
    listed = predict_json(tmp_path / "a")["results"]
    assert sorted(Path(r["path"]).name for r in listed) == ["deep.png", "top.jpg"]
    assert [len(r["faces"]) for r in sorted(listed, key=lambda r: r["path"])] == [1, 0]
    # A quoted glob is expanded by predict itself; a file reached twice is read once.
    globbed = predict_json(f"{tmp_path}/a/**/*.png", tmp_path / "a" / "b" / "deep.png")["results"]
    assert [Path(r["path"]).name for r in globbed] == ["deep.png"]


def test_an_unreadable_file_is_named_and_skipped_and_the_rest_still_processed(photos, tmp_path):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0 this is not a JPEG")
    missing = tmp_path / "missing.png"
    result = predict(broken, photos / "astronaut.png", missing, "--json", code=3)
    summary = json.loads(result.stdout)
    assert [Path(r["path"]).name for r in summary["results"]] == ["astronaut.png"]
    assert summary["results"][0]["faces"][0]["label"] == "happy"
    assert len(summary["skipped"]) == 2
    lines = [line for line in result.stderr.splitlines() if line.startswith("skipped")]
    assert len(lines) == 2
    assert any(str(broken) in line for line in lines) and any(
        str(missing) in line for line in lines
    )
    assert "Traceback" not in result.output + result.stderr


def test_annotate_writes_decodable_pngs_of_the_photos_sizes_without_name_clashes(photos, tmp_path):
    other = tmp_path / "other"
    other.mkdir()
    Image.open(photos / "coffee.jpg").save(other / "astronaut.jpg")  # same stem as the astronaut
    out = tmp_path / "annotated"
    summary = predict_json(
        photos / "astronaut.png", photos / "coffee.jpg", other / "astronaut.jpg", "--annotate", out
    )
    assert sorted(p.name for p in out.iterdir()) == [
        "astronaut-2.png",
        "astronaut.png",
        "coffee.png",
    ]
    assert summary["annotated"] == [
        str(out / n) for n in ("astronaut.png", "coffee.png", "astronaut-2.png")
    ]
    for written, source in zip(summary["annotated"], summary["results"]):
        with Image.open(written) as image:
            assert image.format == "PNG"
            assert list(image.size) == source["size"]
            pixels = np.asarray(image.convert("RGB")).astype(int)
        original = np.asarray(Image.open(source["path"]).convert("RGB")).astype(int)
        changed = np.abs(pixels - original).sum(axis=2) > 60
        if source["faces"]:
            x, y, w, h = source["faces"][0]["box"]
            assert changed[y + h // 2, x] and changed[y + h - 1, x + w // 2], (
                "no box drawn round the face"
            )
            assert not changed[y + h // 2, x + w // 2], "the face itself was painted over"
        else:
            assert not changed.any(), "a photo without faces got marks"


def test_many_photos_batched_give_the_same_probabilities_as_one_by_one(photos, tmp_path):
    bigger = (
        tmp_path / "bigger.jpg"
    )  # 3x, decoded at a reduced size: the box comes back in its pixels
    Image.open(photos / "astronaut.png").resize((1536, 1536), Image.Resampling.LANCZOS).save(
        bigger, quality=95
    )
    turned = tmp_path / "turned.jpg"  # stored on its side; EXIF tells viewers to turn it upright
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.open(photos / "astronaut.png").transpose(Image.Transpose.ROTATE_90).save(
        turned, exif=exif, quality=95
    )
    paths = [photos / "astronaut.png", bigger, turned, photos / "coffee.jpg"]
    together = predict_json(*paths, "--batch-size", "2")["results"]
    alone = [predict_json(p)["results"][0] for p in paths]
    assert [len(r["faces"]) for r in together] == [1, 1, 1, 0]
    for batched, single in zip(together, alone):
        assert [f["box"] for f in batched["faces"]] == [f["box"] for f in single["faces"]]
        for a, b in zip(batched["faces"], single["faces"]):
            assert a["probabilities"] == pytest.approx(b["probabilities"], abs=1e-5)
    assert near(together[1]["faces"][0]["box"], tuple(3 * v for v in ASTRONAUT_FACE), tolerance=24)
    assert together[2]["size"] == [512, 512]
    assert near(together[2]["faces"][0]["box"], ASTRONAUT_FACE, tolerance=8)
    assert all(f["label"] == "happy" for r in together for f in r["faces"])


def test_mistakes_end_in_one_line(photos, tmp_path):
    both = runner.invoke(
        app, ["predict", str(MODEL), str(photos / "astronaut.png"), "--json", "--csv"]
    )
    assert both.exit_code == 3 and "--json and --csv" in both.stderr
    nothing = runner.invoke(app, ["predict", str(MODEL)])
    assert nothing.exit_code == 3 and "no photos" in nothing.stderr
    views = runner.invoke(
        app, ["predict", str(MODEL), str(photos / "astronaut.png"), "--tta", "tencrop"]
    )
    # A value outside the Enum: Click's refusal, exit 2 (usage), naming the values there are.
    assert (
        views.exit_code == 2
        and "'tencrop' is not one of 'auto', 'none', 'flip', 'crops'" in views.stderr
    )
    (tmp_path / "file").write_text("")
    annotate_file = runner.invoke(
        app,
        ["predict", str(MODEL), str(photos / "coffee.jpg"), "--annotate", str(tmp_path / "file")],
    )
    assert annotate_file.exit_code == 3 and "is a file" in annotate_file.stderr
    for result in (both, nothing, views, annotate_file):
        assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr


def test_without_a_model_the_bundled_one_finds_the_happy_astronaut(photos):
    result = runner.invoke(
        app, ["predict", str(photos / "astronaut.png"), str(photos / "coffee.jpg"), "--json"]
    )
    assert result.exit_code == 0, result.stderr
    payload = json.loads(result.stdout)
    assert payload["model"].endswith("default.safetensors")
    astronaut, coffee = payload["results"]
    assert [face["label"] for face in astronaut["faces"]] == ["happy"] and coffee["faces"] == []
    assert astronaut["faces"][0]["probabilities"]["happy"] > 0.5


def test_without_a_model_or_a_bundled_one_the_error_says_to_pass_one(photos, monkeypatch, tmp_path):
    import fertool.bundled

    monkeypatch.setattr(fertool.bundled, "DEFAULT_MODEL", tmp_path / "absent.safetensors")
    result = runner.invoke(app, ["predict", str(photos / "coffee.jpg")])
    assert result.exit_code == 3 and "no MODEL given" in result.stderr


def test_saliency_detect_explains_the_faces_predict_finds(photos, tmp_path):
    # The bundled model asks for the same views in both commands, so they agree to the digit.
    from clitools import assert_real_png, one_line_error

    pair = tmp_path / "pair.png"  # two astronauts side by side: two faces, left to right
    Image.fromarray(np.concatenate([skimage_data.astronaut()] * 2, axis=1)).save(pair)
    predicted = json.loads(
        runner.invoke(app, ["predict", str(photos / "astronaut.png"), str(pair), "--json"]).stdout
    )
    out = tmp_path / "s.png"
    result = runner.invoke(
        app,
        [
            "saliency",
            str(photos / "astronaut.png"),
            str(pair),
            "--detect",
            "-o",
            str(out),
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output + (result.stderr or "")
    rows = json.loads(result.stdout)["images"]
    faces = [face for photo in predicted["results"] for face in photo["faces"]]
    assert [row["image"] for row in rows] == ["astronaut.png"] + [
        f"pair.png face {i} ({','.join(map(str, face['box']))})"
        for i, face in enumerate(faces[1:], 1)
    ]
    assert (
        len(rows) == 3
        and [row["predicted"] for row in rows] == [face["label"] for face in faces] == ["happy"] * 3
    )
    for row, face in zip(rows, faces):
        assert row["probability"] == pytest.approx(face["probabilities"]["happy"], abs=1e-5)
    assert_real_png(out)
    # Without --detect the whole photo is squeezed to 48 x 48: not what predict classified.
    whole = runner.invoke(
        app, ["saliency", str(photos / "astronaut.png"), "-o", str(tmp_path / "w.png"), "--json"]
    )
    assert json.loads(whole.stdout)["images"][0]["probability"] != pytest.approx(
        rows[0]["probability"], abs=1e-3
    )
    # A branch whose file names no test-time views: --tta auto is the face alone in predict as
    # in saliency (one meaning of auto), and any --tta given makes the two agree too.
    auto = predict_json(photos / "astronaut.png")["results"][0]["faces"][0]["probabilities"]
    for tta, same in (("none", True), ("flip", False)):
        chosen = predict_json(photos / "astronaut.png", "--tta", tta)["results"][0]["faces"][0]
        assert (chosen["probabilities"] == pytest.approx(auto, abs=1e-6)) is same, tta
    for tta in ("auto", "none", "flip"):
        alone = predict_json(photos / "astronaut.png", "--tta", tta)["results"][0]["faces"][0][
            "probabilities"
        ]
        explained = runner.invoke(
            app,
            [
                "saliency",
                str(MODEL),
                str(photos / "astronaut.png"),
                "--detect",
                "--tta",
                tta,
                "-o",
                str(tmp_path / "b.png"),
                "--json",
            ],
        )
        row = json.loads(explained.stdout)["images"][0]
        assert row["probability"] == pytest.approx(alone[row["predicted"]], abs=1e-5), tta
    # A photo without a face says how to explain it anyway, and nothing is written.
    none = runner.invoke(
        app, ["saliency", str(photos / "coffee.jpg"), "--detect", "-o", str(tmp_path / "c.png")]
    )
    one_line_error(none, "coffee.jpg: no face found", "drop --detect", code=3)
    assert not (tmp_path / "c.png").exists()


def test_filters_detect_draws_the_outputs_for_the_face_chosen(photos, tmp_path, monkeypatch):
    from clitools import assert_real_png, one_line_error

    import fertool.plots
    from fertool.detect import photo_faces, read_photo

    # Two astronauts side by side, the right one darker: the faces differ in their pixels, so
    # the figure shows which one was drawn.
    astronaut = skimage_data.astronaut()
    pair = tmp_path / "pair.png"
    Image.fromarray(np.concatenate([astronaut, astronaut // 2], axis=1)).save(pair)
    boxes = [f["box"] for f in predict_json(pair)["results"][0]["faces"]]
    assert len(boxes) == 2 and boxes[0][0] < boxes[1][0]
    _, crops = photo_faces(read_photo(pair))
    drawn = []
    real_figure = fertool.plots.activations_figure

    def keep(image01, maps, layer):
        drawn.append(image01)
        return real_figure(image01, maps, layer)

    monkeypatch.setattr(fertool.plots, "activations_figure", keep)
    for face, out in ((None, tmp_path / "a.png"), ("2", tmp_path / "b.png")):
        result = runner.invoke(
            app,
            [
                "filters",
                str(MODEL),
                "--image",
                str(pair),
                "--detect",
                "--layer",
                "featex1",
                *(["--face", face] if face else []),
                "-o",
                str(out),
                "--json",
            ],
        )
        assert result.exit_code == 0, result.output + (result.stderr or "")
        summary = json.loads(result.stdout)
        number = int(face or 1)
        assert summary["faces_found"] == 2
        assert (
            summary["face"] == f"pair.png face {number} ({','.join(map(str, boxes[number - 1]))})"
        )
        # The input panel is the crop `predict` classifies, pixel for pixel: leftmost by default.
        np.testing.assert_array_equal(drawn[-1], crops[number - 1] / 255.0)
        assert_real_png(out)
    one_line_error(
        runner.invoke(
            app,
            [
                "filters",
                str(MODEL),
                "--image",
                str(pair),
                "--detect",
                "--face",
                "3",
                "-o",
                str(tmp_path / "e.png"),
            ],
        ),
        "--face 3, but 2 face(s) found",
        code=3,
    )
    one_line_error(
        runner.invoke(
            app,
            [
                "filters",
                str(MODEL),
                "--image",
                str(pair),
                "--face",
                "2",
                "-o",
                str(tmp_path / "e.png"),
            ],
        ),
        "add --detect",
        code=3,
    )
    one_line_error(
        runner.invoke(
            app,
            [
                "filters",
                str(MODEL),
                "--image",
                str(photos / "coffee.jpg"),
                "--detect",
                "-o",
                str(tmp_path / "c.png"),
            ],
        ),
        "coffee.jpg: no face found",
        code=3,
    )
    one_line_error(
        runner.invoke(app, ["filters", str(MODEL), "--detect", "-o", str(tmp_path / "d.png")]),
        "--detect finds the face in --image PHOTO",
        code=3,
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png", "b.png", "pair.png"]


def test_a_photo_from_pixels_finds_the_faces_its_file_does(photos, tmp_path):
    from fertool.detect import photo_faces, photo_from_pixels, read_photo

    astronaut = skimage_data.astronaut()
    from_file = photo_faces(read_photo(photos / "astronaut.png"))
    from_pixels = photo_faces(photo_from_pixels(astronaut, "astronaut"))
    assert [f.box for f in from_file[0]] == [f.box for f in from_pixels[0]]
    assert len(from_pixels[0]) == 1 and from_pixels[1].shape == (1, 48, 48)
    assert np.abs(from_file[1].astype(int) - from_pixels[1]).max() <= 1


def test_pixels_of_the_wrong_shape_are_refused_in_one_line():
    from fertool.detect import photo_from_pixels
    from fertool.errors import BadInputError

    with pytest.raises(BadInputError, match="frame 3: expected uint8 pixels.*got float32 4 x 4"):
        photo_from_pixels(np.zeros((4, 4), np.float32), "frame 3")
