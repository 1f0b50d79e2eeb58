"""Issue 24 items 8 and 10: a damaged checkpoint or non-finite weights are refused with a plain reason before
anything is written; a checksum written inside each checkpoint finds a flipped bit."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import torch

from bench import fault_inject as fi
from core.base.config import RunConfig, SourceConfig, to_dict
from core.models import archs, checkpoints, savedmodel
from core.models.weightfiles import ModelFileError
from core.runs import rundir
from core.train import finish
from core.train.callbacks import save_state_atomic


def _model(n_classes: int = 2) -> torch.nn.Module:
    torch.manual_seed(0)
    return archs.create_model("resnet18", n_classes, 3)


@pytest.fixture(scope="module")
def good_checkpoint(tmp_path_factory) -> Path:
    """A checkpoint as training writes it (with its checksum)."""
    path = tmp_path_factory.mktemp("ckpt") / "best.safetensors"
    save_state_atomic(_model(), path)
    return path


def _run_with(tmp_path: Path, checkpoint: bytes) -> rundir.RunFolder:
    """A crashed run's folder (config, items, no model) whose best checkpoint holds these bytes."""
    run = rundir.RunFolder(tmp_path / "run")
    run.path.mkdir(parents=True)
    cfg = RunConfig(source=SourceConfig(kind="folder", root=str(tmp_path / "data")))
    cfg.train.arch = "resnet18"
    run.write(rundir.CONFIG, to_dict(cfg))
    pd.DataFrame({"relpath": ["a/1.png", "b/1.png"], "label": ["a", "b"], "split": ["valid"] * 2}).to_csv(
        run.items, index=False
    )
    run.best_checkpoint.parent.mkdir(parents=True, exist_ok=True)
    run.best_checkpoint.write_bytes(checkpoint)
    return run


def _nan(path: Path) -> bytes:
    model = _model()
    with torch.no_grad():
        list(model.parameters())[-1].view(-1)[0] = float("nan")
    save_state_atomic(model, path)
    return path.read_bytes()


def _other_shapes(path: Path) -> bytes:
    save_state_atomic(_model(3), path)
    return path.read_bytes()


TAMPERED = {  # the byte-level tampers of the fault-injection bench, plus two made from a model
    **{
        name: (lambda raw, d, make=make: make(raw), why)
        for name, (make, why) in fi.CHECKPOINT_TAMPERS.items()
    },
    "NaN weight": (lambda raw, d: _nan(d / "nan.safetensors"), "NaN or infinite weights"),
    "another model's shapes": (lambda raw, d: _other_shapes(d / "3.safetensors"), "do not fit this model"),
}


@pytest.mark.parametrize("case", sorted(TAMPERED))
def test_finish_refuses_a_damaged_checkpoint_plainly_and_writes_nothing(case, good_checkpoint, tmp_path):
    make, reason = TAMPERED[case]
    run = _run_with(tmp_path, make(good_checkpoint.read_bytes(), tmp_path))
    before = sorted(p.name for p in run.path.rglob("*"))
    with pytest.raises(ModelFileError, match=reason) as info:
        finish.finish_from_checkpoint(run.path)
    assert not fi.unclear(str(info.value)), str(info.value)
    assert not run.model_dir.exists() and sorted(p.name for p in run.path.rglob("*")) == before


def test_a_checkpoint_carries_its_checksum_and_reads_back(good_checkpoint):
    from safetensors import safe_open

    with safe_open(str(good_checkpoint), framework="pt") as f:
        assert f.metadata()[checkpoints.CHECKSUM_KEY] == checkpoints.state_checksum(_model().state_dict())
    state = checkpoints.read_checkpoint(good_checkpoint)
    assert all(torch.equal(state[k], v) for k, v in _model().state_dict().items())


def test_a_saved_model_with_non_finite_weights_is_refused_at_load(tmp_path):
    model = _model()
    with torch.no_grad():
        list(model.parameters())[-1].view(-1)[-1] = float("inf")
    manifest = savedmodel.Manifest(arch="resnet18", classes=["a", "b"], img_size=32)
    savedmodel.save_model(model, tmp_path / "model", manifest)
    with pytest.raises(ModelFileError, match="NaN or infinite weights in 1 of"):
        savedmodel.load_model(tmp_path / "model")
