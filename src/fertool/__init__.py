"""fertool: train, evaluate and explain facial-expression classifiers from the shell, and use
them from Python (`fertool.load_model`, `fertool.predict`, `fertool.predict_proba`,
`fertool.predict_video`; docs/API.md).

Importing fertool is cheap: torch, ONNX Runtime and the command line load on first use.
"""

from fertool.api import FacePrediction, load_model, predict, predict_proba, predict_video
from fertool.version import __version__

__all__ = [
    "FacePrediction",
    "__version__",
    "load_model",
    "predict",
    "predict_proba",
    "predict_video",
]
