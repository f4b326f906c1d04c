"""fertool filters: what a layer's filters respond to (gradient ascent), or its outputs for a face.

fertool filters -o filters.png                               # the bundled model, featex1
fertool filters branch1.safetensors --layer stem.0 --filters 0-15
fertool filters --image face.png --layer featex1 -o maps.png
fertool filters --image party.jpg --detect --face 2 -o maps.png
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from fertool.cli.base import (
    ANALYSIS_PANEL,
    AlignOpt,
    DetectorOpt,
    DetThresholdOpt,
    JsonOpt,
    MinFaceOpt,
    ModelArg,
    command,
    detect_config,
    out,
    print_json,
)
from fertool.errors import BadInputError
from fertool.options import Detector


@command(panel=ANALYSIS_PANEL)
def filters(
    model_path: ModelArg = None,
    layer: Annotated[
        str, typer.Option("--layer", help="Layer name (see --list-layers), e.g. featex1, stem.0.")
    ] = "featex1",
    output: Annotated[Path, typer.Option("-o", "--output", help="Figure to write.")] = Path(
        "filters.png"
    ),
    select: Annotated[
        Optional[str],
        typer.Option(
            "--filters",
            help="Filter indices, e.g. 0-15,40 \\[default: the first 64].",
            show_default=False,
        ),
    ] = None,
    steps: Annotated[int, typer.Option("--steps", min=1, help="Gradient-ascent steps.")] = 48,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the starting noise.")] = 0,
    image: Annotated[
        Optional[Path],
        typer.Option(
            "--image",
            help="Instead, draw the layer's outputs (activation maps) for this image.",
            show_default=False,
        ),
    ] = None,
    detect: Annotated[
        bool,
        typer.Option(
            "--detect",
            help="With --image: find the faces in the photo and draw one (see --face), "
            "cropped as `predict` crops it.",
        ),
    ] = False,
    face: Annotated[
        int,
        typer.Option(
            "--face",
            min=1,
            help="With --detect: which face, counted from the left as `predict` lists them (1 = "
            "leftmost).",
        ),
    ] = 1,
    detector: DetectorOpt = Detector.YUNET,
    det_threshold: DetThresholdOpt = 0.6,
    min_face: MinFaceOpt = 16,
    align: AlignOpt = True,
    list_layers_flag: Annotated[
        bool, typer.Option("--list-layers", help="Print the layer names, one per line, and exit.")
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Draw the input that most excites each filter of a layer (gradient ascent), or its outputs
    for an image.

    Example: fertool filters branch1.safetensors --layer featex1 -o filters.png
    """
    from fertool import filters as fx
    from fertool.artifacts import check_output_path
    from fertool.bundled import resolve_model
    from fertool.data import read_image
    from fertool.images import faces_in_photos, parse_indices, to_unit_tensor
    from fertool.plots import activations_figure, filters_figure, save_figure

    if detect and image is None:
        raise BadInputError("--detect finds the face in --image PHOTO; give the photo with --image")
    if face != 1 and not detect:
        raise BadInputError(
            f"--face {face} picks one of the faces --detect finds; add --detect (and --image PHOTO)"
        )
    model, _, model_name = resolve_model(model_path)
    if list_layers_flag:
        for info in fx.list_layers(model):
            out.print(
                f"{info.short_name}\t{info.type}\t{info.channels}x{info.height}x{info.width}",
                highlight=False,
            )
        return
    check_output_path(output, inputs=[model_path, image])
    info = fx.find_layer(model, layer)
    summary: dict[str, Any]
    if image is not None:
        faces, names = (
            faces_in_photos([image], detect_config(detector, det_threshold, min_face, align))
            if detect
            else (read_image(image)[None], [image.name])
        )
        if face > len(faces):
            raise BadInputError(
                f"{image}: --face {face}, but {len(faces)} face(s) found; "
                f"give --face 1 to {len(faces)} (`fertool predict {image}` lists them)"
            )
        pixels = faces[face - 1]
        maps = fx.activation_maps(model, info.name, to_unit_tensor(pixels[None]))
        save_figure(activations_figure(pixels / 255.0, maps, info.short_name), output)
        summary = {
            "output": str(output),
            "layer": info.short_name,
            "image": str(image),
            "maps": list(maps.shape),
        }
        if detect:
            summary.update(face=names[face - 1], faces_found=len(names))
    else:
        chosen = (
            parse_indices(select, "--filters") if select else list(range(min(64, info.channels)))
        )
        vis = fx.visualize_filters(model, info.name, filters=chosen, steps=steps, seed=seed)
        save_figure(
            filters_figure(
                vis.images, vis.filters, info.short_name, inactive=vis.objective_end <= 0
            ),
            output,
        )
        summary = {
            "output": str(output),
            "layer": info.short_name,
            "filters": vis.filters,
            "objective_start": vis.objective_start.tolist(),
            "objective_end": vis.objective_end.tolist(),
            "seconds": vis.seconds,
        }
    if as_json:
        print_json({"model": model_name, **summary})
        return
    out.print(f"{output}: layer {info.short_name} of {model_name}", highlight=False)
