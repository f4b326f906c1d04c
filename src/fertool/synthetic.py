"""Synthetic faces: drawn 48x48 expressions, so train -> eval -> saliency runs with no download.

    from fertool.synthetic import draw_faces
    images, labels, split, masks = draw_faces(3000, seed=0)   # or fertool.data.synthetic_faces

Each face comes from one parametric model rendered with numpy distance fields (anti-aliased, no
per-pixel loops): a shaded skin ellipse with hair and neck on a textured background, then eyes,
brows, mouth and a few wrinkles. Only those expression features depend on the class: position,
size, tilt, face shape, skin, hair, background, lighting and noise come from one distribution for
every class. An expression is an offset from neutral (EXPRESSIONS) scaled by a random intensity and
jittered, so weak expressions sit close to neutral: a small CNN reaches ~93-96 % and confuses
disgust, angry and neutral now and then, as on real data. `masks` marks the expression features.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from fertool.constants import IMAGE_SIZE as SIZE

CHUNK = 64  # faces per batch: arrays stay in cache; fixed, because the noise seeds depend on it

# Expression parameters, in face units (a face is about 29 x 36 units; 1 unit ~ 1 px at scale 1).
NEUTRAL = {
    "eye_open": 1.5,  # half-height of the eye opening
    "eye_smile": 0.0,  # lower lid pushed up: eyes bend into arcs
    "brow_inner": 0.0,  # raise of the brow's inner end (up is positive)
    "brow_outer": 0.0,
    "brow_arch": 0.5,
    "brow_squeeze": 0.0,  # brows pulled toward the nose
    "brow_lower_one": 0.0,  # one brow (the sneer side) lowered
    "mouth_width": 5.2,  # half-width
    "mouth_lift": 0.0,  # corners above the centre: smile > 0 > frown
    "mouth_open": 0.0,  # half-height of the opening
    "teeth": 0.0,
    "sneer": 0.0,  # upper lip raised on one side
    "nose_wrinkle": 0.0,
    "smile_fold": 0.0,  # nasolabial folds
    "frown_line": 0.0,  # vertical lines between the brows
}
# Offsets from NEUTRAL at full intensity; keys are fertool.data.CLASSES.
EXPRESSIONS = {
    "angry": {
        "eye_open": -0.45,
        "brow_inner": -2.1,
        "brow_outer": 0.6,
        "brow_arch": -0.5,
        "brow_squeeze": 0.8,
        "mouth_width": -1.2,
        "mouth_lift": -0.4,
        "frown_line": 0.9,
    },
    "disgust": {
        "eye_open": -0.45,
        "brow_lower_one": 1.7,
        "mouth_width": -0.6,
        "mouth_lift": -1.1,
        "mouth_open": 0.3,
        "sneer": 1.8,
        "nose_wrinkle": 1.0,
        "smile_fold": 0.8,
    },
    "fear": {
        "eye_open": 0.9,
        "brow_inner": 2.3,
        "brow_outer": 0.7,
        "brow_arch": -0.4,
        "brow_squeeze": 0.6,
        "mouth_width": 1.2,
        "mouth_lift": -0.6,
        "mouth_open": 1.6,
        "teeth": 0.8,
        "frown_line": 0.4,
    },
    "happy": {
        "eye_open": -0.4,
        "eye_smile": 0.7,
        "brow_inner": 0.2,
        "brow_outer": 0.2,
        "mouth_width": 2.0,
        "mouth_lift": 2.4,
        "mouth_open": 1.8,
        "teeth": 1.0,
        "smile_fold": 0.4,
    },
    "sad": {
        "eye_open": -0.35,
        "brow_inner": 1.8,
        "brow_outer": -0.6,
        "brow_arch": -0.8,
        "mouth_width": -0.6,
        "mouth_lift": -1.8,
    },
    "surprise": {
        "eye_open": 1.05,
        "brow_inner": 2.6,
        "brow_outer": 2.3,
        "brow_arch": 0.9,
        "mouth_width": -2.6,
        "mouth_open": 3.4,
    },
    "neutral": {},
}
JITTER = {
    "eye_open": 0.15,
    "eye_smile": 0.1,
    "brow_inner": 0.35,
    "brow_outer": 0.3,
    "brow_arch": 0.3,
    "brow_squeeze": 0.2,
    "brow_lower_one": 0.2,
    "mouth_width": 0.4,
    "mouth_lift": 0.35,
    "mouth_open": 0.25,
    "sneer": 0.25,
    "nose_wrinkle": 0.15,
    "smile_fold": 0.15,
    "frown_line": 0.15,
}
# Features only some expressions have: absent (no jitter) on the others, so e.g. a neutral face
# never shows a faint sneer.
ONLY_SOME = {
    "eye_smile",
    "brow_lower_one",
    "sneer",
    "teeth",
    "nose_wrinkle",
    "smile_fold",
    "frown_line",
}
HAPPY_OPEN_MOUTH = 0.6  # share of happy faces that smile with an open mouth (the rest closed)


def draw_faces(
    n: int,
    seed: int = 0,
    val_fraction: float = 0.15,
    test_fraction: float = 0.15,
    with_masks: bool = True,
    classes: tuple[str, ...] = tuple(EXPRESSIONS),
):
    """Render n faces -> (images uint8 n x 48 x 48, labels int64, split uint8, masks uint8 or None).

    Labels are balanced (within one) over `classes` and shuffled; splits are stratified by class.
    The same (n, seed) always gives the same bytes.
    """
    if (
        n < 1
        or not 0 <= val_fraction < 1
        or not 0 <= test_fraction < 1
        or val_fraction + test_fraction >= 1
    ):
        raise ValueError(
            f"need n >= 1 and val_fraction + test_fraction < 1, got {n}, {val_fraction}, "
            f"{test_fraction}"
        )
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.arange(n) % len(classes)).astype(np.int64)
    split = _stratified_split(labels, val_fraction, test_fraction)
    params = {**_nuisance(rng, n), **_expressions(rng, labels, classes)}
    chunks = [
        {name: value[start : start + CHUNK] for name, value in params.items()}
        for start in range(0, n, CHUNK)
    ]
    seeds = [[seed, 1, index] for index in range(len(chunks))]  # noise per chunk: any thread order
    with ThreadPoolExecutor(min(len(chunks), os.cpu_count() or 1)) as pool:  # numpy frees the GIL
        rendered = list(pool.map(_render, chunks, seeds))
    images = np.concatenate([image for image, _ in rendered])
    masks = np.concatenate([mask for _, mask in rendered]) if with_masks else None
    return images, labels, split, masks


def _stratified_split(labels: np.ndarray, val_fraction: float, test_fraction: float) -> np.ndarray:
    """Per class, the first (1 - val - test) share of its (shuffled) faces is train, then val,
    then test."""
    split = np.zeros(len(labels), np.uint8)
    for label in np.unique(labels):
        where = np.flatnonzero(labels == label)
        n_test, n_val = round(len(where) * test_fraction), round(len(where) * val_fraction)
        split[where[len(where) - n_test - n_val : len(where) - n_test]] = 1
        split[where[len(where) - n_test :]] = 2
    return split


def _nuisance(rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    """Everything that must NOT carry the class: one distribution for all faces."""
    u = lambda low, high: rng.uniform(low, high, n).astype(np.float32)  # noqa: E731
    skin = u(90, 215)
    has_hair, dark_hair = rng.random(n) < 0.85, rng.random(n) < 0.75
    angle = np.deg2rad(u(-15, 15))
    light = u(0, 2 * np.pi)
    slope = u(0, 1.2)  # brightness change per pixel of the lighting gradient
    return {
        "cx": 24 + u(-3, 3),
        "cy": 24.5 + u(-2.5, 2.5),
        "scale": u(0.82, 1.08),
        "cos": np.cos(angle),
        "sin": np.sin(angle),
        "face_a": u(13.5, 15),
        "face_b": u(17, 19),
        "shade": u(0.05, 0.3),
        "skin": skin,
        "hairline": np.where(has_hair, u(-17.5, -13.5), -99).astype(np.float32),
        "hair_bottom": np.where(has_hair, u(-3, 3), -99).astype(np.float32),
        "hair": np.where(dark_hair, u(5, 110), u(140, 230)),
        "neck_w": u(6.5, 9),
        "clothes": u(0, 255),
        "eye_x": u(5.6, 6.6),
        "eye_y": u(-3.2, -1.8),
        "eye_w": u(2.7, 3.3),
        "pupil_r": u(1.0, 1.4),
        "gaze_x": u(-0.5, 0.5),
        "gaze_y": u(-0.3, 0.3),
        "brow_gap": u(4.3, 5.0),
        "brow_dx": u(-0.3, 0.3),
        "brow_len": u(3.2, 4.0),
        "brow_thick": u(0.75, 1.1),
        "mouth_y": u(9.3, 10.8),
        "lip": u(0.6, 0.85),
        "nose_y": u(4.5, 5.5),
        "side": np.where(rng.random(n) < 0.5, -1, 1).astype(np.float32),
        "dark": skin * u(0.15, 0.4),
        "pupil": skin * u(0.1, 0.3),
        "sclera": np.minimum(skin * u(1.05, 1.3), 250),
        "cavity": skin * u(0.12, 0.3),
        "lip_col": skin * u(0.4, 0.65),
        "teeth_col": np.minimum(skin * u(1.05, 1.35), 245),
        "crease": skin * u(0.55, 0.75),
        "nostril": skin * u(0.35, 0.6),
        "neck": skin * u(0.7, 0.95),
        "bg": u(0, 255),
        "bg_amp": u(0, 40),
        "contrast": u(0.7, 1.2),
        "bright": u(-30, 30),
        "grad_x": slope * np.cos(light),
        "grad_y": slope * np.sin(light),
        "noise": u(1, 6),
        "bg_grid": rng.standard_normal((n, 5 * 5)).astype(np.float32),  # low-frequency texture
    }


def _expressions(
    rng: np.random.Generator, labels: np.ndarray, classes: tuple[str, ...]
) -> dict[str, np.ndarray]:
    """Expression parameters: neutral + intensity * class offset + jitter,
    clamped to sane shapes."""
    n = len(labels)
    intensity = rng.uniform(0.7, 1.1, n)
    happy_closed = (np.array(classes)[labels] == "happy") & (rng.random(n) >= HAPPY_OPEN_MOUTH)
    params = {}
    for name, base in NEUTRAL.items():
        offset = np.array([EXPRESSIONS[c].get(name, 0.0) for c in classes])[labels]
        if name in ("mouth_open", "teeth"):
            offset = np.where(happy_closed, 0.0, offset)
        jitter = JITTER.get(name, 0.0) * rng.standard_normal(n)
        if name in ONLY_SOME:
            jitter *= offset > 0
        params[name] = base + intensity * offset + jitter
    params["eye_open"] = np.maximum(params["eye_open"], 0.5)
    params["mouth_width"] = np.maximum(params["mouth_width"], 2.0)
    for name in (
        "mouth_open",
        "eye_smile",
        "sneer",
        "brow_lower_one",
        "nose_wrinkle",
        "smile_fold",
        "frown_line",
    ):
        params[name] = np.maximum(params[name], 0.0)
    params["teeth"] = np.clip(params["teeth"], 0.0, 1.0)
    return {name: value.astype(np.float32) for name, value in params.items()}


# --- rendering: arrays are B x P (faces x 2304 pixels), parameters B x 1 ---------------------
# Speed notes (numpy 2, 2 cores): in-place ops, np.clip rather than np.maximum(x, scalar), and no
# np.where on big arrays: together about 4x faster than the naive expressions.

_PIXELS_Y, _PIXELS_X = np.indices((SIZE, SIZE), dtype=np.float32).reshape(2, 1, -1) + 0.5
# Bilinear upsampling 5 -> 48 as a matrix: a smooth random field is then two small matmuls.
_UPSAMPLE = np.clip(
    1 - np.abs(np.linspace(0, 4, SIZE)[:, None] - np.arange(5)[None, :]), 0, 1
).astype(np.float32)


def _ellipse(x: np.ndarray, y: np.ndarray, a, b) -> np.ndarray:
    """Signed distance (negative inside) to the ellipse (x/a)^2 + (y/b)^2 = 1, to first order
    (f / |grad f|): exact on the outline and good near it, which is all a 1-px soft edge needs."""
    gx, gy = x / (a * a), y / (b * b)  # half the gradient of f
    f = x * gx
    f += y * gy
    f -= 1
    gx *= gx
    gx += gy * gy
    np.sqrt(gx, out=gx)
    gx *= 2
    gx += 1e-6
    f /= gx
    return f


def _cover(distance: np.ndarray, scale) -> np.ndarray:
    """Coverage 0..1 from a signed distance in face units: a 1-pixel anti-aliased edge."""
    coverage = distance * -scale
    coverage += 0.5
    return np.clip(coverage, 0, 1, out=coverage)


def _segment(x, y, cx, cy, angle_cos, angle_sin, half_length, half_width) -> np.ndarray:
    """Signed distance to a thin tapered stroke (a rotated flat ellipse): brows and creases."""
    dx, dy = x - cx, y - cy
    along, across = dx * angle_cos + dy * angle_sin, dy * angle_cos - dx * angle_sin
    return _ellipse(along, across, half_length, half_width)


def _on_rows(present: np.ndarray, like: np.ndarray, draw) -> np.ndarray:
    """draw(rows) for the faces where `present` (B x 1), zeros elsewhere: for rare features."""
    out = np.zeros_like(like)
    rows = np.flatnonzero(present[:, 0])
    if len(rows):
        out[rows] = draw(rows)
    return out


def _render(params: dict[str, np.ndarray], seed: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """One batch of faces -> (uint8 B x 48 x 48 images, uint8 B x 48 x 48 feature masks)."""
    p = {name: value[:, None] if value.ndim == 1 else value for name, value in params.items()}
    dx, dy = _PIXELS_X - p["cx"], _PIXELS_Y - p["cy"]
    u = (dx * p["cos"] + dy * p["sin"]) / p["scale"]  # face coordinates: x right, y down
    v = (dy * p["cos"] - dx * p["sin"]) / p["scale"]
    mirror = np.abs(u)  # eyes, brows, nostrils and creases come in mirrored pairs
    image = _head(_background(p), u, v, mirror, p)
    mask = np.zeros(image.shape, bool)
    for colour, coverage in _features(u, v, mirror, p):
        image += (colour - image) * coverage
        mask |= coverage > 0.25
    image = _lighting(image, p, np.random.default_rng(seed))
    return image.reshape(-1, SIZE, SIZE), _dilate(mask.reshape(-1, SIZE, SIZE)).astype(np.uint8)


def _background(p: dict[str, np.ndarray]) -> np.ndarray:
    grid = p["bg_grid"].reshape(-1, 5, 5)
    field = _UPSAMPLE @ grid @ _UPSAMPLE.T  # smooth random field, B x 48 x 48
    return (p["bg"] + p["bg_amp"] * field.reshape(len(grid), -1)).astype(np.float32)


def _head(image, u, v, mirror, p) -> np.ndarray:
    """Hair, shoulders, neck, shaded skin and nostrils: the same distribution for every class."""
    scale = p["scale"]
    hair = _cover(_ellipse(u, v + 0.8, p["face_a"] + 2.8, p["face_b"] + 2.2), scale)
    hair *= _cover(v - p["hair_bottom"], scale)
    image += (p["hair"] - image) * hair
    shoulders = _cover(_ellipse(u, v - p["face_b"] - 15, 25, 10), scale)
    image += (p["clothes"] - image) * shoulders
    neck = _cover(np.maximum(mirror - p["neck_w"], 0.55 * p["face_b"] - v), scale)
    image += (p["neck"] - image) * neck
    radius2 = (u / p["face_a"]) ** 2 + (v / p["face_b"]) ** 2
    skin = p["skin"] * (1 - p["shade"] * np.clip(radius2, 0, 1.2, out=radius2))  # darker at the rim
    face = _cover(_ellipse(u, v, p["face_a"], p["face_b"]), scale)
    face *= _cover(p["hairline"] + 0.05 * u * u - v, scale)
    image += (skin - image) * face
    nostrils = _cover(_ellipse(mirror - 1.7, v - p["nose_y"], 0.95, 0.6), scale)
    image += (p["nostril"] - image) * nostrils * 0.8
    return image


def _features(u, v, mirror, p) -> list[tuple[np.ndarray, np.ndarray]]:
    """(colour, coverage) of each expression feature, in drawing order."""
    return [
        *_creases(mirror, v, p),
        _brows(u, mirror, v, p),
        *_eyes(u, mirror, v, p),
        *_mouth(u, v, p),
    ]


def _eyes(u, mirror, v, p):
    ex, ey = mirror - p["eye_x"], v - p["eye_y"]
    ey += p["eye_smile"] * (1 - (ex / p["eye_w"]) ** 2)  # happy: lower lid up, the eye an arc
    outline = _ellipse(ex, ey, p["eye_w"], p["eye_open"])
    inside = _cover(outline, p["scale"])
    pupil_x = np.abs(u - p["gaze_x"]) - p["eye_x"]  # mirrored about the gaze: both look one way
    pupil = (
        _cover(np.sqrt(pupil_x**2 + (ey - p["gaze_y"]) ** 2) - p["pupil_r"], p["scale"]) * inside
    )
    np.abs(outline, out=outline)
    lids = _cover(outline - 0.45, p["scale"])
    return [(p["sclera"], inside), (p["pupil"], pupil), (p["dark"], lids)]


def _brows(u, mirror, v, p):
    rise = p["brow_outer"] - p["brow_inner"]  # outer end above the inner end: positive
    length = np.sqrt((2 * p["brow_len"]) ** 2 + rise**2)
    angle_cos, angle_sin = 2 * p["brow_len"] / length, -rise / length
    sneer_side = np.clip(u * (50 * p["side"]), 0, 1)  # 1 on the side of the sneer (disgust)
    cx = p["eye_x"] + p["brow_dx"] - 0.6 * p["brow_squeeze"]
    cy = (
        p["eye_y"]
        - p["brow_gap"]
        - 0.5 * (p["brow_inner"] + p["brow_outer"])
        + sneer_side * p["brow_lower_one"]
    )
    dx, dy = mirror - cx, v - cy
    along, across = dx * angle_cos + dy * angle_sin, dy * angle_cos - dx * angle_sin
    across += p["brow_arch"] * (1 - (along / p["brow_len"]) ** 2)  # arch: the middle higher
    return p["dark"], _cover(_ellipse(along, across, p["brow_len"], p["brow_thick"]), p["scale"])


def _mouth(u, v, p):
    t = np.clip(u / p["mouth_width"], -1.3, 1.3)

    def sneer(rows):  # upper lip raised on one side, a bump around t = +-0.45
        bump = np.clip(1 - ((t[rows] - 0.45 * p["side"][rows]) / 0.5) ** 2, 0, np.inf)
        return p["sneer"][rows] * bump * bump

    raised = _on_rows(p["sneer"] > 0, t, sneer)
    centre = -p["mouth_lift"] * t * t - 0.5 * raised  # y of the mouth line
    opening = p["mouth_open"] + 0.5 * raised
    half_height = np.maximum(opening, p["lip"])
    across = v - p["mouth_y"] - centre
    outline = _ellipse(u, across, p["mouth_width"], half_height)
    openness = np.clip(opening / 1.2, 0, 1)  # closed: a lip line; open: a dark cavity
    colour = p["lip_col"] + (p["cavity"] - p["lip_col"]) * openness

    def teeth(rows):  # upper teeth, in mouths open wide enough
        show = p["teeth"][rows] * np.clip((opening[rows] - 1.0) / 0.8, 0, 1)
        upper = _cover(across[rows] + 0.2 * half_height[rows], p["scale"][rows])
        return upper * _cover(outline[rows] + 0.5, p["scale"][rows]) * show

    return [
        (colour, _cover(outline, p["scale"])),
        (p["teeth_col"], _on_rows(p["teeth"] > 0, t, teeth)),
    ]


def _creases(mirror, v, p):
    """Wrinkles that belong to expressions: nose (disgust), nasolabial (smile, sneer), frown lines;
    drawn only on the faces that have them."""
    brow_y = p["eye_y"] - p["brow_gap"] - p["brow_inner"] + 0.6
    shapes = [
        ("nose_wrinkle", 1.6, p["eye_y"] + 3.2, 0.94, -0.34, 1.4, 0.35),
        ("smile_fold", 4.6, p["nose_y"] + 2.6, 0.47, 0.88, 2.6, 0.4),
        ("frown_line", 0.9, brow_y, 0.17, 0.98, 1.6, 0.35),
    ]  # x, y, direction, half length, width
    creases = []
    for name, x, y, cos, sin, half_length, half_width in shapes:

        def crease(
            rows,
            name=name,
            x=x,
            y=y,
            cos=cos,
            sin=sin,
            half_length=half_length,
            half_width=half_width,
        ):
            distance = _segment(
                mirror[rows], v[rows], x, y[rows], cos, sin, half_length, half_width
            )
            return _cover(distance, p["scale"][rows]) * np.minimum(p[name][rows], 1)

        creases.append((p["crease"], _on_rows(p[name] > 0, v, crease)))
    return creases


def _lighting(image, p, noise_rng) -> np.ndarray:
    """Contrast, brightness, a linear light gradient and sensor noise, then 8-bit."""
    image -= 128
    image *= p["contrast"]
    image += 128 + p["bright"] + p["grad_x"] * (_PIXELS_X - 24) + p["grad_y"] * (_PIXELS_Y - 24)
    image += p["noise"] * noise_rng.standard_normal(image.shape, dtype=np.float32)
    return np.clip(np.rint(image, out=image), 0, 255, out=image).astype(np.uint8)


def _dilate(mask: np.ndarray) -> np.ndarray:
    """Grow a B x H x W boolean mask by one pixel (3 x 3 neighbourhood)."""
    padded = np.pad(mask, ((0, 0), (1, 1), (1, 1)))
    grown = np.zeros_like(mask)
    for dy in range(3):
        for dx in range(3):
            grown |= padded[:, dy : dy + SIZE, dx : dx + SIZE]
    return grown
