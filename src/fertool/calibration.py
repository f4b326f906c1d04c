"""Temperature scaling: one number T that makes a model's confidence mean what it says.

    result = calibrate_model(model, meta, dataset, split="val")     # fitted on validation faces
    save_tensors(out, tensors, kind, {**meta, **result.metadata()})  # `fertool calibrate` does this

Probabilities become the mean over test-time views of softmax(logits / T) (Guo et al. 2017). T
divides every logit alike, so one view's predicted class never changes; with several views T
reweights them in the mean and can move a face whose views disagree (none in fp32 for the bundled
model, 3 of 3,589 in bf16). T > 1 softens an overconfident model, T < 1 sharpens an
underconfident one. T is stored as `temperature` in the model file's metadata (absent means 1);
models.load_model puts it on the model and evaluate.tta_logits applies it, so eval, predict and
saliency's probabilities all use it, and `fertool export` reads the same key. Fitted by LBFGS on
the validation split's negative log-likelihood, never on a test split.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from fertool.artifacts import Artifact
from fertool.errors import BadInputError
from fertool.evaluate import model_tta, select_split, to_input, tta_views
from fertool.runtime import autocast, eval_mode

# Splits a temperature may be fitted on: the test split is for the final number only.
FIT_SPLITS = ("val", "holdout")


@torch.inference_mode()
def view_logits(
    model: nn.Module,
    images: torch.Tensor,
    device: torch.device,
    dtype: torch.dtype | None = None,
    batch_size: int = 100,
    tta: str = "none",
) -> torch.Tensor:
    """Raw logits (float32, CPU) of every test-time view: views x N x K, before any temperature,
    so a temperature can be fitted to the mean of the views' softmax as eval computes it."""
    outputs = []
    with eval_mode(model):
        for start in range(0, len(images), batch_size):
            batch = to_input(images[start : start + batch_size], device)
            views = tta_views(batch, tta)
            with autocast(device, dtype):
                raw = model(torch.cat(views)).float()
            outputs.append(raw.view(len(views), len(batch), -1))
    return torch.cat(outputs, dim=1).cpu()


def tempered_log_probs(logits: torch.Tensor, temperature: torch.Tensor | float) -> torch.Tensor:
    """views x N x K logits -> N x K log of the views' mean softmax(logits / T), as eval's."""
    return (logits / temperature).log_softmax(dim=-1).logsumexp(dim=0) - math.log(len(logits))


def fit_temperature(logits: torch.Tensor, labels: torch.Tensor, steps: int = 100) -> float:
    """The T > 0 that minimises the mean NLL of `labels` under tempered_log_probs(logits, T).

    LBFGS on log T (so T stays positive) from T = 1: one parameter, a smooth convex-in-practice
    loss, converged in a few dozen function evaluations.
    """
    logits, labels = logits.detach().double(), labels.long()
    log_t = torch.zeros((), dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS(
        [log_t], lr=0.5, max_iter=steps, line_search_fn="strong_wolfe", tolerance_change=1e-12
    )

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = nn.functional.nll_loss(tempered_log_probs(logits, log_t.exp()), labels)
        loss.backward()
        return loss

    with torch.enable_grad():
        optimizer.step(closure)
    return float(log_t.detach().exp())


def scores(logits: torch.Tensor, labels: torch.Tensor, temperature: float) -> dict[str, float]:
    """NLL, ECE and Brier of the tempered probabilities (stats.py's definitions)."""
    from fertool.stats import brier_score, expected_calibration_error, negative_log_likelihood

    probs = tempered_log_probs(logits.double(), temperature).exp().numpy()
    truth = labels.numpy()
    return {
        "nll": negative_log_likelihood(probs, truth),
        "ece": expected_calibration_error(probs, truth),
        "brier": brier_score(probs, truth),
    }


@dataclass
class Calibration:
    """A fitted temperature, the scores before and after it, and the held-out check."""

    temperature: float
    split: str
    tta: str
    count: int
    before: dict[str, float]
    after: dict[str, float]
    # Fitted on one half of the split, scored on the other: an honest after-ECE, since scoring
    # on the faces T was fitted to flatters it.
    held_out: dict[str, Any]

    def metadata(self) -> dict[str, Any]:
        """What the calibrated model file gains: `temperature` (the contract eval, predict and
        export read) and how it was fitted."""
        return {
            "temperature": self.temperature,
            "calibration": {
                "split": self.split,
                "tta": self.tta,
                "count": self.count,
                "method": "temperature scaling, LBFGS on NLL",
                "before": self.before,
                "after": self.after,
                "held_out": self.held_out,
            },
        }


def held_out_check(logits: torch.Tensor, labels: torch.Tensor, seed: int = 0) -> dict[str, Any]:
    """Fit T on a random half of the faces, score the other half before and after."""
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))
    fit, check = order[: len(order) // 2], order[len(order) // 2 :]
    temperature = fit_temperature(logits[:, fit], labels[fit])
    return {
        "temperature": temperature,
        "fit_count": len(fit),
        "check_count": len(check),
        "before": scores(logits[:, check], labels[check], 1.0),
        "after": scores(logits[:, check], labels[check], temperature),
        "seed": seed,
    }


def calibrate_model(
    model: nn.Module,
    meta: dict[str, Any],
    dataset: Artifact,
    split: str = "val",
    tta: str = "auto",
    device: str = "auto",
    precision: str = "auto",
    batch_size: int = 100,
) -> Calibration:
    """Fit the temperature of `model` on `split` of `dataset`, with the views eval will use."""
    from fertool.runtime import resolve_device, resolve_precision

    if split == "test":
        raise BadInputError(
            "--split test: a temperature is never fitted on the test split (the test score "
            "would then flatter the model); use --split val"
        )
    if split not in FIT_SPLITS:
        raise BadInputError(
            f"--split {split}: the model learnt these faces, so its confidence on them is not "
            "its confidence on new ones; use --split val"
        )
    tta = model_tta(meta, tta)
    images, labels, _ = select_split(dataset, split)
    run_device = resolve_device(device)
    dtype = resolve_precision(precision, run_device)
    logits = view_logits(
        model.to(run_device).to(memory_format=torch.channels_last),
        images,
        run_device,
        dtype,
        batch_size,
        tta,
    )
    model.cpu()
    temperature = fit_temperature(logits, labels)
    return Calibration(
        temperature=temperature,
        split=split,
        tta=tta,
        count=len(labels),
        before=scores(logits, labels, 1.0),
        after=scores(logits, labels, temperature),
        held_out=held_out_check(logits, labels),
    )
