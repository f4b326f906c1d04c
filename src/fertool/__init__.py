"""fertool: train, evaluate and explain facial-expression classifiers from the shell."""

__version__ = "0.1.0"
