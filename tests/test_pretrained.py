"""Starting weights: ImageNet weights offline (torch hub and Hugging Face caches), local weights files, learner_args."""

from __future__ import annotations

import pickle
import socket
import time
import urllib.error

import pytest
import torch
from safetensors.torch import save_file

from core.models import archs, pretrained
from core.models.pretrained import PretrainedUnavailable
from core.models.weightfiles import ModelFileError
from tests.synth import tiny_dls


@pytest.fixture(scope="module")
def dls(tmp_path_factory):
    """A tiny two-class DataLoaders: 20 generated 32x32 RGB images."""
    return tiny_dls(tmp_path_factory.mktemp("imgs"))


def _learner(dls, arch, imagenet=False, weights_path="", **kw):
    from fastai.vision.all import vision_learner

    return vision_learner(dls, **pretrained.learner_args(arch, imagenet, weights_path), **kw)


@pytest.fixture
def torch_home(tmp_path, monkeypatch):
    """An empty torch hub cache; downloads fail like on a machine with no internet."""
    home = tmp_path / "torch_home"
    monkeypatch.setenv("TORCH_HOME", str(home))

    def no_net(*args, **kwargs):
        raise urllib.error.URLError(socket.gaierror(-2, "Name or service not known"))

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_net)
    return home


@pytest.fixture
def hf_offline(tmp_path, monkeypatch):
    """An empty Hugging Face cache with HF_HUB_OFFLINE=1."""
    from huggingface_hub import constants

    cache = tmp_path / "hf_cache"
    cache.mkdir()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    return cache


# ---------------------------------------------------------------- ImageNet weights, offline


def test_pretrained_unavailable_is_clear(torch_home):
    with pytest.raises(PretrainedUnavailable) as info:
        pretrained.ensure_pretrained("resnet18")
    msg = str(info.value)
    assert "ImageNet weights for resnet18 could not be downloaded" in msg
    assert "no internet" in msg and "train from scratch" in msg and ".safetensors" in msg
    assert "Traceback" not in msg and "urlopen" not in msg
    assert str(pickle.loads(pickle.dumps(info.value))) == msg  # crosses worker-process boundaries
    with pytest.raises(PretrainedUnavailable):  # before any learner is built
        pretrained.make_arch("resnet18", pretrained=True)
    assert pretrained.make_arch("resnet18", pretrained=False) is archs.torchvision_builder("resnet18")


def test_torch_hub_cache_works_offline(torch_home, dls):
    cached = pretrained.weights_cache_path("resnet18")
    assert cached == torch_home / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    cached.parent.mkdir(parents=True)
    state = archs.torchvision_builder("resnet18")(weights=None).state_dict()
    torch.save(state, cached)
    assert pretrained.ensure_pretrained("resnet18") == cached
    learn = _learner(dls, "resnet18", imagenet=True)
    assert torch.equal(learn.model[0][0].weight, state["conv1.weight"])
    rebuilt = archs.create_model("resnet18", 2, start=pretrained.learner_args("resnet18", True))
    assert torch.equal(rebuilt[0][0].weight, state["conv1.weight"])


def test_broken_cached_copy_is_removed(torch_home):
    cached = pretrained.weights_cache_path("resnet18")
    cached.parent.mkdir(parents=True)
    cached.write_text("version https://git-lfs.github.com/spec/v1\noid sha256:abc\nsize 46830571\n")
    with pytest.raises(PretrainedUnavailable, match="broken cached copy was removed"):
        pretrained.ensure_pretrained("resnet18")
    assert not cached.exists()


@pytest.mark.slow
def test_real_download_attempt_fails_fast(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "th"))
    start = time.monotonic()
    try:
        path = pretrained.ensure_pretrained("resnet18", timeout=8)
    except PretrainedUnavailable as e:
        assert "could not be downloaded" in str(e)
    else:  # a machine with internet: the normal download worked
        assert path.is_file()
    assert time.monotonic() - start < 18


def test_timm_offline_and_hf_cache(hf_offline, dls):
    with pytest.raises(PretrainedUnavailable, match="offline mode is on") as info:
        pretrained.ensure_pretrained("efficientnet_b0", timeout=5)
    assert "ImageNet weights for efficientnet_b0" in str(info.value)
    import timm

    repo, names = pretrained.hf_source("efficientnet_b0")
    folder = hf_offline / f"models--{repo.replace('/', '--')}"
    rev = "0123456789abcdef0123456789abcdef01234567"
    (folder / "refs").mkdir(parents=True)
    (folder / "refs" / "main").write_text(rev)
    snap = folder / "snapshots" / rev
    snap.mkdir(parents=True)
    state = timm.create_model("efficientnet_b0", pretrained=False).state_dict()
    save_file({k: v.contiguous() for k, v in state.items()}, str(snap / names[0]))
    assert pretrained.ensure_pretrained("efficientnet_b0") == snap / names[0]
    assert pretrained.weights_cache_path("efficientnet_b0") == snap / names[0]
    learn = _learner(dls, "efficientnet_b0", imagenet=True)
    assert torch.equal(learn.model[0].model.conv_stem.weight, state["conv_stem.weight"])


def test_weights_obtainable_from_cache_host_or_not(torch_home, hf_offline, monkeypatch):
    for var in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    asked: list[str] = []
    monkeypatch.setattr(pretrained, "host_reachable", lambda host, timeout: asked.append(host) or False)
    ok, why = pretrained.weights_obtainable("resnet18")
    assert not ok and "download.pytorch.org cannot be reached" in why and asked == ["download.pytorch.org"]
    ok, why = pretrained.weights_obtainable("efficientnet_b0")  # HF offline mode: nothing to ask
    assert not ok and "offline" in why and asked == ["download.pytorch.org"]
    monkeypatch.setattr(pretrained, "host_reachable", lambda host, timeout: True)
    assert pretrained.weights_obtainable("resnet18")[0]
    cached = pretrained.weights_cache_path("resnet18")
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"x")
    monkeypatch.setattr(
        pretrained, "host_reachable", lambda host, timeout: pytest.fail("a cached file needs no network")
    )
    assert pretrained.weights_obtainable("resnet18") == (True, "ImageNet weights are in the local cache.")


def test_reachability_probe_is_bounded():
    start = time.monotonic()
    assert pretrained.host_reachable("192.0.2.1", 0.3) is False  # TEST-NET-1: never answers
    assert time.monotonic() - start < 2.0


# ---------------------------------------------------------------- a local weights file


def test_local_weights_file(tmp_path, dls):
    state = archs.torchvision_builder("resnet18")(weights=None).state_dict()
    path = tmp_path / "my_resnet18.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}}, path)
    learn = _learner(dls, "resnet18", weights_path=str(path))
    assert torch.equal(learn.model[0][0].weight, state["conv1.weight"])
    model = archs.create_model("resnet18", 2, start=pretrained.learner_args("resnet18", False, str(path)))
    assert torch.equal(model[0][0].weight, state["conv1.weight"])
    assert model.state_dict().keys() == learn.model.state_dict().keys()

    import timm

    tstate = timm.create_model("efficientnet_b0", pretrained=False).state_dict()
    tpath = tmp_path / "effnet.safetensors"
    save_file({k: v.contiguous() for k, v in tstate.items()}, str(tpath))
    tmodel = archs.create_model(
        "efficientnet_b0", 2, start=pretrained.learner_args("efficientnet_b0", False, str(tpath))
    )
    assert torch.equal(tmodel[0].model.conv_stem.weight, tstate["conv_stem.weight"])

    wrong = tmp_path / "resnet34.pth"
    torch.save(archs.torchvision_builder("resnet34")(weights=None).state_dict(), wrong)
    with pytest.raises(ModelFileError, match="does not fit resnet18: .*unexpected keys: layer1.2"):
        pretrained.make_arch("resnet18", weights_path=str(wrong))
