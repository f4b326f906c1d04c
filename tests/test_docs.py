"""The README documents every command, and every command's help carries an example."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.main import get_command

from fertool.cli import app

README = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
COMMANDS = sorted(get_command(app).commands)  # type: ignore[attr-defined]


def test_there_are_commands():
    assert {"prepare", "train-branch", "eval"} <= set(COMMANDS)


@pytest.mark.parametrize("name", COMMANDS)
def test_each_command_has_a_readme_section(name):
    assert f"### {name}\n" in README, f"README.md has no '### {name}' section"
    assert f"fertool {name} " in README, f"README.md shows no example of fertool {name}"


@pytest.mark.parametrize("name", COMMANDS)
def test_each_command_help_has_an_example(name):
    command = get_command(app).commands[name]  # type: ignore[attr-defined]
    assert f"Example: fertool {name}" in (command.help or ""), f"{name} --help has no example"


DOCS = [
    Path(__file__).resolve().parents[1] / "README.md",
    *sorted((Path(__file__).resolve().parents[1] / "docs").glob("*.md")),
]


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
