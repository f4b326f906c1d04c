"""Shared fixtures: real FER2013 (skipped where absent), synthetic data sets,
tiny trained models."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

# Two cores: keep the tests from fighting over threads, and make CPU runs reproducible. Under
# pytest-xdist (`make test` runs two workers) each worker takes one core.
torch.set_num_threads(1 if os.environ.get("PYTEST_XDIST_WORKER") else min(2, os.cpu_count() or 1))


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--run-slow", action="store_true", help="also run tests marked slow")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--run-slow"):
        return
    skip = pytest.mark.skip(reason="slow: run with --run-slow (make test-all)")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


def find_fer2013() -> Path | None:
    """The image-folder FER2013 beside the repository (../shared/fer2013) or $FERTOOL_FER2013."""
    candidates = [
        os.environ.get("FERTOOL_FER2013"),
        Path(__file__).resolve().parents[2] / "shared" / "fer2013",
    ]
    for candidate in candidates:
        if candidate and (Path(candidate) / "train").is_dir():
            return Path(candidate)
    return None


@pytest.fixture(scope="session")
def fer2013_root() -> Path:
    root = find_fer2013()
    if root is None:
        pytest.skip(
            "real FER2013 not found: put the image folders at ../shared/fer2013 or set "
            "FERTOOL_FER2013"
        )
    return root


def write_dataset(path: Path, raw) -> Path:
    """`raw` (a fertool.data.RawDataset) as the dataset artifact `fertool prepare` would write."""
    from fertool.artifacts import save_tensors
    from fertool.prepare import dataset_artifact

    tensors, meta = dataset_artifact(raw)
    save_tensors(path, tensors, kind="dataset", meta=meta)
    return path


@pytest.fixture(scope="session")
def synthetic_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A prepared synthetic dataset artifact (1200 faces) shared by the whole session."""
    from fertool.data import synthetic_faces

    return write_dataset(
        tmp_path_factory.mktemp("data") / "synthetic.safetensors", synthetic_faces(1200, seed=0)
    )


@pytest.fixture(scope="session")
def small_synthetic_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """300 synthetic faces: for tests of plumbing (scripts, stopping and resuming), where what a
    model learns is not checked."""
    from fertool.data import synthetic_faces

    return write_dataset(
        tmp_path_factory.mktemp("data") / "small.safetensors", synthetic_faces(300, seed=0)
    )


@pytest.fixture(scope="session")
def easy_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """1400 noisy grey squares whose brightness is their class: any model learns them in one
    epoch, so a test of what a model learns from its targets does not hang on a lucky seed."""
    import numpy as np

    from fertool.constants import SPLITS
    from fertool.data import RawDataset

    rng = np.random.default_rng(0)
    labels = rng.permutation(np.arange(1400) % 7)
    images = np.clip(
        20 + 32 * labels[:, None, None] + rng.normal(0, 8, (1400, 48, 48)), 0, 255
    ).astype(np.uint8)
    split = np.where(np.arange(1400) % 5 == 0, SPLITS.index("val"), SPLITS.index("train")).astype(
        np.uint8
    )
    raw = RawDataset(images, labels, split, "test:brightness")
    return write_dataset(tmp_path_factory.mktemp("data") / "easy.safetensors", raw)


@pytest.fixture(scope="session")
def tiny_branch(synthetic_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A `tiny` branch trained for 2 epochs on the synthetic faces, through the CLI."""
    from clitools import invoke

    path = tmp_path_factory.mktemp("models") / "tiny.safetensors"
    result = invoke(
        "train-branch",
        synthetic_data,
        "-o",
        path,
        "--arch",
        "tiny",
        "--epochs",
        2,
        "--lr",
        "3e-3",
        "--seed",
        1,
    )
    assert result.exit_code == 0, result.output
    return path
