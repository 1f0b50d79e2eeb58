"""Weight files from users: code in a pickle refused before unpickling, broken files named, weights fitted strictly."""

from __future__ import annotations

import builtins
import os
import pickle
from pathlib import Path

import pytest
import torch
import torchvision
from safetensors.torch import save_file

from core.models import archs, weightfiles
from core.models.pretrained import check_local_weights
from core.models.weightfiles import ModelFileError


class _Evil:
    """Unpickling this runs a shell command that creates a marker file."""

    def __init__(self, marker: Path, use_exec: bool = False):
        self.marker, self.use_exec = marker, use_exec

    def __reduce__(self):
        if self.use_exec:
            return (builtins.exec, (f"open({str(self.marker)!r}, 'w').close()",))
        return (os.system, (f"touch {self.marker}",))


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
        weightfiles.load_state_dict_file(path)
    with pytest.raises(ModelFileError):
        check_local_weights("resnet18", path)
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
        weightfiles.load_state_dict_file(path)
    assert not marker.exists()


def test_whole_model_pickle_refused(tmp_path):
    path = tmp_path / "full_model.pth"
    torch.save(torchvision.models.resnet18(weights=None), path)
    with pytest.raises(ModelFileError, match=r"code references \(torchvision\.models\.resnet\.ResNet\)"):
        weightfiles.load_state_dict_file(path)


@pytest.mark.parametrize("fmt", ["zip", "legacy", "safetensors"])
def test_torchvision_state_dict_accepted(tmp_path, fmt):
    state = torchvision.models.resnet18(weights=None).state_dict()
    path = tmp_path / ("w.safetensors" if fmt == "safetensors" else "w.pth")
    if fmt == "safetensors":
        save_file(state, str(path))
    else:
        torch.save(state, path, _use_new_zipfile_serialization=fmt == "zip")
    got = weightfiles.load_state_dict_file(path)
    assert got.keys() == state.keys()
    assert all(torch.equal(got[k], state[k]) for k in state)


def test_wrong_keys_and_shapes_refused():
    model = archs.create_model("resnet18", 2)
    other = archs.create_model("resnet34", 2).state_dict()
    with pytest.raises(ModelFileError, match="unexpected keys: 0.4.2") as info:
        weightfiles.load_weights_into(model, other)
    assert "do not fit" in str(info.value)
    three = archs.create_model("resnet18", 3).state_dict()
    with pytest.raises(
        ModelFileError, match=r"1 shape mismatches: 1.8.weight \(3, 512\) vs expected \(2, 512\)"
    ):
        weightfiles.load_weights_into(model, three)
    diffs = weightfiles.compare_state_dicts(
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
        weightfiles.load_state_dict_file(path)
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
            weightfiles.load_state_dict_file(tmp_path / name)
    state = torchvision.models.resnet18(weights=None).state_dict()
    torch.save(state, tmp_path / "good.pth")
    data = (tmp_path / "good.pth").read_bytes()
    (tmp_path / "cut.pth").write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelFileError, match="truncated or corrupt"):
        weightfiles.load_state_dict_file(tmp_path / "cut.pth")
    torch.save(state, tmp_path / "legacy.pth", _use_new_zipfile_serialization=False)
    data = (tmp_path / "legacy.pth").read_bytes()
    (tmp_path / "legacy_cut.pth").write_bytes(data[:4000])
    with pytest.raises(ModelFileError, match="truncated or corrupt"):
        weightfiles.load_state_dict_file(tmp_path / "legacy_cut.pth")
