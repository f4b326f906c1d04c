"""Errors a user can cause, and the exit codes the CLI maps them to.

The library raises `FertoolError` (or a subclass) with a one-line message that names the file
and says what to do; `cli/base.py` prints that line and exits with the error's code, no traceback.
Exit codes live here, in one place (after httpie's `status.py`).
"""

from __future__ import annotations

import enum


class ExitCode(enum.IntEnum):
    OK = 0
    ERROR = 1  # anything unexpected: a bug, shown with a traceback under --debug
    USAGE = 2  # Click/Typer's own code for bad options
    BAD_INPUT = 3  # a file the user passed is missing, unreadable or malformed
    WRONG_KIND = 4  # an artifact of another kind than the command needs
    INTERRUPTED = 130  # Ctrl-C: 128 + SIGINT, as shells report it
    TERMINATED = 143  # SIGTERM (kill, a batch scheduler's time limit): 128 + SIGTERM


class FertoolError(Exception):
    """An error the user can fix; `str(err)` is the whole one-line message."""

    exit_code = ExitCode.BAD_INPUT


class BadInputError(FertoolError):
    """A missing, unreadable or malformed input file."""


class WrongKindError(FertoolError):
    """An artifact of another kind, or a model that does not fit the data."""

    exit_code = ExitCode.WRONG_KIND


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the program is, so it unwinds like Ctrl-C: files closed,
    checkpoint kept."""
