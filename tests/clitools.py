"""CLI test helpers shared by test_cli.py, test_bad_input.py and the other command tests."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from typing import Any
from unittest import mock

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from fertool.cli import app
from fertool.cli import base as cli

runner = CliRunner()


@pytest.fixture(autouse=True)
def _debug_off(monkeypatch: pytest.MonkeyPatch) -> None:
    """--debug flips a module-level switch that outlives the invocation; keep tests independent."""
    if isinstance(getattr(cli, "_debug", None), dict):
        monkeypatch.setitem(cli._debug, "on", False)


# ---------------------------------------------------------------- helpers


def invoke(*args: Any) -> Any:
    """Run fertool in this process, with the argv a shell would give it (models record it as
    their command)."""
    argv = [str(a) for a in args]
    with mock.patch.object(sys, "argv", ["fertool", *argv]):
        return runner.invoke(app, argv)


def stderr_of(result: Any) -> str | None:
    """stderr when the runner captures it separately (typer's runner, click >= 8.2), else None."""
    try:
        return result.stderr
    except (ValueError, AttributeError):  # click < 8.2 with mix_stderr=True
        return None


def ok(result: Any) -> Any:
    assert result.exit_code == 0, f"exit {result.exit_code}\n{result.output}\n{result.exception!r}"
    assert "Traceback" not in result.output
    return result


def json_of(result: Any) -> dict[str, Any]:
    """--json prints exactly one JSON object on stdout (progress and logs go to stderr)."""
    ok(result)
    stdout = result.stdout
    lines = [line for line in stdout.splitlines() if line.strip()]
    assert len(lines) == 1, stdout
    payload = json.loads(lines[0])
    assert isinstance(payload, dict)
    return payload


def one_line_error(result: Any, *needles: str, code: int | None = None) -> str:
    """A user's mistake: non-zero exit, exactly one line naming what is wrong, no traceback."""
    assert result.exit_code != 0, result.output
    if code is not None:
        assert result.exit_code == code, (result.exit_code, result.output)
    # A handled error leaves through SystemExit; anything else would print a traceback for real.
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    stderr = stderr_of(result)
    text = stderr if stderr is not None else result.output
    lines = [line for line in text.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one line, got:\n{text}"
    if stderr is not None:
        assert result.stdout.strip() == "", f"nothing on stdout on error, got:\n{result.stdout}"
    line = lines[0]
    for needle in needles:
        assert needle in line, f"{needle!r} not in {line!r}"
    return line


def listing(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def assert_real_png(path: Path, min_side: int = 200) -> np.ndarray:
    """A figure a command wrote: a PNG that decodes, is big enough and is not blank."""
    with Image.open(path) as image:
        assert image.format == "PNG"
        pixels = np.asarray(image.convert("RGB"))
    assert min(pixels.shape[:2]) >= min_side
    assert pixels.std() > 10, "the figure is blank"
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 50, "the figure has almost no content"
    return pixels


def copy_with_meta(source: Path, path: Path, **changes: Any) -> Path:
    """A copy of the artifact `source` with metadata fields changed, e.g. `tta="crops"`: a model
    file asking for test-time augmentation, as scripts/pack_model.py writes the bundled model's."""
    from fertool.artifacts import load_artifact, save_tensors

    artifact = load_artifact(source)
    meta = {
        k: v for k, v in artifact.meta.items() if k not in ("kind", "schema", "fertool_version")
    }
    save_tensors(path, artifact.tensors, kind=artifact.meta["kind"], meta={**meta, **changes})
    return path


def load_script(name: str) -> Any:
    """scripts/NAME.py as a module (the scripts are not a package)."""
    path = Path(__file__).resolve().parents[1] / "scripts" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module
