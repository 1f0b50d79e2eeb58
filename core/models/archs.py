"""The architecture catalogue: which networks the app offers, which library builds each, how one is built.

`create_model` builds the same nn.Module fastai's `vision_learner` builds (body + fastai head) without a
DataLoaders: from scratch, as a saved model is rebuilt before its weights are loaded (core.models.savedmodel), or from
the starting weights `core.models.pretrained.learner_args` names. `gradcam_layer` is the block Grad-CAM looks at.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch

from core.base.config import ARCHS


def arch_family(arch: str) -> str:
    """'torchvision' or 'timm' for a known (or library-provided) architecture name."""
    if arch in ARCHS:
        return ARCHS[arch]["family"]
    import torchvision

    if arch in torchvision.models.list_models(module=torchvision.models):
        return "torchvision"
    import timm

    if timm.is_model(arch):
        return "timm"
    raise ValueError(f"unknown architecture {arch!r}; choose one of {', '.join(ARCHS)}")


def is_cnn_supported(arch: str) -> bool:
    """True when Grad-CAM can use the last convolutional block of this architecture."""
    return bool(ARCHS.get(arch, {}).get("cnn", False))


def torchvision_builder(arch: str) -> Callable:
    """The torchvision builder function of `arch` (the same object fastai's model_meta is keyed by)."""
    import torchvision

    return getattr(torchvision.models, arch)


def fastai_arch(arch: str) -> Callable | str:
    """What fastai takes as `arch` for an untrained network: the torchvision builder, or the timm model name."""
    return torchvision_builder(arch) if arch_family(arch) == "torchvision" else arch


def create_model(
    arch: str, n_out: int, n_in: int = 3, start: Mapping[str, Any] | None = None
) -> torch.nn.Module:
    """The nn.Module fastai's vision_learner builds (body + fastai head), without a DataLoaders.

    From scratch unless `start` is given: core.models.pretrained.learner_args of the same arch (ImageNet or a local file).
    """
    from fastai.vision.learner import create_timm_model, create_vision_model, default_split

    kwargs = dict(start) if start else {"arch": fastai_arch(arch), "pretrained": False}
    fn, pre = kwargs.pop("arch"), kwargs.pop("pretrained")
    if isinstance(fn, str):
        model, _cfg = create_timm_model(fn, n_out, default_split, pre, n_in=n_in, **kwargs)
        return model
    return create_vision_model(fn, n_out, pretrained=pre, n_in=n_in)


def gradcam_layer(model: torch.nn.Module, arch: str) -> torch.nn.Module:
    """The last convolutional block of the body of a fastai-built model (target for Grad-CAM)."""
    if not is_cnn_supported(arch):
        raise ValueError(f"Grad-CAM is not supported for {arch}")
    body = list(model.children())[0]  # fastai builds nn.Sequential(body, head)
    if arch_family(arch) == "torchvision":
        return list(body.children())[-1]
    inner: Any = getattr(body, "model", body)  # a timm model: its last block is found by attribute name
    if hasattr(inner, "stages"):
        return inner.stages[-1]
    if hasattr(inner, "bn2"):
        return inner.bn2
    return body
