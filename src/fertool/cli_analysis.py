"""fertool's analysis commands: confusion, saliency, filters, curves (registered on cli.app).

    fertool confusion preds.npz -o confusion.png --csv confusion.csv
    fertool saliency branch1.safetensors face.png -o saliency.png --method gradcam
    fertool filters branch1.safetensors --layer featex1 -o filters.png
    fertool curves branch1.safetensors branch2.safetensors -o curves.png
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Annotated, Any, Optional

import numpy as np
import typer

from fertool.cli import JsonOpt, TtaOpt, app, out, print_json, user_errors
from fertool.errors import BadInputError

# A first path with one of these suffixes is a model argument, not an image; .npz is never a
# model, but taking it as one gives the right error ("a predictions artifact, pass a model").
MODEL_SUFFIXES = (".safetensors", ".npz", ".ckpt")


# ---------------------------------------------------------------- confusion


def most_confused(matrix: np.ndarray, classes: list[str], top: int = 3) -> list[dict[str, Any]]:
    """The off-diagonal cells with the highest share of their true class, largest first."""
    rates = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    np.fill_diagonal(rates, 0)
    order = np.dstack(np.unravel_index(np.argsort(-rates, axis=None), rates.shape))[0][:top]
    return [{"true": classes[i], "predicted": classes[j], "rate": float(rates[i, j]), "count": int(matrix[i, j])}
            for i, j in order if matrix[i, j] > 0]


def write_matrix_csv(path: Path, matrix: np.ndarray, classes: list[str]) -> None:
    from fertool.artifacts import atomic_path

    with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["true\\predicted", *classes])
        for name, row in zip(classes, matrix):
            writer.writerow([name, *map(int, row)])


@app.command()
@user_errors
def confusion(
    predictions: Annotated[Path, typer.Argument(metavar="PREDS", help="Predictions made by `fertool eval ... -o preds.npz`.", show_default=False)],
    output: Annotated[Path, typer.Option("-o", "--output", help="Figure to write (png, pdf or svg).")] = Path("confusion.png"),
    counts: Annotated[bool, typer.Option("--counts", help="Colour by raw counts instead of the share of each true class.")] = False,
    csv_path: Annotated[Optional[Path], typer.Option("--csv", help="Also write the matrix of counts as CSV.", show_default=False)] = None,
    title: Annotated[Optional[str], typer.Option("--title", help="Figure title \\[default: model, split and accuracy].", show_default=False)] = None,
    as_json: JsonOpt = False,
) -> None:
    """Draw the confusion matrix of saved predictions; name the most-confused pairs and the worst class.

    Example: fertool confusion preds.npz -o confusion.png --csv confusion.csv
    """
    from fertool.artifacts import check_output_path, load_artifact
    from fertool.metrics import classification_report
    from fertool.plots import confusion_figure, save_figure

    for path in (output, csv_path):
        if path is not None:
            check_output_path(path, inputs=[predictions])
    preds = load_artifact(predictions, expect="predictions", as_numpy=True)
    classes = preds.meta["classes"]
    report = classification_report(preds.tensors["logits"], preds.tensors["labels"], classes)
    matrix = np.array(report["confusion"])
    heading = title or f"{Path(preds.meta['model']).name} on {preds.meta['split']}"  # the figure adds the accuracy
    save_figure(confusion_figure(matrix, classes, normalize=not counts, title=heading), output)
    if csv_path is not None:
        write_matrix_csv(csv_path, matrix, classes)
    pairs = most_confused(matrix, classes)
    recalls = {name: row["recall"] for name, row in report["per_class"].items() if row["support"] > 0}
    worst = min(recalls, key=lambda name: recalls[name])
    summary = {"output": str(output), "accuracy": report["accuracy"], "matrix": report["confusion"], "classes": classes,
               "most_confused": pairs, "worst_class": {"class": worst, "recall": recalls[worst]}}
    if csv_path is not None:
        summary["csv"] = str(csv_path)
    if as_json:
        print_json(summary)
        return
    out.print(f"{output}: accuracy {report['accuracy']:.2%} on {int(matrix.sum())} images", highlight=False)
    for pair in pairs:
        out.print(f"  {pair['true']:>8} taken for {pair['predicted']:<8} {pair['rate']:6.1%}  ({pair['count']} image{'s' if pair['count'] != 1 else ''})", highlight=False)
    out.print(f"  worst class: {worst} (recall {recalls[worst]:.1%})", highlight=False)


# ---------------------------------------------------------------- saliency / filters: inputs


def split_model_and_images(paths: list[Path]) -> tuple[Path | None, list[Path]]:
    """[MODEL] IMAGE...: the first path is the model when it is a .safetensors file."""
    if paths and paths[0].suffix.lower() in MODEL_SUFFIXES:
        return paths[0], paths[1:]
    return None, paths


def resolve_model(model_path: Path | None) -> tuple[Any, dict[str, Any], str]:
    """The model to explain: the one given, else the default model shipped in the package."""
    from fertool.models import load_model

    if model_path is None:
        model_path = default_model_path()
    model, meta = load_model(model_path)
    return model, meta, str(model_path)


# The model commands use when MODEL is omitted; it ships inside the package (scripts/train_default.sh).
DEFAULT_MODEL = Path(__file__).with_name("default_model") / "default.safetensors"


def default_model_path() -> Path:
    path = DEFAULT_MODEL
    if not path.exists():
        raise BadInputError("no MODEL given, and this fertool ships no default model yet; pass a model file "
                            "(made by `fertool train-branch` or `fertool ensemble`) before the images")
    return path


def parse_indices(text: str) -> list[int]:
    """'3,17,40-42' -> [3, 17, 40, 41, 42]."""
    indices: list[int] = []
    usage = f"--index {text}: expected numbers like 3,17,40-42"
    try:
        for part in filter(None, (p.strip() for p in text.split(","))):
            low, _, high = part.partition("-")
            if high and int(high) < int(low):
                raise BadInputError(f"{usage} (a range runs low-high, not {part})")
            indices.extend(range(int(low), int(high) + 1) if high else [int(low)])
    except ValueError as err:
        raise BadInputError(usage) from err
    if not indices:
        raise BadInputError(f"{usage} (it names no image)")
    return indices


def gather_images(images: list[Path], data: Path | None, index: str | None,
                  detect: bool = False) -> tuple[np.ndarray, np.ndarray | None, list[str]]:
    """uint8 N x 48 x 48 images, their labels when known, and a name for each.

    `detect`: each image file is a photo whose faces are found and cropped as `predict` crops them.
    """
    from fertool.artifacts import load_artifact
    from fertool.data import read_image

    if data is not None:
        if images:
            raise BadInputError(f"{images[0]}: give images or --data with --index, not both")
        dataset = load_artifact(data, expect="dataset")
        chosen = parse_indices(index or "0-7")
        total = len(dataset.tensors["labels"])
        bad = [i for i in chosen if not 0 <= i < total]
        if bad:
            raise BadInputError(f"{data}: has {total} images; --index {bad[0]} is out of range (0-{total - 1})")
        return (dataset.tensors["images"][chosen].numpy(), dataset.tensors["labels"][chosen].numpy(),
                [f"#{i}" for i in chosen])
    if not images:
        raise BadInputError("no images: pass image files, or --data DATA --index 3,17,42")
    if detect:
        crops, names = faces_in_photos(images)
        return crops, None, names
    return np.stack([read_image(p) for p in images]), None, [p.name for p in images]


def faces_in_photos(paths: list[Path]) -> tuple[np.ndarray, list[str]]:
    """Every face of every photo, cropped as `predict` crops it (a 48x48 image is one face), named
    by its photo and, where a photo has several, its number and box x,y,w,h in the photo's pixels."""
    from fertool.detect import photo_faces, read_photo

    crops, names = [], []
    for path in paths:
        photo = read_photo(path)
        boxes, found = photo_faces(photo)
        if not boxes:
            raise BadInputError(f"{path}: no face found; drop --detect to use the whole image")
        crops.append(found)
        if len(boxes) == 1:
            names.append(path.name)
        else:
            names += [f"{path.name} face {i} ({','.join(map(str, photo.to_original(box)))})"
                      for i, box in enumerate(boxes, 1)]
    return np.concatenate(crops), names


def to_unit_tensor(images: np.ndarray) -> Any:
    """uint8 N x 48 x 48 -> float N x 1 x 48 x 48 in [0, 1], as every model takes it."""
    import torch

    from fertool.evaluate import to_input

    return to_input(torch.from_numpy(images), torch.device("cpu"))


# ---------------------------------------------------------------- saliency


@app.command()
@user_errors
def saliency(
    paths: Annotated[Optional[list[Path]], typer.Argument(metavar="[MODEL] IMAGE...", help="A model file (default: the bundled model), then images of any size or colour.", show_default=False)] = None,
    output: Annotated[Path, typer.Option("-o", "--output", help="Figure to write.")] = Path("saliency.png"),
    method: Annotated[str, typer.Option("--method", help="gradient (|d score / d pixel|, the report's) | smoothgrad | gradcam | integrated (integrated gradients from the face's mean brightness)")] = "gradient",
    target: Annotated[str, typer.Option("--target", help="Class to explain: predicted | true (with --data) | a class name.")] = "predicted",
    data: Annotated[Optional[Path], typer.Option("--data", help="Take the images from this dataset artifact instead.", show_default=False)] = None,
    index: Annotated[Optional[str], typer.Option("--index", help="Dataset indices for --data, e.g. 3,17,40-42.", show_default=False)] = None,
    layer: Annotated[Optional[str], typer.Option("--layer", help="gradcam only: the layer \\[default: the last conv block].", show_default=False)] = None,
    steps: Annotated[Optional[int], typer.Option("--steps", help="integrated only: points on the path from the featureless face; more make the attributions' sum closer to the logit's rise, and cost more. \\[32]", show_default=False)] = None,
    npz: Annotated[Optional[Path], typer.Option("--npz", help="Also write the raw maps (npz; with --method integrated also `signed`, the attributions with their signs).", show_default=False)] = None,
    detect: Annotated[bool, typer.Option("--detect", help="Find the faces in each photo first and explain each, cropped as `predict` crops them (without it, an image is one face: its centred square).")] = False,
    tta: TtaOpt = "auto",
    as_json: JsonOpt = False,
) -> None:
    """Show which pixels drive a model's decision: input, saliency map and overlay per image.

    The predicted class and its probability are those of `eval` and `predict` (the views of --tta);
    the map explains that class's score on the face itself.

    Example: fertool saliency branch1.safetensors face.png -o saliency.png --method gradcam

    Example: fertool saliency party.jpg --detect -o party-saliency.png
    """
    from fertool.artifacts import check_output_path, save_npz
    from fertool.evaluate import check_tta, model_tta
    from fertool.plots import saliency_figure, save_figure
    from fertool.saliency import check_method, explain

    check_method(method, layer, steps)  # option mistakes first: before the model and images are read
    check_tta(tta, allow_auto=True)
    if detect and data is not None:
        raise BadInputError("--detect finds faces in photo files; a data set's images are faces already: drop one")
    model_path, image_paths = split_model_and_images(list(paths or []))
    for path in (output, npz):
        if path is not None:
            check_output_path(path, inputs=[model_path, data, *image_paths])
    model, meta, model_name = resolve_model(model_path)
    images, labels, names = gather_images(image_paths, data, index, detect)
    import torch

    tta = model_tta(meta, tta)
    result = explain(model, to_unit_tensor(images), method=method, target=target,
                     labels=None if labels is None else torch.from_numpy(labels), layer=layer, classes=meta["classes"],
                     tta=tta, **({"steps": steps} if steps is not None else {}))
    classes = meta["classes"]
    titles = []
    for i, name in enumerate(names):
        p = result.probabilities[i, result.predicted[i]]
        truth = f", true {classes[labels[i]]}" if labels is not None else ""
        titles.append(f"{name}\n{classes[result.predicted[i]]} {p:.0%}{truth}")  # two lines fit a row
    save_figure(saliency_figure(images / 255.0, result.maps, titles, method), output)
    if npz is not None:
        arrays = {"maps": result.raw, "predicted": result.predicted, "probabilities": result.probabilities,
                  "targets": result.targets}
        if result.signed is not None and result.logit_rise is not None:  # integrated gradients: evidence for (+) and against (-) the target
            arrays.update(signed=result.signed, logit_rise=result.logit_rise)
        save_npz(npz, arrays, kind="saliency",
                 meta={"model": model_name, "method": method, "tta": tta, "images": names, "classes": classes})
    rows = [{"image": name, "predicted": classes[result.predicted[i]],
             "probability": float(result.probabilities[i, result.predicted[i]]), "target": classes[result.targets[i]]}
            for i, name in enumerate(names)]
    if result.signed is not None and result.logit_rise is not None:
        # Completeness, checked: how far the attributions' sum is from what it should add up to.
        for row, total, rise in zip(rows, result.signed.sum(axis=(1, 2)), result.logit_rise):
            row.update(attribution_sum=float(total), logit_rise=float(rise))
    if as_json:
        print_json({"output": str(output), "model": model_name, "method": method, "tta": tta, "images": rows})
        return
    for row in rows:
        sums = (f"; attributions sum to {row['attribution_sum']:+.3f} of the logit's {row['logit_rise']:+.3f} rise"
                if "logit_rise" in row else "")
        out.print(f"  {row['image']}: {row['predicted']} ({row['probability']:.0%}), map of {row['target']}{sums}",
                  highlight=False)
    views = f" (predictions with TTA {tta})" if tta != "none" else ""
    out.print(f"{output}: {method} maps of {len(rows)} image(s) from {model_name}{views}", highlight=False)


# ---------------------------------------------------------------- filters


@app.command()
@user_errors
def filters(
    model_path: Annotated[Optional[Path], typer.Argument(metavar="[MODEL]", help="A model file \\[default: the bundled model].", show_default=False)] = None,
    layer: Annotated[str, typer.Option("--layer", help="Layer name (see --list-layers), e.g. featex1, stem.0.")] = "featex1",
    output: Annotated[Path, typer.Option("-o", "--output", help="Figure to write.")] = Path("filters.png"),
    select: Annotated[Optional[str], typer.Option("--filters", help="Filter indices, e.g. 0-15,40 \\[default: the first 64].", show_default=False)] = None,
    steps: Annotated[int, typer.Option("--steps", help="Gradient-ascent steps.")] = 48,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the starting noise.")] = 0,
    image: Annotated[Optional[Path], typer.Option("--image", help="Instead, draw the layer's outputs (activation maps) for this image.", show_default=False)] = None,
    detect: Annotated[bool, typer.Option("--detect", help="With --image: find the faces in the photo and draw one (see --face), cropped as `predict` crops it.")] = False,
    face: Annotated[int, typer.Option("--face", help="With --detect: which face, counted from the left as `predict` lists them (1 = leftmost).")] = 1,
    list_layers_flag: Annotated[bool, typer.Option("--list-layers", help="Print the layer names, one per line, and exit.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Draw the input that most excites each filter of a layer (gradient ascent), or its outputs for an image.

    Example: fertool filters branch1.safetensors --layer featex1 -o filters.png
    """
    from fertool import filters as fx
    from fertool.artifacts import check_output_path
    from fertool.plots import activations_figure, filters_figure, save_figure

    if detect and image is None:
        raise BadInputError("--detect finds the face in --image PHOTO; give the photo with --image")
    if face != 1 and not detect:
        raise BadInputError(f"--face {face} picks one of the faces --detect finds; add --detect (and --image PHOTO)")
    if face < 1:
        raise BadInputError(f"--face {face}: faces count from 1 (the leftmost)")
    model, _, model_name = resolve_model(model_path)
    if list_layers_flag:
        for info in fx.list_layers(model):
            out.print(f"{info.short_name}\t{info.type}\t{info.channels}x{info.height}x{info.width}", highlight=False)
        return
    check_output_path(output, inputs=[model_path, image])
    info = fx.find_layer(model, layer)
    summary: dict[str, Any]
    if image is not None:
        from fertool.data import read_image

        faces, names = faces_in_photos([image]) if detect else (read_image(image)[None], [image.name])
        if face > len(faces):
            raise BadInputError(f"{image}: --face {face}, but {len(faces)} face(s) found; "
                                f"give --face 1 to {len(faces)} (`fertool predict {image}` lists them)")
        pixels = faces[face - 1]
        maps = fx.activation_maps(model, info.name, to_unit_tensor(pixels[None]))
        save_figure(activations_figure(pixels / 255.0, maps, info.short_name), output)
        summary = {"output": str(output), "layer": info.short_name, "image": str(image), "maps": list(maps.shape)}
        if detect:
            summary.update(face=names[face - 1], faces_found=len(names))
    else:
        chosen = parse_indices(select) if select else list(range(min(64, info.channels)))
        vis = fx.visualize_filters(model, info.name, filters=chosen, steps=steps, seed=seed)
        save_figure(filters_figure(vis.images, vis.filters, info.short_name, inactive=vis.objective_end <= 0), output)
        summary = {"output": str(output), "layer": info.short_name, "filters": vis.filters,
                   "objective_start": vis.objective_start.tolist(), "objective_end": vis.objective_end.tolist(),
                   "seconds": vis.seconds}
    if as_json:
        print_json({"model": model_name, **summary})
        return
    out.print(f"{output}: layer {info.short_name} of {model_name}", highlight=False)


# ---------------------------------------------------------------- curves


@app.command()
@user_errors
def curves(
    models: Annotated[list[Path], typer.Argument(metavar="MODEL...", help="Branch or ensemble artifacts with a training history.", show_default=False)],
    output: Annotated[Path, typer.Option("-o", "--output", help="Figure to write.")] = Path("curves.png"),
    labels: Annotated[Optional[str], typer.Option("--labels", help="Comma-separated names for the legend \\[default: file names].", show_default=False)] = None,
) -> None:
    """Plot loss and train/val accuracy per epoch from models' recorded histories, one line per model.

    Example: fertool curves branch1.safetensors branch2.safetensors -o curves.png
    """
    from fertool.artifacts import MODEL_KINDS, check_output_path, load_artifact
    from fertool.plots import curves_figure, save_figure

    check_output_path(output, inputs=models)
    names = [s.strip() for s in labels.split(",")] if labels else [p.stem for p in models]
    if len(names) != len(models):
        raise BadInputError(f"--labels gives {len(names)} names for {len(models)} models; give one per model")
    histories, earlier = [], []
    for path in models:
        before, history = run_history(load_artifact(path, expect=MODEL_KINDS, as_numpy=True).meta)
        if not history:
            raise BadInputError(f"{path}: records no training epochs (an --average ensemble?); pass trained models")
        histories.append(history)
        earlier.append(before)
    save_figure(curves_figure(histories, names, earlier=earlier), output)
    out.print(f"{output}: {len(models)} training run(s)", highlight=False)


def run_history(meta: dict[str, Any]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(the epochs of the runs a branch continued with --init, oldest first; its own epochs),
    numbered on one axis: a branch trained 10 epochs from a 22-epoch start has epochs 23-32.

    Files made before the start's history was recorded give no earlier epochs, but keep the
    numbering, so `fertool curves start.safetensors longer.safetensors` still lines them up.
    """
    chain = []
    start = meta.get("init")
    while start:
        chain.append(start)
        start = start.get("init")
    earlier: list[dict[str, Any]] = []
    offset = 0
    for start in reversed(chain):
        earlier += [{**record, "epoch": offset + i + 1} for i, record in enumerate(start.get("history") or [])]
        offset += start.get("epochs", 0)
    own = [{**record, "epoch": offset + i + 1} for i, record in enumerate(meta.get("history") or [])]
    return earlier, own


# predict lives in its own module; importing it registers it on `app`.
from fertool import cli_predict  # noqa: E402,F401
from fertool import cli_info  # noqa: E402,F401
