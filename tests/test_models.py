"""Architectures, pretrained weights offline, safe weight loading, model save/load, ONNX export."""

from __future__ import annotations

import builtins
import json
import os
import pickle
import socket
import subprocess
import sys
import time
import urllib.error
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from core import modelio, models
from core.modelio import ModelFileError
from core.models import PretrainedUnavailable

REPO = Path(__file__).resolve().parents[1]
MANIFEST = {
    "arch": "resnet18",
    "classes": ["normal", "pneumonia"],
    "n_in": 3,
    "img_size": 32,
    "channels": "rgb",
    "resize": "squish",
    "normalize": {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]},
    "window": None,
    "frame": 0,
    "train": {"arch": "resnet18", "epochs": 1},
    "metrics": {"accuracy": 0.5},
}


# ---------------------------------------------------------------- helpers


@pytest.fixture(scope="module")
def dls(tmp_path_factory):
    """A tiny two-class DataLoaders: 20 generated 32x32 RGB images."""
    from fastai.vision.all import ImageDataLoaders, Resize

    root = tmp_path_factory.mktemp("imgs")
    rng = np.random.default_rng(0)
    fnames, labels = [], []
    for i in range(20):
        label = "bright" if i % 2 else "dark"
        base = 180 if i % 2 else 60
        arr = np.clip(rng.normal(base, 30, (32, 32, 3)), 0, 255).astype(np.uint8)
        path = root / f"{label}_{i}.png"
        Image.fromarray(arr).save(path)
        fnames.append(path)
        labels.append(label)
    return ImageDataLoaders.from_lists(
        root, fnames, labels, valid_pct=0.25, seed=0, item_tfms=Resize(32), bs=4, num_workers=0, device="cpu"
    )


def _learner(dls, arch, pretrained=False, weights_path="", **kw):
    from fastai.vision.all import vision_learner

    return vision_learner(dls, **models.learner_args(arch, pretrained, weights_path), **kw)


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


class _Evil:
    """Unpickling this runs a shell command that creates a marker file."""

    def __init__(self, marker: Path, use_exec: bool = False):
        self.marker, self.use_exec = marker, use_exec

    def __reduce__(self):
        if self.use_exec:
            return (builtins.exec, (f"open({str(self.marker)!r}, 'w').close()",))
        return (os.system, (f"touch {self.marker}",))


# ---------------------------------------------------------------- architectures and model building


def test_archs_table():
    for name in ("resnet18", "resnet34", "resnet50", "densenet121", "efficientnet_b0", "convnext_tiny"):
        entry = models.ARCHS[name]
        assert entry["family"] in ("torchvision", "timm") and entry["label"] and entry["params_m"] > 1
        assert models.is_cnn_supported(name)
    n = sum(p.numel() for p in models._tv_fn("resnet18")().parameters()) / 1e6
    assert abs(n - models.ARCHS["resnet18"]["params_m"]) < 0.1
    with pytest.raises(ValueError, match="unknown architecture"):
        models.arch_family("not_a_net")


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["resnet18", "efficientnet_b0"])
def test_create_model_matches_trained_vision_learner(dls, arch):
    learn = _learner(dls, arch)
    learn.fit(1, 1e-3)
    state = learn.model.state_dict()
    model = models.create_model(arch, n_out=2)
    model.load_state_dict(state, strict=True)
    learn.model.eval()
    model.eval()
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(learn.model(x), model(x))
    layer = models.gradcam_layer(model, arch)
    acts = []
    handle = layer.register_forward_hook(lambda m, i, o: acts.append(o))
    model(x)
    handle.remove()
    assert acts[0].ndim == 4 and acts[0].shape[0] == 3


def test_create_model_one_channel_keys_match(dls):
    learn = _learner(dls, "resnet18", n_in=1)
    model = models.create_model("resnet18", n_out=2, n_in=1)
    expected = {k: tuple(v.shape) for k, v in learn.model.state_dict().items()}
    assert {k: tuple(v.shape) for k, v in model.state_dict().items()} == expected
    assert model[0][0].weight.shape[1] == 1


# ---------------------------------------------------------------- pretrained weights, offline


def test_pretrained_unavailable_is_clear(torch_home):
    with pytest.raises(PretrainedUnavailable) as info:
        models.ensure_pretrained("resnet18")
    msg = str(info.value)
    assert "ImageNet weights for resnet18 could not be downloaded" in msg
    assert "no internet" in msg and "train from scratch" in msg and ".safetensors" in msg
    assert "Traceback" not in msg and "urlopen" not in msg
    assert str(pickle.loads(pickle.dumps(info.value))) == msg  # crosses worker-process boundaries
    with pytest.raises(PretrainedUnavailable):  # before any learner is built
        models.make_arch("resnet18", pretrained=True)
    assert models.make_arch("resnet18", pretrained=False) is models._tv_fn("resnet18")


def test_torch_hub_cache_works_offline(torch_home, dls):
    cached = models.weights_cache_path("resnet18")
    assert cached == torch_home / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    cached.parent.mkdir(parents=True)
    state = models._tv_fn("resnet18")(weights=None).state_dict()
    torch.save(state, cached)
    assert models.ensure_pretrained("resnet18") == cached
    learn = _learner(dls, "resnet18", pretrained=True)
    assert torch.equal(learn.model[0][0].weight, state["conv1.weight"])
    rebuilt = models.create_model("resnet18", 2, pretrained=True)
    assert torch.equal(rebuilt[0][0].weight, state["conv1.weight"])


def test_broken_cached_copy_is_removed(torch_home):
    cached = models.weights_cache_path("resnet18")
    cached.parent.mkdir(parents=True)
    cached.write_text("version https://git-lfs.github.com/spec/v1\noid sha256:abc\nsize 46830571\n")
    with pytest.raises(PretrainedUnavailable, match="broken cached copy was removed"):
        models.ensure_pretrained("resnet18")
    assert not cached.exists()


@pytest.mark.slow
def test_real_download_attempt_fails_fast(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "th"))
    start = time.monotonic()
    try:
        path = models.ensure_pretrained("resnet18", timeout=8)
    except PretrainedUnavailable as e:
        assert "could not be downloaded" in str(e)
    else:  # a machine with internet: the normal download worked
        assert path.is_file()
    assert time.monotonic() - start < 18


def test_timm_offline_and_hf_cache(hf_offline, dls):
    with pytest.raises(PretrainedUnavailable, match="offline mode is on") as info:
        models.ensure_pretrained("efficientnet_b0", timeout=5)
    assert "ImageNet weights for efficientnet_b0" in str(info.value)
    import timm

    repo, names = models._hf_source("efficientnet_b0")
    folder = hf_offline / f"models--{repo.replace('/', '--')}"
    rev = "0123456789abcdef0123456789abcdef01234567"
    (folder / "refs").mkdir(parents=True)
    (folder / "refs" / "main").write_text(rev)
    snap = folder / "snapshots" / rev
    snap.mkdir(parents=True)
    state = timm.create_model("efficientnet_b0", pretrained=False).state_dict()
    save_file({k: v.contiguous() for k, v in state.items()}, str(snap / names[0]))
    assert models.ensure_pretrained("efficientnet_b0") == snap / names[0]
    assert models.weights_cache_path("efficientnet_b0") == snap / names[0]
    learn = _learner(dls, "efficientnet_b0", pretrained=True)
    assert torch.equal(learn.model[0].model.conv_stem.weight, state["conv_stem.weight"])


def test_local_weights_file(tmp_path, dls):
    state = models._tv_fn("resnet18")(weights=None).state_dict()
    path = tmp_path / "my_resnet18.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}}, path)
    learn = _learner(dls, "resnet18", pretrained=False, weights_path=str(path))
    assert torch.equal(learn.model[0][0].weight, state["conv1.weight"])
    model = models.create_model("resnet18", 2, weights_path=str(path))
    assert torch.equal(model[0][0].weight, state["conv1.weight"])
    assert model.state_dict().keys() == learn.model.state_dict().keys()

    import timm

    tstate = timm.create_model("efficientnet_b0", pretrained=False).state_dict()
    tpath = tmp_path / "effnet.safetensors"
    save_file({k: v.contiguous() for k, v in tstate.items()}, str(tpath))
    tmodel = models.create_model("efficientnet_b0", 2, weights_path=str(tpath))
    assert torch.equal(tmodel[0].model.conv_stem.weight, tstate["conv_stem.weight"])

    wrong = tmp_path / "resnet34.pth"
    torch.save(models._tv_fn("resnet34")(weights=None).state_dict(), wrong)
    with pytest.raises(ModelFileError, match="does not fit resnet18: .*unexpected keys: layer1.2"):
        models.make_arch("resnet18", weights_path=str(wrong))


# ---------------------------------------------------------------- weight files from users


@pytest.mark.parametrize("fmt", ["legacy_p2", "legacy_p4", "torch_zip", "torch_legacy", "exec_zip"])
def test_malicious_pickle_refused(tmp_path, fmt):
    marker = tmp_path / "pwned"
    evil = _Evil(marker, use_exec=fmt == "exec_zip")
    path = tmp_path / "weights.pth"
    payload = {"conv1.weight": evil}
    if fmt.startswith("legacy"):
        path.write_bytes(pickle.dumps(payload, protocol=2 if fmt == "legacy_p2" else 4))
    elif fmt == "torch_legacy":  # magic, protocol, sys info, then the payload pickle
        torch.save(payload, path, _use_new_zipfile_serialization=False)
    else:
        torch.save(payload, path)
    with pytest.raises(
        ModelFileError,
        match=r"refused: .*code references \((posix|os|nt|builtins|__builtin__)\.(system|exec)\)",
    ):
        modelio.load_state_dict_file(path)
    with pytest.raises(ModelFileError):
        models.check_local_weights("resnet18", path)
    assert not marker.exists()


def test_stack_global_trick_refused(tmp_path):
    """Allowed names pushed then popped must not hide the real STACK_GLOBAL operands."""
    marker = tmp_path / "pwned"
    cmd = f"touch {marker}".encode()

    def short(b: bytes) -> bytes:
        return b"\x8c" + bytes([len(b)]) + b

    data = (
        b"\x80\x04"
        + short(b"posix")
        + short(b"system")
        + short(b"collections")
        + short(b"OrderedDict")
        + b"00\x93"
        + short(cmd)
        + b"\x85R."
    )
    path = tmp_path / "trick.pth"
    path.write_bytes(data)
    with pytest.raises(ModelFileError, match="refused: .*unresolvable global"):
        modelio.load_state_dict_file(path)
    assert not marker.exists()


def test_whole_model_pickle_refused(tmp_path):
    path = tmp_path / "full_model.pth"
    torch.save(models._tv_fn("resnet18")(weights=None), path)
    with pytest.raises(ModelFileError, match=r"code references \(torchvision\.models\.resnet\.ResNet\)"):
        modelio.load_state_dict_file(path)


@pytest.mark.parametrize("fmt", ["zip", "legacy", "safetensors"])
def test_torchvision_state_dict_accepted(tmp_path, fmt):
    state = models._tv_fn("resnet18")(weights=None).state_dict()
    path = tmp_path / ("w.safetensors" if fmt == "safetensors" else "w.pth")
    if fmt == "safetensors":
        save_file(state, str(path))
    else:
        torch.save(state, path, _use_new_zipfile_serialization=fmt == "zip")
    got = modelio.load_state_dict_file(path)
    assert got.keys() == state.keys()
    assert all(torch.equal(got[k], state[k]) for k in state)


def test_wrong_keys_and_shapes_refused():
    model = models.create_model("resnet18", 2)
    other = models.create_model("resnet34", 2).state_dict()
    with pytest.raises(ModelFileError, match="unexpected keys: 0.4.2") as info:
        modelio.load_weights_into(model, other)
    assert "do not fit" in str(info.value)
    three = models.create_model("resnet18", 3).state_dict()
    with pytest.raises(
        ModelFileError, match=r"1 shape mismatches: 1.8.weight \(3, 512\) vs expected \(2, 512\)"
    ):
        modelio.load_weights_into(model, three)
    diffs = modelio.compare_state_dicts(
        {"a": torch.zeros(1), "b": torch.zeros(2)}, {"b": torch.zeros(3), "c": torch.zeros(1)}
    )
    assert diffs == [
        "1 missing keys: a",
        "1 unexpected keys: c",
        "1 shape mismatches: b (3,) vs expected (2,)",
    ]


@pytest.mark.shared
@pytest.mark.parametrize(
    "name, expected",
    [
        ("lfs_pointer_ArvinGuy_resnet18.pth", "Git LFS pointer"),
        ("lfs_pointer_ZJU_resnet18-f37072fd.pth", "Git LFS pointer"),
        ("truncated_Peterwagiuh_resnet18-f37072fd.pth", "truncated or corrupt"),
        ("truncated_hrli1997_resnet18-5c106cde.pth", "truncated or corrupt"),
    ],
)
def test_bad_weight_files(shared_data, name, expected):
    path = shared_data / "bad_weights" / name
    with pytest.raises(ModelFileError, match=expected) as info:
        modelio.load_state_dict_file(path)
    assert "\n" not in str(info.value)


def test_other_bad_files(tmp_path):
    cases = {
        "empty.pth": (b"", "empty"),
        "page.pth": (b"<!DOCTYPE html><html>Sign in</html>", "web page"),
        "noise.pth": (b"\x00\x01garbage" * 10, "not a PyTorch"),
        "cut.safetensors": (b'\x10\x00\x00\x00\x00\x00\x00\x00{"a":', "truncated or corrupt"),
    }
    for name, (data, expected) in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(ModelFileError, match=expected):
            modelio.load_state_dict_file(tmp_path / name)
    state = models._tv_fn("resnet18")(weights=None).state_dict()
    torch.save(state, tmp_path / "good.pth")
    data = (tmp_path / "good.pth").read_bytes()
    (tmp_path / "cut.pth").write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelFileError, match="truncated or corrupt"):
        modelio.load_state_dict_file(tmp_path / "cut.pth")
    torch.save(state, tmp_path / "legacy.pth", _use_new_zipfile_serialization=False)
    data = (tmp_path / "legacy.pth").read_bytes()
    (tmp_path / "legacy_cut.pth").write_bytes(data[:4000])
    with pytest.raises(ModelFileError, match="truncated or corrupt"):
        modelio.load_state_dict_file(tmp_path / "legacy_cut.pth")


# ---------------------------------------------------------------- our model files


@pytest.mark.slow
def test_save_load_round_trip_in_fresh_process(tmp_path):
    model = models.create_model("efficientnet_b0", 2).eval()
    manifest_path = modelio.save_model(model, tmp_path / "run", {**MANIFEST, "arch": "efficientnet_b0"})
    saved = json.loads(manifest_path.read_text())
    assert saved["format"] == "xray-trainer-model" and saved["manifest_version"] == 1
    assert saved["weights"] == "model.safetensors" and len(saved["sha256"]) == 64
    assert saved["classes"] == ["normal", "pneumonia"]
    assert not [p for p in (tmp_path / "run").iterdir() if p.name.startswith(".")]  # no temp files left
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        expected = model(x)
    save_file({"x": x}, str(tmp_path / "x.safetensors"))
    code = (
        "import sys; from safetensors.torch import load_file, save_file; import torch; from core import models;"
        "m, man = models.load_model(sys.argv[1]); x = load_file(sys.argv[2])['x'];"
        "assert not m.training and man['arch'] == 'efficientnet_b0';"
        "out = m(x).detach(); save_file({'y': out}, sys.argv[3])"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            code,
            str(tmp_path / "run"),
            str(tmp_path / "x.safetensors"),
            str(tmp_path / "y.safetensors"),
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert torch.equal(load_file(str(tmp_path / "y.safetensors"))["y"], expected)


def test_tampered_weights_refused(tmp_path):
    model = models.create_model("resnet18", 2)
    path = modelio.save_model(model, tmp_path, MANIFEST)
    loaded, manifest = models.load_model(tmp_path)
    assert manifest["img_size"] == 32 and not loaded.training
    weights = tmp_path / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-10] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(ModelFileError, match="does not match its manifest"):
        models.load_model(path)
    bad = json.loads(path.read_text())
    bad["weights"] = "../../etc/passwd"
    path.write_text(json.dumps(bad))
    with pytest.raises(ModelFileError, match="beside the manifest"):
        models.load_model(path)
    path.write_text("{not json")
    with pytest.raises(ModelFileError, match="not a valid JSON"):
        models.load_model(path)


@pytest.mark.slow
def test_a_run_folder_is_accepted_wherever_a_model_is_asked_for(tmp_path, capsys):
    from core.cli import main
    from core.predict import Predictor

    model = models.create_model("resnet18", 2).eval()
    run = tmp_path / "run"
    (run / "config.json").parent.mkdir(parents=True)
    (run / "config.json").write_text("{}")
    modelio.save_model(model, run / "model", MANIFEST)
    assert modelio.find_manifest(run) == run / "model" / "model.json" == modelio.find_manifest(run / "model")
    assert Predictor(run, device="cpu").classes == MANIFEST["classes"]
    img = tmp_path / "x.png"
    Image.new("RGB", (40, 36), 90).save(img)
    assert main(["predict", "--model", str(run), str(img)]) == 0
    assert json.loads(capsys.readouterr().out)["predicted"] == 1
    kfold = tmp_path / "kfold"
    for i in range(2):
        modelio.save_model(model, kfold / "folds" / f"fold{i}", MANIFEST)
    with pytest.raises(ModelFileError, match=r"k-fold run without a final model.*folds/fold0, folds/fold1"):
        Predictor(kfold)
    modelio.save_model(model, kfold / "model", MANIFEST)
    assert modelio.find_manifest(kfold) == kfold / "model" / "model.json"


def test_model_errors_name_the_right_path(tmp_path, capsys):
    from core.cli import main

    failed = tmp_path / "failed_run"
    (failed / "checkpoints").mkdir(parents=True)
    (failed / "config.json").write_text("{}")
    save_file({"w": torch.zeros(1)}, str(failed / "checkpoints" / "best.safetensors"))
    with pytest.raises(ModelFileError, match="model.json is missing: it did not finish.*python -m core finish"):
        models.load_model(failed)
    assert main(["export", "--model", str(failed), "--onnx", str(tmp_path / "m.onnx")]) == 1
    err = capsys.readouterr().err
    assert str(failed / "model" / "model.json") in err and f"{failed}/model.json" not in err
    weights = tmp_path / "resnet18-imagenet.pth"
    torch.save({"w": torch.zeros(1)}, weights)
    for call in (lambda: models.load_model(weights), lambda: modelio.read_manifest(weights)):
        with pytest.raises(ModelFileError, match=r"weights file, not a model saved by this app.*--weights"):
            call()
    with pytest.raises(ModelFileError, match="no model in"):
        models.load_model(tmp_path / "failed_run" / "checkpoints")
    assert main(["predict", "--model", str(tmp_path / "nowhere"), str(weights)]) == 1
    assert "no model at" in capsys.readouterr().err


@pytest.mark.parametrize(
    "extra",
    [{"patient_name": "DOE^JANE"}, {"train": {"PatientID": "123"}}, {"metrics": [{"Birth Date": "1970"}]}],
)
def test_manifest_with_phi_keys_refused(tmp_path, extra):
    model = models.create_model("resnet18", 2)
    with pytest.raises(ValueError, match="patient-identifying"):
        modelio.save_model(model, tmp_path, {**MANIFEST, **extra})
    assert not (tmp_path / "model.json").exists()


def test_onnx_export_verified(tmp_path, monkeypatch):
    pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    model = models.create_model("resnet18", 2).eval()
    calls, real = [], torch.onnx.export
    monkeypatch.setattr(torch.onnx, "export", lambda *a, **k: calls.append(k) or real(*a, **k))
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)  # e.g. the deprecated TorchScript exporter's warning
        warnings.simplefilter("error", DeprecationWarning)
        result = modelio.export_onnx(model, MANIFEST, tmp_path / "model.onnx")
    assert [c.get("dynamo") for c in calls] == [True]
    assert result["verified"] and result["max_abs_diff"] < 1e-4
    sess = ort.InferenceSession(result["path"], providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).normal(size=(5, 3, 32, 32)).astype(np.float32)
    out = sess.run(None, {"image": x})[0]
    assert out.shape == (5, 2)
    with torch.no_grad():
        np.testing.assert_allclose(out, model(torch.from_numpy(x)).numpy(), atol=1e-4)


def test_onnx_export_needs_onnxscript_for_the_dynamo_exporter(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxscript", None)
    with pytest.raises(ModelFileError, match="pip install onnxscript"):
        modelio.export_onnx(models.create_model("resnet18", 2), MANIFEST, tmp_path / "m.onnx")
    assert not list(tmp_path.iterdir())  # no half-written file left


def test_onnx_missing_package_message(tmp_path, monkeypatch):
    pytest.importorskip("onnx")
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    result = modelio.export_onnx(models.create_model("resnet18", 2), MANIFEST, tmp_path / "m.onnx")
    assert result["verified"] is False and "pip install onnxruntime" in result["note"]
    monkeypatch.setitem(sys.modules, "onnx", None)
    with pytest.raises(ModelFileError, match="pip install onnx"):
        modelio.export_onnx(models.create_model("resnet18", 2), MANIFEST, tmp_path / "m.onnx")


def test_weights_obtainable_from_cache_host_or_not(torch_home, hf_offline, monkeypatch):
    for var in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    asked: list[str] = []
    monkeypatch.setattr(models, "_reachable", lambda host, timeout: asked.append(host) or False)
    ok, why = models.weights_obtainable("resnet18")
    assert not ok and "download.pytorch.org cannot be reached" in why and asked == ["download.pytorch.org"]
    ok, why = models.weights_obtainable("efficientnet_b0")  # HF offline mode: nothing to ask
    assert not ok and "offline" in why and asked == ["download.pytorch.org"]
    monkeypatch.setattr(models, "_reachable", lambda host, timeout: True)
    assert models.weights_obtainable("resnet18")[0]
    cached = models.weights_cache_path("resnet18")
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"x")
    monkeypatch.setattr(models, "_reachable", lambda host, timeout: pytest.fail("a cached file needs no network"))
    assert models.weights_obtainable("resnet18") == (True, "ImageNet weights are in the local cache.")


def test_reachability_probe_is_bounded():
    start = time.monotonic()
    assert models._reachable("192.0.2.1", 0.3) is False  # TEST-NET-1: never answers
    assert time.monotonic() - start < 2.0
