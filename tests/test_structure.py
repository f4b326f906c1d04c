"""The shape of the package: no import cycle, a library that never imports the command line, a
command line whose modules import only `cli.base` and the library, and error messages that name
only options that exist.

Imports are read from the source (ast), every one of them: at the top of a module, inside a
function (fertool imports torch late so `--help` stays quick) or under TYPE_CHECKING.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

from typer.main import get_command

from fertool.cli import app

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "fertool"


def module_name(path: Path) -> str:
    parts = ["fertool", *path.relative_to(PACKAGE).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in PACKAGE.rglob("*.py")}


def imports_of(name: str) -> set[str]:
    """The fertool modules `name` imports (`from fertool.cli import prepare` is the module)."""
    found = set()
    for node in ast.walk(ast.parse(MODULES[name].read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names}
    return {target for target in found if target in MODULES and target != name}


GRAPH = {name: imports_of(name) for name in MODULES}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as the list of modules on it, or None (depth-first search)."""
    state: dict[str, str] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = "open"
        stack.append(node)
        for target in sorted(graph[node]):
            if state.get(target) == "open":
                return stack[stack.index(target) :] + [target]
            if target not in state and (cycle := visit(target)):
                return cycle
        state[node] = "done"
        stack.pop()
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_graph_is_read():
    assert "fertool.cli.base" in GRAPH["fertool.cli.prepare"]
    assert "fertool.train" in GRAPH["fertool.branch_run"]


def test_a_cycle_is_found_where_there_is_one():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_there_is_no_import_cycle():
    assert find_cycle(GRAPH) is None


def test_the_library_never_imports_the_command_line():
    library = [
        name for name in GRAPH if not name.startswith("fertool.cli") and name != "fertool.__main__"
    ]
    offenders = {
        name: sorted(t for t in GRAPH[name] if t.startswith("fertool.cli")) for name in library
    }
    assert not {name: targets for name, targets in offenders.items() if targets}


def test_a_command_module_imports_only_base_and_the_library():
    commands = [
        name for name in GRAPH if name.startswith("fertool.cli.") and name != "fertool.cli.base"
    ]
    assert len(commands) >= 10
    for name in commands:
        cli_imports = {t for t in GRAPH[name] if t.startswith("fertool.cli")}
        assert cli_imports <= {"fertool.cli.base"}, (name, cli_imports)
    assert not {t for t in GRAPH["fertool.cli.base"] if t.startswith("fertool.cli")}


def test_importing_fertool_does_not_import_the_command_line():
    code = (
        "import sys, fertool; "
        "print(sorted(m for m in sys.modules if m in ('typer', 'fertool.cli')))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


# ---------------------------------------------------------------- options named in messages

# "--flag" in an f-string or string literal of the package's source.
FLAG = re.compile(r"(?<![\w-])--([a-z][a-z0-9-]+)")
# Flags of other programs that messages quote on purpose.
FOREIGN = {"nproc-per-node", "nnodes", "standalone"}  # torchrun's


def flags_of_the_app() -> set[str]:
    names = {"help"}  # -h/--help, Typer's
    group = get_command(app)
    for command in [group, *group.commands.values()]:  # type: ignore[attr-defined]
        for param in command.params:
            for opt in [*param.opts, *getattr(param, "secondary_opts", [])]:
                if opt.startswith("--"):
                    names.add(opt[2:])
    return names


def strings_in(path: Path) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            found.append((node.lineno, node.value))
    return found


def test_every_flag_a_message_names_exists():
    known = flags_of_the_app() | FOREIGN
    unknown = []
    for path in MODULES.values():
        for line, text in strings_in(path):
            for flag in FLAG.findall(text):
                if flag not in known:
                    unknown.append(f"{path.name}:{line}: --{flag}")
    assert not unknown, "\n".join(unknown)
