"""Helpers for tests of the training loop."""

from __future__ import annotations

import contextlib
from typing import Iterator

import pytest


@contextlib.contextmanager
def ctrl_c_in_epoch(epoch: int) -> Iterator[None]:
    """Inside the block, the training loop raises KeyboardInterrupt as epoch `epoch` starts
    (after the previous epochs finished and were checkpointed), as a user's Ctrl-C would."""
    import fertool.train as train_module

    real, calls = train_module.train_one_epoch, []

    def stop_at_epoch(*args, **kwargs):
        calls.append(1)
        if len(calls) == epoch:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(train_module, "train_one_epoch", stop_at_epoch)
        with pytest.raises(KeyboardInterrupt):
            yield
