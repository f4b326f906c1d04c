"""The docs a user reads stay true: docs/CLI.md is the app's current reference, the README names
every command and links to it, every command's help has an example, and every `fertool` command
in the README's code blocks parses as written (options exist, values are allowed)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
from clitools import load_script
from typer.main import get_command

from fertool.cli import app

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")
GROUP = get_command(app)
COMMANDS = sorted(GROUP.commands)  # type: ignore[attr-defined]


def test_there_are_commands():
    assert {"prepare", "train-branch", "eval"} <= set(COMMANDS)


def test_the_cli_reference_is_current():
    current = load_script("cli_docs").cli_reference()
    written = (ROOT / "docs" / "CLI.md").read_text(encoding="utf-8")
    assert written == current, "docs/CLI.md is stale: run `make docs` (scripts/cli_docs.py)"


@pytest.mark.parametrize("name", COMMANDS)
def test_each_command_is_in_the_reference_and_the_readme(name):
    reference = (ROOT / "docs" / "CLI.md").read_text(encoding="utf-8")
    assert f"## `fertool {name}`" in reference
    assert f"docs/CLI.md#fertool-{name}" in README, f"README.md does not link {name} to docs/CLI.md"


@pytest.mark.parametrize("name", COMMANDS)
def test_each_command_help_has_an_example(name):
    command = GROUP.commands[name]  # type: ignore[attr-defined]
    assert f"Example: fertool {name}" in (command.help or ""), f"{name} --help has no example"


def code_block_lines(text: str) -> list[str]:
    """The lines inside ``` fences, with `\\`-continued lines joined."""
    lines, inside, pending = [], False, ""
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            inside = not inside
            continue
        if inside:
            pending += line.rstrip()
            if pending.endswith("\\"):
                pending = pending[:-1] + " "
                continue
            lines.append(pending.strip())
            pending = ""
    return lines


def readme_commands() -> list[str]:
    """Every `fertool ...` in the README's code blocks (after `$ `, env assignments or `for`)."""
    found = []
    for line in code_block_lines(README):
        line = line.split("  #")[0]  # a trailing comment
        for part in re.split(r";|&&|\|", line):
            words = part.strip().removeprefix("$ ").split()
            while words and ("=" in words[0] or words[0] in ("do", "then")):
                words = words[1:]
            if words[:1] == ["fertool"]:
                found.append(" ".join(words))
    return found


def test_the_readme_has_commands_to_check():
    assert len(readme_commands()) >= 10


@pytest.mark.parametrize("line", readme_commands())
def test_each_readme_command_parses(line):
    """Click parses the line as the shell would give it: an option that does not exist, a value
    outside its choices or range, or a missing argument fails here, not in a user's terminal."""
    words = shlex.split(line.replace("$seed", "1").replace("$s", "1"))[1:]
    if not words or words[0].startswith("-"):
        return  # `fertool --help`
    command = GROUP.commands[words[0]]  # type: ignore[attr-defined]
    with command.make_context(f"fertool {words[0]}", words[1:]):
        pass


DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_code_blocks_are_closed_and_hold_every_command(doc):
    """A stray fence turns the rest of a block into prose (a `# comment` into a heading)."""
    inside, stray = False, []
    for number, line in enumerate(doc.read_text(encoding="utf-8").splitlines(), 1):
        if line.lstrip().startswith("```"):
            inside = not inside
        elif not inside and any(line.lstrip().startswith(f"fertool {name} ") for name in COMMANDS):
            stray.append(f"{doc.name}:{number}: {line.strip()}")
    assert not inside, f"{doc.name}: a code block is never closed"
    assert not stray, "commands outside code blocks:\n" + "\n".join(stray)


def python_blocks(text: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


def test_the_readme_python_example_runs(tmp_path, monkeypatch, capsys):
    """The README's Python example, as written, on scikit-image's astronaut photo."""
    from PIL import Image
    from skimage import data

    blocks = python_blocks(README)
    assert blocks, "README.md has no ```python block"
    Image.fromarray(data.astronaut()).save(tmp_path / "astronaut.png")
    load_script("demo_video").main(tmp_path / "clip.mp4")  # the video example's clip
    capsys.readouterr()  # what the script printed
    monkeypatch.chdir(tmp_path)
    for block in blocks:
        exec(compile(block, "README.md", "exec"), {"__name__": "readme"})
    printed = capsys.readouterr().out.split()
    assert printed[0] == "happy" and float(printed[1]) > 0.5, printed
    video = " ".join(printed[printed.index("0") :])  # frame, time, track, label per row
    assert video.startswith("0 0.0 1 happy"), printed
