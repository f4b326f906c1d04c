"""fertool saliency: which pixels drive a model's decision, as maps over the faces.

fertool saliency face.png -o saliency.png                    # the bundled model
fertool saliency branch1.safetensors face.png --method gradcam
fertool saliency party.jpg --detect -o party-saliency.png     # every face of a photo
fertool saliency --data fer.safetensors --index 0-7 --target true
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from fertool.cli.base import (
    ANALYSIS_PANEL,
    AlignOpt,
    DetectorOpt,
    DetThresholdOpt,
    JsonOpt,
    MinFaceOpt,
    TtaOpt,
    command,
    detect_config,
    out,
    print_json,
    split_model_and_images,
)
from fertool.errors import BadInputError
from fertool.options import Detector, SaliencyMethod, Tta


@command(panel=ANALYSIS_PANEL)
def saliency(
    paths: Annotated[
        Optional[list[Path]],
        typer.Argument(
            metavar="[MODEL] IMAGE...",
            help="A model file (default: the bundled model), then images of any size or colour.",
            show_default=False,
        ),
    ] = None,
    output: Annotated[Path, typer.Option("-o", "--output", help="Figure to write.")] = Path(
        "saliency.png"
    ),
    method: Annotated[
        SaliencyMethod,
        typer.Option(
            "--method",
            help="gradient: |d score / d pixel|, the report's; smoothgrad: its mean over noisy "
            "copies; gradcam: the last block's weighted maps; integrated: integrated gradients "
            "from the face's mean brightness.",
        ),
    ] = SaliencyMethod.GRADIENT,
    target: Annotated[
        str,
        typer.Option(
            "--target", help="Class to explain: predicted | true (with --data) | a class name."
        ),
    ] = "predicted",
    data: Annotated[
        Optional[Path],
        typer.Option(
            "--data", help="Take the images from this dataset artifact instead.", show_default=False
        ),
    ] = None,
    index: Annotated[
        Optional[str],
        typer.Option(
            "--index", help="Dataset indices for --data, e.g. 3,17,40-42.", show_default=False
        ),
    ] = None,
    layer: Annotated[
        Optional[str],
        typer.Option(
            "--layer",
            help="gradcam only: the layer \\[default: the last conv block].",
            show_default=False,
        ),
    ] = None,
    steps: Annotated[
        Optional[int],
        typer.Option(
            "--steps",
            min=1,
            help="integrated only: points on the path from the featureless face; "
            "more make the attributions' sum closer to the logit's rise, and cost more. \\[32]",
            show_default=False,
        ),
    ] = None,
    npz: Annotated[
        Optional[Path],
        typer.Option(
            "--npz",
            help="Also write the raw maps (npz; with --method integrated also `signed`, "
            "the attributions with their signs).",
            show_default=False,
        ),
    ] = None,
    detect: Annotated[
        bool,
        typer.Option(
            "--detect",
            help="Find the faces in each photo first and explain each, cropped as `predict` crops "
            "them (without it, an image is one face: its centred square).",
        ),
    ] = False,
    detector: DetectorOpt = Detector.YUNET,
    det_threshold: DetThresholdOpt = 0.6,
    min_face: MinFaceOpt = 16,
    align: AlignOpt = True,
    tta: TtaOpt = Tta.AUTO,
    as_json: JsonOpt = False,
) -> None:
    """Show which pixels drive a model's decision: input, saliency map and overlay per image.

    The predicted class and its probability are those of `eval` and `predict` (the views of --tta);
    the map explains that class's score on the face itself.

    Example: fertool saliency branch1.safetensors face.png -o saliency.png --method gradcam

    Example: fertool saliency party.jpg --detect -o party-saliency.png
    """
    import torch

    from fertool.artifacts import check_output_path, save_npz
    from fertool.bundled import resolve_model
    from fertool.evaluate import model_tta
    from fertool.images import gather_images, to_unit_tensor
    from fertool.plots import saliency_figure, save_figure
    from fertool.saliency import check_method, explain

    method_name = method.value
    check_method(
        method_name, layer, steps
    )  # option mistakes first: before the model and images are read
    if detect and data is not None:
        raise BadInputError(
            "--detect finds faces in photo files; a data set's images are faces already: drop one"
        )
    model_path, image_paths = split_model_and_images(list(paths or []))
    for path in (output, npz):
        if path is not None:
            check_output_path(path, inputs=[model_path, data, *image_paths])
    model, meta, model_name = resolve_model(model_path)
    finder = detect_config(detector, det_threshold, min_face, align)
    images, labels, names = gather_images(image_paths, data, index, detect, finder)
    views = model_tta(meta, tta.value)
    result = explain(
        model,
        to_unit_tensor(images),
        method=method_name,
        target=target,
        labels=None if labels is None else torch.from_numpy(labels),
        layer=layer,
        classes=meta["classes"],
        tta=views,
        **({"steps": steps} if steps is not None else {}),
    )
    classes = meta["classes"]
    titles = []
    for i, name in enumerate(names):
        p = result.probabilities[i, result.predicted[i]]
        truth = f", true {classes[labels[i]]}" if labels is not None else ""
        titles.append(
            f"{name}\n{classes[result.predicted[i]]} {p:.0%}{truth}"
        )  # two lines fit a row
    save_figure(saliency_figure(images / 255.0, result.maps, titles, method_name), output)
    if npz is not None:
        arrays = {
            "maps": result.raw,
            "predicted": result.predicted,
            "probabilities": result.probabilities,
            "targets": result.targets,
        }
        if (
            result.signed is not None and result.logit_rise is not None
        ):  # integrated gradients: evidence for (+) and against (-) the target
            arrays.update(signed=result.signed, logit_rise=result.logit_rise)
        save_npz(
            npz,
            arrays,
            kind="saliency",
            meta={
                "model": model_name,
                "method": method_name,
                "tta": views,
                "images": names,
                "classes": classes,
            },
        )
    rows = [
        {
            "image": name,
            "predicted": classes[result.predicted[i]],
            "probability": float(result.probabilities[i, result.predicted[i]]),
            "target": classes[result.targets[i]],
        }
        for i, name in enumerate(names)
    ]
    if result.signed is not None and result.logit_rise is not None:
        # Completeness, checked: how far the attributions' sum is from what it should add up to.
        for row, total, rise in zip(rows, result.signed.sum(axis=(1, 2)), result.logit_rise):
            row.update(attribution_sum=float(total), logit_rise=float(rise))
    if as_json:
        print_json(
            {
                "output": str(output),
                "model": model_name,
                "method": method_name,
                "tta": views,
                "images": rows,
            }
        )
        return
    for row in rows:
        sums = (
            f"; attributions sum to {row['attribution_sum']:+.3f} of the logit's "
            f"{row['logit_rise']:+.3f} rise"
            if "logit_rise" in row
            else ""
        )
        out.print(
            f"  {row['image']}: {row['predicted']} ({row['probability']:.0%}), "
            f"map of {row['target']}{sums}",
            highlight=False,
        )
    with_views = f" (predictions with TTA {views})" if views != "none" else ""
    out.print(
        f"{output}: {method_name} maps of {len(rows)} image(s) from {model_name}{with_views}",
        highlight=False,
    )
