"""The model registry, DeXpression's shape and its LRN, and rebuilding a model from its artifact."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from fertool.artifacts import load_artifact, save_tensors
from fertool.errors import BadInputError
from fertool.models import (
    ChannelLRN,
    DeXpression,
    EnsembleClassifier,
    FERClassifier,
    build_classifier,
    create_model,
    list_models,
    model_from_artifact,
)


def test_registry_lists_and_builds_models():
    assert {"dexpression", "tiny"} <= set(list_models())
    assert isinstance(create_model("dexpression"), DeXpression)
    with pytest.raises(BadInputError, match="dexpression"):
        create_model("resnet9000")


def test_dexpression_follows_the_paper_at_48px():
    model = create_model("dexpression", num_classes=7).eval()
    x = torch.rand(2, 1, 48, 48)
    stem = model.stem(x)
    assert stem.shape == (2, 64, 12, 12)  # conv 7x7/2 -> 24, maxpool 3x3/2 -> 12
    block1 = model.featex1(stem)
    assert block1.shape == (2, 272, 12, 12)  # 208 + 64 channels
    assert model.features(x).shape == (2, 272 * 3 * 3)
    assert model(x).shape == (2, 7)
    # Parameter count of the paper's layers at 48x48: two FeatEx blocks dominate.
    params = sum(p.numel() for p in model.parameters())
    assert 400_000 < params < 500_000


def test_deep_and_gentle_variants_keep_the_feature_size():
    x = torch.rand(2, 1, 48, 48)
    deep = create_model("dexpression_bn_deep").eval()
    assert deep.featex3 is not None and deep.featex2(
        deep.pool1(deep.featex1(deep.stem(x)))
    ).shape == (2, 272, 6, 6)
    gentle = DeXpression(batch_norm=True, stem="gentle").eval()
    assert [m.kernel_size for m in gentle.stem if isinstance(m, nn.Conv2d)] == [(3, 3), (3, 3)]
    assert gentle.stem(x).shape == (2, 64, 12, 12) and gentle.featex3 is None
    # The same 3 x 3 x 272 features as the paper's: an ensemble head over any mix has the same
    # width.
    for name in ("dexpression_bn_deep", "dexpression_bn_gentle_deep"):
        model = create_model(name).eval()
        assert model.features(x).shape == (2, 272 * 3 * 3) and model(x).shape == (2, 7)
        # The third block is on the path to the output, not only built:
        # the loss reaches all its weights.
        model(x).square().sum().backward()
        assert all(
            p.grad is not None and p.grad.abs().sum() > 0 for p in model.featex3.parameters()
        )
    with pytest.raises(BadInputError, match="stem 'wide'"):
        DeXpression(stem="wide")
    with pytest.raises(BadInputError, match="blocks 4"):
        DeXpression(blocks=4)


def test_wide_variant_scales_every_conv_and_widens_the_features():
    x = torch.rand(2, 1, 48, 48)
    base, wide = (
        create_model("dexpression_bn_gentle_deep").eval(),
        create_model("dexpression_bn_gentle_wide").eval(),
    )
    base_convs = [m.out_channels for m in base.modules() if isinstance(m, nn.Conv2d)]
    wide_convs = [m.out_channels for m in wide.modules() if isinstance(m, nn.Conv2d)]
    assert wide_convs == [round(c * 1.5) for c in base_convs]
    assert wide.featex3.out_channels == 408 and wide.feature_dim == 408 * 3 * 3
    assert wide.features(x).shape == (2, 408 * 3 * 3) and wide(x).shape == (2, 7)
    with pytest.raises(BadInputError, match="width 0"):
        DeXpression(width=0)


def test_a_branch_trained_before_the_variants_still_loads():
    # results/fer2013 keeps FER2013 branches trained before `stem` and `blocks` existed; a strict
    # load (model_from_artifact) fails on any renamed or missing weight.
    path = (
        Path(__file__).resolve().parents[1]
        / "results"
        / "fer2013"
        / "best-branch1-more.safetensors"
    )
    model = model_from_artifact(load_artifact(path))
    assert model.backbone.featex3 is None and model.backbone.cam_layer == "featex2"
    assert model(torch.rand(2, 1, 48, 48)).shape == (2, 7)


@pytest.mark.parametrize("shape", [(3, 64, 12, 12), (1, 64, 5, 7)])
def test_channel_lrn_equals_pytorch_lrn(shape):
    torch.manual_seed(0)
    x = torch.randn(shape) * 20  # large enough that the normaliser matters
    ours, theirs = ChannelLRN(64, 5, 1e-4, 0.75, 2.0), nn.LocalResponseNorm(5, 1e-4, 0.75, 2.0)
    torch.testing.assert_close(ours(x), theirs(x), rtol=1e-5, atol=1e-5)
    x1 = x.clone().requires_grad_()
    x2 = x.clone().requires_grad_()
    ours(x1).square().sum().backward()
    theirs(x2).square().sum().backward()
    torch.testing.assert_close(x1.grad, x2.grad, rtol=1e-4, atol=1e-4)


def test_channel_lrn_adds_no_weights_to_the_state_dict():
    assert ChannelLRN(64).state_dict() == {}


def test_classifier_normalises_its_input():
    backbone = create_model("tiny")
    clf = FERClassifier(backbone, mean=0.5, std=0.25)
    x = torch.rand(4, 1, 48, 48)
    torch.testing.assert_close(clf(x), backbone((x - 0.5) / 0.25))


# What every branch artifact records besides its architecture (see cli.train_branch_command).
BRANCH_META = {
    "classes": ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"],
    "input_size": [1, 48, 48],
}


def test_model_rebuilds_from_its_file_alone(tmp_path):
    torch.manual_seed(0)
    clf = build_classifier("tiny", {"num_classes": 7}, {"mean": 0.4, "std": 0.2}).eval()
    path = tmp_path / "m.safetensors"
    save_tensors(
        path,
        clf.state_dict(),
        kind="branch",
        meta={
            "arch": "tiny",
            "arch_args": {"num_classes": 7},
            "normalization": {"mean": 0.4, "std": 0.2},
            **BRANCH_META,
        },
    )
    rebuilt = model_from_artifact(load_artifact(path))
    x = torch.rand(3, 1, 48, 48)
    torch.testing.assert_close(rebuilt(x), clf(x))
    assert float(rebuilt.mean) == pytest.approx(0.4)


def test_weights_of_another_architecture_are_refused(tmp_path):
    path = tmp_path / "m.safetensors"
    save_tensors(
        path,
        build_classifier("tiny", {}, None).state_dict(),
        kind="branch",
        meta={"arch": "dexpression", "arch_args": {}, **BRANCH_META},
    )
    with pytest.raises(BadInputError, match="m.safetensors"):
        model_from_artifact(load_artifact(path))


def test_a_file_whose_arguments_ask_for_huge_layers_is_refused_before_allocating(tmp_path):
    """arch_args come from the file: image_size 48000 would make a 16 GB classifier layer.

    Run in a child with its address space capped at 6 GiB: building that layer for real fails
    there for want of memory, so only a check of the shapes before building passes this test.
    """
    import resource
    import subprocess
    import sys

    path = tmp_path / "huge.safetensors"
    save_tensors(
        path,
        build_classifier("dexpression", {}, None).state_dict(),
        kind="branch",
        meta={"arch": "dexpression", "arch_args": {"image_size": 48000}, **BRANCH_META},
    )

    def cap_memory() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (6 * 2**30, 6 * 2**30))

    code = (
        "import sys\nfrom fertool.errors import BadInputError\n"
        "from fertool.models import load_model\n"
        "try:\n    load_model(sys.argv[1])\nexcept BadInputError as err:\n    print(err)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(path)],
        capture_output=True,
        text=True,
        timeout=300,
        preexec_fn=cap_memory,
    )
    assert done.returncode == 0, done.stderr
    assert str(path) in done.stdout and "backbone.fc.weight has shape" in done.stdout, done.stdout


def test_an_unfrozen_ensemble_trains_its_convs_and_keeps_its_batch_norm_statistics():
    torch.manual_seed(0)
    branches = [build_classifier("dexpression_bn", {"num_classes": 7}, None) for _ in range(2)]
    model = EnsembleClassifier(branches, hidden=(16,)).unfreeze().train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    assert model.head.training and not any(b.training for b in model.branches)
    # The branches' own classifiers never reach a penultimate head's output: frozen,
    # so DDP does not wait on them.
    assert all(
        not b.backbone.fc.weight.requires_grad and b.backbone.stem[0].weight.requires_grad
        for b in branches
    )
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    model(torch.rand(8, 1, 48, 48)).sum().backward()
    optimizer.step()
    after = model.state_dict()
    moved = {k for k in before if not torch.equal(before[k], after[k])}
    assert "branches.0.backbone.stem.0.weight" in moved and "head.1.weight" in moved
    assert not any("running_" in k or "num_batches_tracked" in k or ".fc." in k for k in moved)
