"""completions/: up to date with the CLI, and completing subcommands and options in a real bash."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
COMPLETIONS = ROOT / "completions"
BIN = Path(sys.executable).parent  # the virtualenv whose `fertool` the scripts call back


def load_generator():
    spec = importlib.util.spec_from_file_location(
        "completions_script", ROOT / "scripts" / "completions.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_committed_completions_are_what_the_cli_generates(tmp_path):
    generator = load_generator()
    generator.main(["-o", str(tmp_path)])
    for name in generator.FILES.values():
        fresh, kept = (tmp_path / name).read_text(), (COMPLETIONS / name).read_text()
        assert kept == fresh, f"completions/{name} is stale: run `make completions`"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(generator.FILES.values())


def bash_complete(*words: str) -> list[str]:
    """COMPREPLY after Tab at the end of `words`, from completions/fertool.bash in a real bash."""
    if shutil.which("bash") is None:
        pytest.skip("no bash on this machine")
    if not (BIN / "fertool").exists():
        pytest.skip(f"no fertool entry point in {BIN}: pip install -e . first")
    quoted = " ".join(f"'{w}'" for w in words)
    script = (
        f"source '{COMPLETIONS / 'fertool.bash'}'\n"
        f"COMP_WORDS=({quoted}); COMP_CWORD={len(words) - 1}\n"
        "_fertool_completion fertool\n"
        'printf "%s\\n" "${COMPREPLY[@]}"\n'
    )
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    env.pop("_FERTOOL_COMPLETE", None)
    result = subprocess.run(
        ["bash", "--norc", "--noprofile", "-c", script],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return [line for line in result.stdout.splitlines() if line]


def test_bash_completes_subcommands():
    assert bash_complete("fertool", "tr") == ["train-branch"]
    assert {"predict", "prepare"} <= set(bash_complete("fertool", "pr"))


def test_bash_completes_options_of_a_subcommand():
    assert "--epochs" in bash_complete("fertool", "train-branch", "--ep")
    assert bash_complete("fertool", "predict", "--anno") == ["--annotate"]


@pytest.mark.parametrize(
    ("shell", "check"), [("zsh", ["zsh", "-n"]), ("fish", ["fish", "--no-execute"])]
)
def test_zsh_and_fish_scripts_parse(shell, check):
    if shutil.which(check[0]) is None:
        pytest.skip(f"no {shell} on this machine")
    path = COMPLETIONS / load_generator().FILES[shell]
    result = subprocess.run([*check, str(path)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
