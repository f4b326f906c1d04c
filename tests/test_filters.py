"""Layers, activation maps and filter visualisation: names resolve, ascent works,
the model is untouched."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from fertool.errors import BadInputError
from fertool.filters import (
    LayerCapture,
    activation_maps,
    list_layers,
    resolve_layer,
    selected_channels,
    visualize_filters,
)
from fertool.models import EnsembleClassifier, FERClassifier, create_model


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    threads = torch.get_num_threads()  # see test_saliency.one_thread
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def model() -> FERClassifier:
    torch.manual_seed(0)
    return FERClassifier(create_model("dexpression"), mean=0.5, std=0.25).eval()


@pytest.fixture(scope="module")
def face() -> torch.Tensor:
    return torch.rand(1, 1, 48, 48, generator=torch.Generator().manual_seed(0))


def hook_state(model: nn.Module) -> dict[str, tuple]:
    """Hooks of every kind on every module, and each ReLU's inplace flag (the ascent flips it)."""
    return {
        name: (
            len(m._forward_hooks),
            len(m._backward_hooks),
            len(m._forward_pre_hooks),
            getattr(m, "inplace", None),
        )
        for name, m in model.named_modules()
    }


def test_list_layers_shows_every_map_layer_with_its_size(model):
    layers = {
        info.name: (info.name, info.type, info.channels, info.height, info.width)
        for info in list_layers(model)
    }
    modules = dict(model.named_modules())
    assert set(layers) <= set(modules)
    assert layers["backbone.stem.0"][1:] == ("Conv2d", 64, 24, 24)
    assert layers["backbone.featex1"][1:] == ("FeatEx", 272, 12, 12)
    assert layers["backbone.featex2"][1:] == ("FeatEx", 272, 6, 6)
    assert layers["backbone.pool2"][1:] == ("MaxPool2d", 272, 3, 3)
    assert not any(
        isinstance(modules[name], nn.ReLU) for name in layers
    )  # same map as the conv before
    assert [info.short_name for info in list_layers(model)][:2] == [
        "stem.0",
        "stem.2",
    ]  # forward order


def test_short_and_full_names_resolve_to_the_same_layer(model):
    for info in list_layers(model):
        assert resolve_layer(model, info.name) == info.name
        assert resolve_layer(model, info.short_name) == info.name
    torch.manual_seed(1)
    ensemble = EnsembleClassifier(
        [FERClassifier(create_model("dexpression")), FERClassifier(create_model("tiny"))]
    )
    assert resolve_layer(ensemble, "branches.0.featex1") == "branches.0.backbone.featex1"
    assert resolve_layer(ensemble, "branches.1.body.2") == "branches.1.backbone.body.2"


def test_unknown_layer_lists_the_blocks_and_how_to_see_all(model):
    with pytest.raises(BadInputError) as error:
        resolve_layer(model, "featex3")
    message = str(error.value)
    assert (
        "'featex3'" in message
        and "featex1" in message
        and "featex2" in message
        and "--list-layers" in message
    )
    assert "\n" not in message
    with pytest.raises(BadInputError, match="--list-layers"):
        activation_maps(model, "conv9", torch.rand(1, 1, 48, 48))


def test_activation_maps_are_the_layer_outputs(model, face):
    maps = activation_maps(model, "featex1", face)
    assert maps.shape == (272, 12, 12) and maps.dtype == np.float32
    with torch.no_grad():
        expected = model.backbone.featex1(model.backbone.stem(model.normalize(face)))[0]
    np.testing.assert_allclose(maps, expected.numpy(), rtol=1e-5, atol=1e-6)
    assert activation_maps(model, "backbone.stem.0", face).shape == (64, 24, 24)
    assert activation_maps(model, "featex2", face[0, 0]).shape == (
        272,
        6,
        6,
    )  # a bare 48 x 48 works too
    with pytest.raises(BadInputError, match="one image"):
        activation_maps(model, "featex1", torch.rand(2, 1, 48, 48))


@pytest.mark.parametrize("arch", ["dexpression", "dexpression_bn"])
def test_selected_channels_equal_the_full_layer_output(arch):
    torch.manual_seed(0)
    model = FERClassifier(create_model(arch)).eval()
    for bn in (m for m in model.modules() if isinstance(m, nn.BatchNorm2d)):  # not the identity
        (
            bn.running_mean.uniform_(-0.5, 0.5),
            bn.running_var.uniform_(0.5, 2),
            bn.weight.data.uniform_(0.5, 2),
        )
    x = torch.rand(6, 1, 48, 48, generator=torch.Generator().manual_seed(2))
    for info in list_layers(model):
        channels = torch.randint(0, info.channels, (6,), generator=torch.Generator().manual_seed(3))
        channels[0], channels[-1] = 0, info.channels - 1  # both ends: FeatEx's two paths
        with LayerCapture(model, info.name) as capture, torch.no_grad():
            full = capture.run(x)[torch.arange(6), channels][:, None]
        with LayerCapture(model, info.name, stop="input") as capture, torch.no_grad():
            picked = selected_channels(capture.module, capture.run(x), channels)
        torch.testing.assert_close(picked, full, rtol=1e-4, atol=1e-5, msg=info.name)


def test_gradient_ascent_raises_every_filters_activation(model):
    filters = list(range(0, 272, 17))  # 16 filters, from both paths of the block
    start = visualize_filters(model, "featex1", filters=filters, steps=0)
    result = visualize_filters(model, "featex1", filters=filters, steps=24)
    assert result.images.shape == (16, 48, 48) and result.filters == filters
    assert result.layer == "backbone.featex1"
    assert 0.0 <= result.images.min() and result.images.max() <= 1.0
    np.testing.assert_allclose(result.objective_start, start.objective_end, rtol=1e-5, atol=1e-7)
    gained = result.objective_end > result.objective_start + 1e-3
    assert gained.mean() >= 0.9, (result.objective_start, result.objective_end)
    assert np.median(result.objective_end) > 3 * np.median(result.objective_start)  # measured: 7x
    # The pictures moved well away from the faint starting noise and are no longer flat.
    assert np.abs(result.images - start.images).mean() > 0.05
    assert result.images.std(axis=(1, 2)).mean() > 3 * start.images.std(axis=(1, 2)).mean()


def test_a_filter_that_is_off_for_the_start_image_still_learns():
    # The bias keeps the unit off for the gray start image (0.9 * 0.5 - 0.6 < 0), a brighter
    # image turns it on: a plain ReLU gives no gradient at the start, the redirected one does.
    conv = nn.Conv2d(1, 1, 3)
    with torch.no_grad():
        conv.weight.fill_(0.1)
        conv.bias.fill_(-0.6)
    model = nn.Sequential(nn.Sequential(conv, nn.ReLU(inplace=True))).eval()
    result = visualize_filters(model, "0", steps=32, lr=0.1)
    assert result.objective_start[0] == 0.0
    assert result.objective_end[0] > 0.02  # measured 0.05; a plain ReLU would leave it at 0
    assert model[0][1].inplace  # restored


def test_the_model_is_untouched_and_hooks_are_gone(model, face):
    before = hook_state(model)
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    model.train()
    visualize_filters(model, "featex2", filters=[0, 250], steps=2)
    activation_maps(model, "featex1", face)
    assert model.training
    model.eval()
    assert hook_state(model) == before
    assert all(p.grad is None for p in model.parameters())
    for key, value in model.state_dict().items():
        torch.testing.assert_close(value, weights[key])
    with pytest.raises(RuntimeError, match="boom"):
        with LayerCapture(model, "featex1") as capture:
            capture.run(face)
            assert hook_state(model) != before
            raise RuntimeError("boom")
    with pytest.raises(BadInputError):
        visualize_filters(model, "featex1", filters=[300], steps=1)
    assert hook_state(model) == before


def test_visualisation_works_inside_inference_mode(model):
    expected = visualize_filters(model, "stem.0", filters=[3], steps=2)
    with torch.inference_mode():
        result = visualize_filters(model, "stem.0", filters=[3], steps=2)
    np.testing.assert_allclose(result.images, expected.images, rtol=1e-5, atol=1e-6)


def test_filter_indices_are_checked(model):
    with pytest.raises(
        BadInputError, match=r"filter 272 of featex1: out of range; it has 272 filters, 0\.\.271"
    ):
        visualize_filters(model, "featex1", filters=[0, 272])
    with pytest.raises(BadInputError, match="filter -1"):
        visualize_filters(model, "stem.0", filters=[-1])


def test_a_short_layer_name_finds_the_first_branch_of_an_ensemble(tiny_branch):
    from fertool.artifacts import load_artifact
    from fertool.ensemble import EnsembleConfig, build_ensemble
    from fertool.filters import find_layer

    ensemble = build_ensemble([load_artifact(tiny_branch)] * 2, EnsembleConfig())
    assert find_layer(ensemble, "body.2").name.endswith("branches.0.backbone.body.2")
    with pytest.raises(BadInputError, match="unknown layer"):
        find_layer(ensemble, "featex9")
