"""fertool timeline: expression probabilities against time, one panel per tracked face.

fertool predict clip.mp4 --smooth --csv > rows.csv
fertool timeline rows.csv -o timeline.png
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from fertool.cli.base import ANALYSIS_PANEL, JsonOpt, command, out, print_json


@command(panel=ANALYSIS_PANEL)
def timeline(
    rows: Annotated[
        Path,
        typer.Argument(
            metavar="ROWS",
            help="Rows of `fertool predict VIDEO`, as --csv or --json (JSON Lines).",
            show_default=False,
        ),
    ],
    output: Annotated[
        Path, typer.Option("-o", "--output", help="Figure to write (png, pdf or svg).")
    ] = Path("timeline.png"),
    raw: Annotated[
        bool,
        typer.Option(
            "--raw", help="Draw the model's own probabilities even where rows are smoothed."
        ),
    ] = False,
    max_tracks: Annotated[
        int,
        typer.Option(
            "--max-tracks", min=1, help="Draw the tracks seen longest, at most this many."
        ),
    ] = 6,
    title: Annotated[
        Optional[str],
        typer.Option(
            "--title", help="Figure title \\[default: the video's name].", show_default=False
        ),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Draw each tracked face's expression probabilities against time, one panel per track, in
    the class colours of every figure; smoothed probabilities where the rows have them (predict
    --smooth).

    Example: fertool timeline rows.csv -o timeline.png
    """
    from fertool.artifacts import check_output_path
    from fertool.plots import save_figure, timeline_figure
    from fertool.timeline import read_tracks

    check_output_path(output, inputs=[rows])
    panels, classes, smoothed = read_tracks(rows, raw=raw)
    longest = sorted(panels, key=lambda key: -len(panels[key][0]))[:max_tracks]
    shown = sorted(longest, key=lambda key: (key[0], panels[key][0][0]))
    videos = sorted({video for video, _ in shown})
    named = [
        (
            f"{Path(video).name + ' · ' if len(videos) > 1 else ''}track {track}",
            *panels[(video, track)],
        )
        for video, track in shown
    ]
    heading = title or ", ".join(Path(v).name for v in videos)
    kind = "smoothed probability" if smoothed else "probability"
    save_figure(timeline_figure(named, classes, title=heading, ylabel=kind), output)
    summary = {
        "output": str(output),
        "tracks": [{"video": v, "track": t, "rows": len(panels[(v, t)][0])} for v, t in shown],
        "tracks_left_out": len(panels) - len(shown),
        "smoothed": smoothed,
    }
    if as_json:
        print_json(summary)
        return
    left = (
        f" ({summary['tracks_left_out']} shorter ones left out)"
        if summary["tracks_left_out"]
        else ""
    )
    out.print(f"{output}: {len(shown)} track(s), {kind} against time{left}", highlight=False)
