"""The facts every part of fertool shares: the face size, the classes and the splits."""

from __future__ import annotations

from fertool.options import Split

# FER2013's faces are 48x48 grayscale; every model, crop and figure works at this size.
IMAGE_SIZE = 48
# FER2013's label order (the `emotion` column of fer2013.csv).
CLASSES: tuple[str, ...] = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
# Codes 0-2 come from the source; 3 marks training faces that `prepare --holdout` set aside, so
# no branch trains on them and an ensemble head can learn from faces its branches never saw.
SPLITS: tuple[str, ...] = Split.values()  # train, val, test, holdout: split codes 0, 1, 2, 3
