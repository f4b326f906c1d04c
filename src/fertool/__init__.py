"""fertool: train, evaluate and explain facial-expression classifiers from the shell, and use
them from Python (`fertool.load_model`, `fertool.predict`, `fertool.predict_proba`; docs/API.md).

Importing fertool is cheap: torch, ONNX Runtime and the command line load on first use.
"""

__version__ = "0.1.0"

from fertool.api import FacePrediction, load_model, predict, predict_proba  # noqa: E402

__all__ = ["FacePrediction", "__version__", "load_model", "predict", "predict_proba"]
