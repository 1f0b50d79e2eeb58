"""The best checkpoint: held in memory when an epoch improves, written when writing is cheap against the training
time since the last write, before the resume state, and when the fit ends or fails; the file says its epoch.

Every rule is driven by planted losses and a planted clock (no training outcome decides anything here).
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from core.models import checkpoints
from core.runs.progress import Progress
from core.train import callbacks, finish, resume_state


class Clock:
    """A planted time.perf_counter."""

    def __init__(self):
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def _rig(tmp_path: Path, monkeypatch, write_s: float):
    """(checkpoint callback, fake learner, planted clock, epochs written) with writes costing `write_s`."""
    clock, written = Clock(), []
    monkeypatch.setattr(callbacks.time, "perf_counter", clock)
    real = callbacks.write_state_atomic

    def timed_write(state, path, epoch=None):
        real(state, path, epoch=epoch)
        written.append(epoch)
        clock.t += write_s

    monkeypatch.setattr(callbacks, "write_state_atomic", timed_write)
    model = torch.nn.Linear(2, 1)
    rec = SimpleNamespace(metric_names=["epoch", "train_loss", "valid_loss", "time"], values=[])
    learn = SimpleNamespace(model=model, recorder=rec, epoch=0, n_epoch=0, opt=None, cbs=[])
    ep_clock = callbacks.EpochClock()
    ckpt = callbacks.BestCheckpoint(tmp_path / "best.safetensors", Progress(tmp_path), "valid_loss", ep_clock)
    for cb in (ep_clock, ckpt):
        cb.learn = learn
    learn.cbs = [ep_clock, ckpt]
    return ckpt, learn, clock, written


def _fit(ckpt, learn, clock, losses: list[float], epoch_s: float, after_fit: bool = True) -> None:
    """Run the callback over epochs with these validation losses; epoch i's weights are all i."""
    learn.n_epoch = len(losses)
    ckpt.learn.cbs[0].before_fit()
    for i, loss in enumerate(losses):
        learn.epoch = i
        ckpt.before_epoch()
        with torch.no_grad():
            for p in learn.model.parameters():
                p.fill_(float(i))
        clock.t += epoch_s
        learn.recorder.values.append([1.0, loss])
        ckpt.after_epoch()
    if after_fit:
        ckpt.after_fit()


def _file_epoch_and_weight(path: Path) -> tuple[int | None, float]:
    state = checkpoints.read_checkpoint(path)
    return checkpoints.checkpoint_epoch(path), float(state["weight"].flatten()[0])


def test_short_epochs_write_the_best_every_few_epochs_and_at_the_end(tmp_path, monkeypatch):
    ckpt, learn, clock, written = _rig(tmp_path, monkeypatch, write_s=0.18)
    _fit(ckpt, learn, clock, [10.0 - i for i in range(10)], epoch_s=1.0)  # every epoch improves
    # the first best at once; then only when the epochs since the last write took >= 0.18 / 0.05 = 3.6 s
    assert written == [0, 4, 8, 9]
    assert _file_epoch_and_weight(ckpt.file) == (9, 9.0)


def test_long_epochs_write_every_new_best_and_only_a_new_best(tmp_path, monkeypatch):
    ckpt, learn, clock, written = _rig(tmp_path, monkeypatch, write_s=0.2)
    _fit(ckpt, learn, clock, [5.0, 4.0, 4.5, 3.0, 3.5], epoch_s=10.0)
    assert written == [0, 1, 3]
    assert _file_epoch_and_weight(ckpt.file) == (3, 3.0) and ckpt.best_epoch == 3


def test_the_held_best_is_written_at_the_fits_end_and_restored(tmp_path, monkeypatch):
    ckpt, learn, clock, written = _rig(tmp_path, monkeypatch, write_s=5.0)
    _fit(ckpt, learn, clock, [5.0, 4.0, 3.0, 3.5, 3.6], epoch_s=1.0, after_fit=False)
    assert written == [0] and ckpt.held is not None and ckpt.held_epoch == 2  # epoch 2 held, not yet written
    assert _file_epoch_and_weight(ckpt.file) == (0, 0.0)  # what a run killed now leaves: said as epoch 0
    ckpt.restore(learn.model)  # the fit's end: written, then loaded
    assert written == [0, 2] and _file_epoch_and_weight(ckpt.file) == (2, 2.0)
    assert float(learn.model.weight.flatten()[0]) == 2.0


def test_the_resume_state_is_never_newer_than_the_checkpoint(tmp_path, monkeypatch):
    ckpt, learn, clock, written = _rig(tmp_path, monkeypatch, write_s=5.0)
    saver = resume_state.SaveResumeState(tmp_path / "resume.safetensors", ckpt.clock, planned=10)
    saver.learn = learn
    states = []
    monkeypatch.setattr(resume_state, "capture", lambda learn, epoch, fits, planned: epoch)
    monkeypatch.setattr(resume_state, "write", lambda state, path: states.append((state, list(written))))
    _fit(ckpt, learn, clock, [5.0, 4.0], epoch_s=1.0, after_fit=False)
    assert written == [0] and ckpt.held_epoch == 1
    saver.trained_s = None  # nothing written yet: due now
    saver.after_epoch()
    assert states == [(1, [0, 1])]  # the checkpoint of epoch 1 was written before the state of epoch 1


def test_finish_names_the_epoch_the_file_holds(tmp_path, monkeypatch):
    ckpt, learn, clock, written = _rig(tmp_path, monkeypatch, write_s=5.0)
    _fit(ckpt, learn, clock, [5.0, 4.0, 3.0], epoch_s=1.0, after_fit=False)  # killed: the file holds epoch 0
    run = SimpleNamespace(best_checkpoint=ckpt.file)
    assert finish._checkpoint_epoch(run, by_history=2) == 0
    assert finish._checkpoint_epoch(SimpleNamespace(best_checkpoint=tmp_path / "none"), by_history=2) == 2


def test_an_old_checkpoint_without_an_epoch_still_reads(tmp_path):
    path = tmp_path / "old.safetensors"
    callbacks.save_state_atomic(torch.nn.Linear(2, 1), path)
    assert checkpoints.checkpoint_epoch(path) is None and set(checkpoints.read_checkpoint(path)) == {
        "weight",
        "bias",
    }


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.int64, torch.bool])
def test_the_checksum_reads_each_tensors_bytes(dtype):
    t = torch.zeros(3, 2, dtype=dtype)
    a = checkpoints.state_checksum({"t": t})
    t[1, 1] = 1
    assert checkpoints.state_checksum({"t": t}) != a
    assert checkpoints.state_checksum({"t": t.t().contiguous().t()}) == checkpoints.state_checksum({"t": t})
