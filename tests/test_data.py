"""fertool.data: image conversion, the FER2013 CSV, image folders, synthetic faces."""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fertool import data
from fertool.data import CLASSES, load_csv, load_folders, read_image, synthetic_faces, to_gray48
from fertool.errors import BadInputError

# --- to_gray48 / read_image -------------------------------------------------------------------


def gradient(width: int = 48, height: int = 48) -> np.ndarray:
    """uint8 image: 0 on the left rising to 255 on the right."""
    return np.tile(np.linspace(0, 255, width), (height, 1)).round().astype(np.uint8)


def test_gray48_keeps_fer_images_exact() -> None:
    pixels = np.random.default_rng(0).integers(0, 256, (48, 48), dtype=np.uint8)
    out = to_gray48(Image.fromarray(pixels))
    assert out.dtype == np.uint8 and out.shape == (48, 48)
    np.testing.assert_array_equal(out, pixels)


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "LA", "P", "CMYK", "YCbCr", "I", "F", "1"])
def test_gray48_modes_give_the_same_picture(mode: str) -> None:
    """A gradient converted to each mode comes back as (nearly) the same gradient."""
    reference = gradient()
    image = Image.fromarray(reference).convert(mode)
    out = to_gray48(image)
    assert out.dtype == np.uint8 and out.shape == (48, 48)
    tolerance = 130 if mode == "1" else 6  # bilevel dithers; P quantises a little
    assert np.abs(out.astype(int) - reference).mean() < tolerance
    assert out[:, :4].mean() < out[:, -4:].mean()  # still dark on the left, bright on the right


def test_gray48_rgb_uses_luma() -> None:
    out = to_gray48(Image.new("RGB", (48, 48), (200, 100, 50)))
    assert abs(int(out.mean()) - round(0.299 * 200 + 0.587 * 100 + 0.114 * 50)) <= 1


@pytest.mark.parametrize("mode", ["RGBA", "LA", "PA", "La", "RGBa"])
def test_gray48_composites_alpha_on_white(mode: str) -> None:
    rgba = np.zeros((48, 48, 4), np.uint8)  # black everywhere
    rgba[:, 16:32, 3] = 255  # opaque in the middle third, transparent elsewhere
    rgba[:, 32:, 3] = 128  # half transparent on the right
    image = Image.fromarray(rgba, "RGBA")
    image = (
        image.convert("LA").convert("La") if mode == "La" else image.convert(mode)
    )  # PIL: RGBA -> La drops alpha
    out = to_gray48(image)
    assert out[:, :16].min() >= 250  # transparent -> white
    assert out[:, 18:30].max() <= 5  # opaque black stays black
    assert 110 <= out[:, 34:].mean() <= 145  # half: grey


def test_gray48_palette_with_transparency() -> None:
    image = Image.new("P", (48, 48), 0)
    image.putpalette([0, 0, 0, 255, 255, 255] + [0] * 762)
    image.info["transparency"] = 0
    assert to_gray48(image).min() >= 250


@pytest.mark.parametrize("mode", ["I;16B", "I;16L"])
def test_gray48_16_bit_byte_orders(mode: str) -> None:
    values = np.tile(np.linspace(0, 65535, 48), (48, 1)).astype(np.uint16)
    image = Image.frombytes(
        mode, (48, 48), values.astype(">u2" if mode.endswith("B") else "<u2").tobytes()
    )
    np.testing.assert_allclose(to_gray48(image), values / 257, atol=1)


def test_gray48_scales_16_bit() -> None:
    values = np.tile(np.linspace(0, 65535, 48), (48, 1)).astype(np.uint16)
    image = Image.fromarray(values)
    assert image.mode == "I;16"
    out = to_gray48(image)
    np.testing.assert_allclose(out, values / 257, atol=1)
    assert out.max() == 255 and out.min() == 0


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        (np.linspace(0, 1, 48), np.linspace(0, 255, 48)),  # floats 0..1
        (np.linspace(0, 255, 48), np.linspace(0, 255, 48)),  # floats already 0..255
        (np.linspace(-3, 5, 48), np.linspace(0, 255, 48)),  # anything else: stretched
    ],
)
def test_gray48_scales_float(values: np.ndarray, expected: np.ndarray) -> None:
    out = to_gray48(Image.fromarray(np.tile(values, (48, 1)).astype(np.float32)))
    np.testing.assert_allclose(out[0], expected, atol=1)


def test_gray48_32_bit_int_holding_16_bit_values() -> None:
    values = np.tile(np.linspace(0, 65535, 48), (48, 1)).astype(np.int32)
    np.testing.assert_allclose(to_gray48(Image.fromarray(values)), values / 257, atol=1)


def test_gray48_centre_crops_non_square_then_resizes() -> None:
    pixels = np.zeros((200, 300), np.uint8)  # wide: black bands left and right...
    pixels[:, 50:250] = 255  # ...around a white centre square, which is all that must remain
    out = to_gray48(Image.fromarray(pixels).convert("RGB"))
    assert out.shape == (48, 48) and out.min() >= 250
    tall = to_gray48(Image.fromarray(gradient(100, 700)))  # tall: the gradient survives the resize
    np.testing.assert_allclose(tall, gradient(), atol=4)


def test_read_image_formats_and_first_frame(tmp_path: Path) -> None:
    picture = gradient()
    for suffix in (".png", ".bmp", ".tif", ".webp", ".pgm"):
        Image.fromarray(picture).save(tmp_path / f"face{suffix}", lossless=True)
        np.testing.assert_allclose(read_image(tmp_path / f"face{suffix}"), picture, atol=1)
    Image.fromarray(picture.astype(np.uint16) * 257).save(tmp_path / "deep.png")
    np.testing.assert_allclose(read_image(tmp_path / "deep.png"), picture, atol=1)
    frames = [Image.new("L", (48, 48), 0), Image.new("L", (48, 48), 255)]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:])
    assert read_image(tmp_path / "anim.gif").max() <= 5  # the first (black) frame


def test_read_image_applies_exif_rotation(tmp_path: Path) -> None:
    image = Image.fromarray(gradient())  # dark left, bright right
    exif = Image.Exif()
    exif[0x0112] = 3  # orientation: rotated 180 degrees
    image.save(tmp_path / "phone.jpg", exif=exif, quality=95)
    out = read_image(tmp_path / "phone.jpg")
    assert out[:, :8].mean() > out[:, -8:].mean() + 150  # now bright left


def jpeg_bytes() -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (48, 48), dtype=np.uint8)).save(
        buffer, "JPEG"
    )
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("empty.jpg", b""),
        ("noise.png", bytes(np.random.default_rng(2).integers(0, 256, 500, dtype=np.uint8))),
        ("truncated.jpg", jpeg_bytes()[:300]),
        ("notes.png", b"this is text, not a picture\n"),
    ],
)
def test_read_image_errors_name_the_file(tmp_path: Path, name: str, content: bytes) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(BadInputError) as err:
        read_image(path)
    message = str(err.value)
    # read_image serves saliency and filters, which have no --skip-bad: the fix is another image.
    assert str(path) in message and "pass a PNG, JPEG" in message and "--skip-bad" not in message
    assert "\n" not in message


def test_read_image_missing_file(tmp_path: Path) -> None:
    with pytest.raises(BadInputError, match="cannot read image"):
        read_image(tmp_path / "nope.png")


# --- load_csv -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def real_faces(fer2013_root: Path) -> list[tuple[np.ndarray, int, str]]:
    """35 real FER2013 faces: (pixels, label, Usage), 5 per class, from train and val."""
    faces = []
    for label, name in enumerate(CLASSES):
        train = sorted((fer2013_root / "train" / name).glob("*.jpg"))[:3]
        val = sorted((fer2013_root / "val" / name).glob("*.jpg"))[:2]
        for path, usage in zip(
            train + val, ["Training", "Training", "PrivateTest", "PublicTest", "PublicTest"]
        ):
            faces.append((np.asarray(Image.open(path)), label, usage))
    return faces


def csv_text(faces: list[tuple[np.ndarray, int, str]], header: str = "emotion,pixels,Usage") -> str:
    columns = [name.strip().lower() for name in header.split(",")]
    rows = []
    for pixels, label, usage in faces:
        values = {
            "emotion": str(label),
            "pixels": " ".join(map(str, pixels.ravel())),
            "usage": usage,
        }
        rows.append(",".join(values[column] for column in columns))
    return "\n".join([header, *rows]) + "\n"


def test_csv_round_trips_real_faces(tmp_path: Path, real_faces: list) -> None:
    path = tmp_path / "fer2013.csv"
    path.write_text(csv_text(real_faces))
    ds = load_csv(path)
    assert ds.images.dtype == np.uint8 and ds.images.shape == (35, 48, 48)
    np.testing.assert_array_equal(ds.images, np.stack([pixels for pixels, _, _ in real_faces]))
    assert ds.labels.dtype == np.int64 and ds.labels.tolist() == [
        label for _, label, _ in real_faces
    ]
    assert ds.split.dtype == np.uint8 and ds.split.tolist() == [0, 0, 2, 1, 1] * 7
    assert ds.source == f"csv:{path}" and ds.masks is None and ds.skipped == []


def test_csv_column_order_crlf_bom_and_case(tmp_path: Path, real_faces: list) -> None:
    """Spreadsheet exports: BOM, CRLF, reordered columns with spaces, odd Usage case."""
    faces = [(pixels, label, f" {usage.upper()} ") for pixels, label, usage in real_faces[:6]]
    text = csv_text(faces, header="Usage, emotion, pixels").replace("\n", "\r\n")
    path = tmp_path / "export.csv"
    path.write_bytes(b"\xef\xbb\xbf" + text.encode())
    ds = load_csv(path)
    np.testing.assert_array_equal(ds.images, np.stack([pixels for pixels, _, _ in faces]))
    assert ds.split.tolist() == [0, 0, 2, 1, 1, 0]


def test_csv_without_usage_is_all_train(tmp_path: Path, real_faces: list) -> None:
    path = tmp_path / "nousage.csv"
    path.write_text(csv_text(real_faces[:4], header="emotion,pixels"))
    ds = load_csv(path)
    assert ds.split.tolist() == [0, 0, 0, 0] and "no Usage column" in ds.source


def make_row(values: str = "", label: str = "3", usage: str = "Training") -> str:
    return f"{label},{values or ' '.join(['7'] * 2304)},{usage}"


GOOD = make_row()
CSV_ERRORS = {  # name: (file text, line number in the message or None, text in the message)
    "pixel count": (
        ["emotion,pixels,Usage", GOOD, make_row(" ".join(["1"] * 2300))],
        3,
        "expected 2304 pixel values, found 2300",
    ),
    "too many pixels": (
        ["emotion,pixels,Usage", GOOD, GOOD, make_row(" ".join(["1"] * 2305))],
        4,
        "found 2305",
    ),
    "no pixels": (["emotion,pixels,Usage", make_row(" ")], 2, "found 0"),
    "not an integer": (
        ["emotion,pixels,Usage", make_row("1 2 abc" + " 3" * 2301)],
        2,
        "pixel 3 is 'abc'",
    ),
    "float pixel": (["emotion,pixels,Usage", make_row("1.5" + " 3" * 2303)], 2, "pixel 1 is '1.5'"),
    "negative pixel": (
        ["emotion,pixels,Usage", GOOD, make_row("-1" + " 3" * 2303)],
        3,
        "pixel 1 is '-1'",
    ),
    "pixel above 255": (
        ["emotion,pixels,Usage", make_row("3 256" + " 3" * 2302)],
        2,
        "pixel 2 is 256, outside 0..255",
    ),
    "label 7": (
        ["emotion,pixels,Usage", GOOD, make_row(label="7")],
        3,
        "emotion must be an integer 0..6",
    ),
    "label text": (["emotion,pixels,Usage", make_row(label="happy")], 2, "found 'happy'"),
    "unknown usage": (
        ["emotion,pixels,Usage", GOOD, GOOD, make_row(usage="Holdout")],
        4,
        "unknown Usage 'Holdout'",
    ),
    "missing field": (
        ["emotion,pixels,Usage", GOOD, "3,1 2 3"],
        3,
        "expected 3 comma-separated fields",
    ),
    "extra field": (["emotion,pixels,Usage", GOOD + ",x"], 2, "found 4"),
    "no header": ([GOOD, GOOD], 1, "no header"),
    "wrong header": (["label,image,split", GOOD], 1, "emotion,pixels,Usage"),
    "header only": (["emotion,pixels,Usage"], None, "no data rows"),
}


@pytest.mark.parametrize("case", CSV_ERRORS, ids=list(CSV_ERRORS))
def test_csv_errors_name_file_and_line(tmp_path: Path, case: str) -> None:
    lines, line, expected = CSV_ERRORS[case]
    path = tmp_path / "bad.csv"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(BadInputError) as err:
        load_csv(path)
    message = str(err.value)
    assert message.startswith(f"{path}: ") and expected in message and "\n" not in message
    if line is not None:
        assert f": line {line}: " in message


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"", "empty file"),
        (b"  \n\n", "empty file"),
        (b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR", "line 3: binary data"),
        (
            "emotion,pixels,Usage\n3,1 2,Training\n3,\xe9t\xe9,Training\n".encode("latin-1"),
            "line 3: not UTF-8",
        ),
    ],
)
def test_csv_unreadable_files(tmp_path: Path, content: bytes, expected: str) -> None:
    path = tmp_path / "data.csv"
    path.write_bytes(content)
    with pytest.raises(BadInputError, match=expected) as err:
        load_csv(path)
    assert str(path) in str(err.value)


def test_csv_missing_file(tmp_path: Path) -> None:
    with pytest.raises(BadInputError, match="check the path"):
        load_csv(tmp_path / "missing.csv")


def test_csv_parses_fast(tmp_path: Path) -> None:
    """3000 rows (a twelfth of the real file) well under a second."""
    import time

    distinct = np.random.default_rng(0).integers(0, 256, (50, 2304))
    texts = [" ".join(map(str, row)) for row in distinct]
    path = tmp_path / "big.csv"
    path.write_text(
        "emotion,pixels,Usage\n"
        + "\n".join(f"{i % 7},{texts[i % 50]},Training" for i in range(3000))
    )
    start = time.perf_counter()
    ds = load_csv(path)
    assert time.perf_counter() - start < 2.0  # ~0.25 s on one idle core; generous for busy machines
    np.testing.assert_array_equal(ds.images.reshape(3000, -1), distinct[np.arange(3000) % 50])


# --- load_folders ---------------------------------------------------------------------------------


def put_image(path: Path, value: int) -> None:
    """A flat grey image whose value identifies it after loading."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("L", (48, 48), value).save(path)


def put_clutter(folder: Path) -> None:
    """Files every real folder collects; all must be ignored."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("README.md", ".DS_Store", "Thumbs.db", "labels.csv"):
        (folder / name).write_text("not an image")
    (folder / ".hidden.png").write_bytes(b"AppleDouble junk")
    (folder / ".cache").mkdir(exist_ok=True)
    (folder / ".cache" / "x.png").write_bytes(b"junk")


def test_folders_split_layout_synonyms_and_clutter(tmp_path: Path) -> None:
    put_image(tmp_path / "Train" / "HAPPY" / "a.png", 10)
    put_image(tmp_path / "Train" / "happy" / "nested" / "b.JPG", 20)
    put_image(tmp_path / "training" / "Anger" / "c.bmp", 30)
    put_image(tmp_path / "Validation" / "Sadness" / "d.png", 40)
    put_image(tmp_path / "valid" / "FeArFuL" / "e.gif", 50)
    put_image(tmp_path / "PrivateTest" / "Surprised" / "f.tif", 60)
    put_image(tmp_path / "test" / "Disgusted" / "g.webp", 70)
    put_image(tmp_path / "test" / "neutral" / "h.pgm", 80)
    put_clutter(tmp_path)
    put_clutter(tmp_path / "test")
    put_clutter(tmp_path / "test" / "neutral")
    ds = load_folders(tmp_path, workers=1)
    found = {
        int(round(image.mean())): (CLASSES[label], int(split))
        for image, label, split in zip(ds.images, ds.labels, ds.split)
    }
    assert found == {
        10: ("happy", 0),
        20: ("happy", 0),
        30: ("angry", 0),
        40: ("sad", 1),
        50: ("fear", 1),
        60: ("surprise", 2),
        70: ("disgust", 2),
        80: ("neutral", 2),
    }
    assert ds.source == f"folders:{tmp_path}" and ds.skipped == []


def test_folders_usage_prefix_overrides_folder(tmp_path: Path) -> None:
    put_image(tmp_path / "train" / "happy" / "PublicTest_1.png", 10)
    put_image(tmp_path / "val" / "happy" / "privatetest_2.png", 20)
    put_image(tmp_path / "test" / "happy" / "Training_3.png", 30)
    put_image(tmp_path / "test" / "happy" / "plain.png", 40)
    ds = load_folders(tmp_path)
    values = ds.images.mean(axis=(1, 2)).round().astype(int).tolist()
    assert dict(zip(values, ds.split.tolist())) == {10: 1, 20: 2, 30: 0, 40: 2}


def test_folders_class_layout_needs_split(tmp_path: Path) -> None:
    put_image(tmp_path / "happy" / "a.png", 10)
    put_image(tmp_path / "Sad" / "b.png", 20)
    ds = load_folders(tmp_path, split="test")
    assert ds.split.tolist() == [2, 2] and [CLASSES[i] for i in ds.labels] == [
        "sad",
        "happy",
    ]  # "Sad" < "happy"
    assert load_folders(tmp_path, split="Validation").split.tolist() == [1, 1]
    with pytest.raises(BadInputError, match="--split") as err:
        load_folders(tmp_path)
    assert str(tmp_path / "Sad" / "b.png") in str(err.value) and "ROOT/<split>/<class>" in str(
        err.value
    )
    with pytest.raises(BadInputError, match="unknown split 'holdout'"):
        load_folders(tmp_path, split="holdout")


def test_folders_class_layout_with_prefixes_needs_no_split(tmp_path: Path) -> None:
    put_image(tmp_path / "happy" / "Training_1.png", 10)
    put_image(tmp_path / "happy" / "PublicTest_2.png", 20)
    assert load_folders(tmp_path).split.tolist() == [1, 0]  # sorted: PublicTest_2 < Training_1


def test_folders_order_is_sorted_and_independent_of_workers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for i in range(120):
        put_image(tmp_path / "train" / CLASSES[i % 7] / f"{i:03d}.png", i)
    monkeypatch.setattr(data, "_CHUNK", 16)  # several pool tasks from a small tree
    serial, parallel = load_folders(tmp_path, workers=1), load_folders(tmp_path, workers=2)
    np.testing.assert_array_equal(serial.images, parallel.images)
    np.testing.assert_array_equal(serial.labels, parallel.labels)
    first = [int(image[0, 0]) for image in serial.images[:3]]
    assert first == [0, 7, 14]  # train/angry/000.png, 007.png, 014.png: sorted by path


@pytest.mark.parametrize("name", ["contempt", "Happy2", "misc"])
def test_folders_unknown_class_lists_accepted_names(tmp_path: Path, name: str) -> None:
    put_image(tmp_path / "train" / "happy" / "a.png", 10)
    put_image(tmp_path / "train" / name / "b.png", 20)
    with pytest.raises(BadInputError) as err:
        load_folders(tmp_path)
    message = str(err.value)
    assert f"unknown class folder '{name}'" in message and str(tmp_path / "train" / name) in message
    accepted_names = (
        "angry/anger",
        "disgust",
        "fear/fearful",
        "happy/happiness",
        "sad/sadness",
        "surprise/surprised",
    )
    for accepted in (*accepted_names, "neutral"):
        assert accepted in message


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (
            lambda root: (
                put_image(root / "train" / "happy" / "a.png", 1),
                put_image(root / "sad" / "b.png", 2),
            ),
            "not a split folder",
        ),
        (lambda root: put_image(root / "train" / "stray.png", 1), "outside a class folder"),
        (lambda root: put_image(root / "stray.png", 1), "outside a class folder"),
        (lambda root: (root / "train" / "happy").mkdir(parents=True), "no image files"),
        (lambda root: put_clutter(root / "happy"), "no image files"),
    ],
)
def test_folders_bad_layouts(tmp_path: Path, make, expected: str) -> None:
    make(tmp_path)
    with pytest.raises(BadInputError, match=expected):
        load_folders(tmp_path)


def test_folders_root_must_be_a_folder(tmp_path: Path) -> None:
    with pytest.raises(BadInputError, match="not a folder"):
        load_folders(tmp_path / "missing")
    (tmp_path / "file.csv").write_text("x")
    with pytest.raises(BadInputError, match="not a folder"):
        load_folders(tmp_path / "file.csv")


def test_folders_bad_image_and_skip_bad(tmp_path: Path) -> None:
    put_image(tmp_path / "train" / "happy" / "good.png", 10)
    bad = tmp_path / "train" / "sad" / "bad.jpg"
    bad.parent.mkdir(parents=True)
    bad.write_bytes(jpeg_bytes()[:200])
    (tmp_path / "train" / "sad" / "empty.png").write_bytes(b"")
    with pytest.raises(BadInputError) as err:
        load_folders(tmp_path)
    assert str(bad) in str(err.value) and "--skip-bad" in str(err.value)
    ds = load_folders(tmp_path, skip_bad=True)
    assert len(ds.images) == 1 and ds.labels.tolist() == [3] and int(ds.images.mean()) == 10
    assert len(ds.skipped) == 2 and ds.skipped[0].startswith(f"{bad}: ")
    assert ds.skipped[1] == f"{tmp_path / 'train' / 'sad' / 'empty.png'}: empty file"


def test_folders_all_bad_is_an_error_even_with_skip_bad(tmp_path: Path) -> None:
    (tmp_path / "happy").mkdir()
    (tmp_path / "happy" / "a.png").write_bytes(b"junk")
    with pytest.raises(BadInputError, match="none of the 1 images could be read"):
        load_folders(tmp_path, split="train", skip_bad=True)


def test_folders_real_fer2013_subset(tmp_path: Path, fer2013_root: Path) -> None:
    """A few hundred real images, copied with the release's layout: counts, labels, pixels."""
    expected = {}
    for split, per_class in (("train", 30), ("val", 12)):
        for name in CLASSES:
            for source in sorted((fer2013_root / split / name).glob("*.jpg"))[:per_class]:
                target = tmp_path / split / name / source.name
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(source, target)
                expected[source.name] = (
                    CLASSES.index(name),
                    SPLITS_OF[split],
                    np.asarray(Image.open(source)),
                )
    ds = load_folders(tmp_path, workers=2)
    assert len(ds.images) == len(expected) == 7 * 42
    assert np.bincount(ds.labels).tolist() == [42] * 7 and np.bincount(ds.split).tolist() == [
        210,
        84,
    ]
    names = sorted(
        expected,
        key=lambda name: str(
            tmp_path
            / ("train" if name.startswith("Training") else "val")
            / CLASSES[expected[name][0]]
            / name
        ),
    )
    for name, image, label, split in zip(names, ds.images, ds.labels, ds.split):
        assert (label, split) == expected[name][:2]
        np.testing.assert_array_equal(image, expected[name][2])


SPLITS_OF = {"train": 0, "val": 1}


# --- synthetic faces ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def faces() -> data.RawDataset:
    return synthetic_faces(1400, seed=0)


def test_synthetic_shapes_balance_and_splits(faces: data.RawDataset) -> None:
    assert faces.images.shape == (1400, 48, 48) and faces.images.dtype == np.uint8
    assert faces.labels.dtype == np.int64 and faces.split.dtype == np.uint8
    assert (
        faces.masks is not None
        and faces.masks.shape == (1400, 48, 48)
        and faces.masks.dtype == np.uint8
    )
    assert set(np.unique(faces.masks)) == {0, 1}
    assert np.bincount(faces.labels).tolist() == [200] * 7
    assert np.bincount(faces.split).tolist() == [980, 210, 210]
    for split in range(3):  # stratified: every split balanced too
        counts = np.bincount(faces.labels[faces.split == split], minlength=7)
        assert counts.max() - counts.min() <= 1
    assert (
        faces.labels[:14].tolist() != list(range(7)) * 2
    )  # shuffled, not cycling through the classes
    assert faces.source == "synthetic:n=1400,seed=0"
    assert faces.images.std() > 40  # backgrounds, skin and lighting vary


def test_synthetic_is_deterministic(monkeypatch: pytest.MonkeyPatch) -> None:
    first, other = synthetic_faces(300, seed=5), synthetic_faces(300, seed=6)
    monkeypatch.setattr("fertool.synthetic.os.cpu_count", lambda: 1)  # one thread: same bytes
    again = synthetic_faces(300, seed=5)
    assert (
        first.images.tobytes() == again.images.tobytes()
        and first.masks.tobytes() == again.masks.tobytes()
    )
    assert (
        first.labels.tolist() == again.labels.tolist()
        and first.split.tolist() == again.split.tolist()
    )
    assert first.images.tobytes() != other.images.tobytes()


def test_synthetic_options() -> None:
    few = synthetic_faces(10, seed=1, val_fraction=0.0, test_fraction=0.0, with_masks=False)
    assert (
        few.masks is None and few.split.tolist() == [0] * 10 and len(set(few.labels.tolist())) == 7
    )
    with pytest.raises(ValueError):
        synthetic_faces(0)
    with pytest.raises(ValueError):
        synthetic_faces(10, val_fraction=0.6, test_fraction=0.5)


def test_synthetic_masks_cover_the_features_inside_the_face(faces: data.RawDataset) -> None:
    area = faces.masks.mean(axis=(1, 2))
    assert area.min() > 0.03 and area.max() < 0.3  # eyes, brows, mouth: a tenth of the picture
    border = faces.masks.copy()
    border[:, 4:-4, 4:-4] = 0
    assert border.sum() == 0  # features never reach the edge: the face is always inside
    rows, cols = np.indices((48, 48))
    weight = faces.masks.sum((1, 2))
    centre_y = (faces.masks * rows).sum((1, 2)) / weight
    centre_x = (faces.masks * cols).sum((1, 2)) / weight
    assert (
        np.abs(centre_x - 23.5).max() < 7 and np.abs(centre_y - 23.5).max() < 8
    )  # on the (shifted) face
    upper = faces.masks[:, :24].sum((1, 2)) > 0
    lower = faces.masks[:, 28:].sum((1, 2)) > 0
    assert upper.all() and lower.all()  # eyes/brows above, mouth below, in every face


def class_signal(images: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Per pixel: variance of the class means / total variance (an F-like ratio), after per-image
    standardisation so lighting does not drown the features."""
    x = images.astype(np.float64)
    x = (x - x.mean((1, 2), keepdims=True)) / x.std((1, 2), keepdims=True)
    means = np.stack([x[labels == c].mean(0) for c in range(len(CLASSES))])
    return ((means - x.mean(0)) ** 2).mean(0) / x.var(0)


def test_synthetic_class_signal_is_in_the_features_not_the_background(
    faces: data.RawDataset,
) -> None:
    signal = class_signal(faces.images, faces.labels)
    chance = class_signal(faces.images, np.random.default_rng(0).permutation(faces.labels)).mean()
    features = faces.masks.mean(0) > 0.1  # pixels that are a feature in >10% of faces (~ a quarter)
    border = np.ones((48, 48), bool)
    border[5:-5, 5:-5] = False
    assert signal[features].mean() > 2 * chance  # features: well above chance...
    assert signal[border].mean() < 1.3 * chance  # ...background: chance level
    top = signal > np.quantile(signal, 0.95)
    assert features[top].mean() > 0.9  # the most class-dependent pixels are feature pixels
