"""The architecture catalogue: the offered networks, and create_model building what vision_learner builds."""

from __future__ import annotations

import pytest
import torch

from core.base.config import ARCHS
from core.models import archs
from tests.synth import tiny_dls


@pytest.fixture(scope="module")
def dls(tmp_path_factory):
    """A tiny two-class DataLoaders: 20 generated 32x32 RGB images."""
    return tiny_dls(tmp_path_factory.mktemp("imgs"))


def _learner(dls, arch, **kw):
    from fastai.vision.all import vision_learner

    return vision_learner(dls, arch=archs.fastai_arch(arch), pretrained=False, **kw)


def test_archs_table():
    for name in ("resnet18", "resnet34", "resnet50", "densenet121", "efficientnet_b0", "convnext_tiny"):
        entry = ARCHS[name]
        assert entry["family"] in ("torchvision", "timm") and entry["label"] and entry["params_m"] > 1
        assert archs.is_cnn_supported(name)
    n = sum(p.numel() for p in archs.torchvision_builder("resnet18")().parameters()) / 1e6
    assert abs(n - ARCHS["resnet18"]["params_m"]) < 0.1
    with pytest.raises(ValueError, match="unknown architecture"):
        archs.arch_family("not_a_net")


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["resnet18", "efficientnet_b0"])
def test_create_model_matches_trained_vision_learner(dls, arch):
    learn = _learner(dls, arch)
    learn.fit(1, 1e-3)
    state = learn.model.state_dict()
    model = archs.create_model(arch, n_out=2)
    model.load_state_dict(state, strict=True)
    learn.model.eval()
    model.eval()
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(learn.model(x), model(x))
    layer = archs.gradcam_layer(model, arch)
    acts = []
    handle = layer.register_forward_hook(lambda m, i, o: acts.append(o))
    model(x)
    handle.remove()
    assert acts[0].ndim == 4 and acts[0].shape[0] == 3


def test_create_model_one_channel_keys_match(dls):
    learn = _learner(dls, "resnet18", n_in=1)
    model = archs.create_model("resnet18", n_out=2, n_in=1)
    expected = {k: tuple(v.shape) for k, v in learn.model.state_dict().items()}
    assert {k: tuple(v.shape) for k, v in model.state_dict().items()} == expected
    assert model[0][0].weight.shape[1] == 1
