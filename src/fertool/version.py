"""fertool's version, in a module of its own: artifacts record it, `fertool --version` prints it,
and reading it does not import the package's public API (`fertool/__init__.py`)."""

__version__ = "0.1.0"
