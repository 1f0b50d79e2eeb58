"""Issue 24 item 16: a run interrupted after an epoch resumes from its saved state (weights, optimiser, schedule
position, RNG; safetensors + JSON) to the same weights as an uninterrupted run; damaged or finished runs are
refused with a plain reason."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from core.base.config import RunConfig, SourceConfig, to_dict
from core.cli import main
from core.runs import executors, jobs, rundir
from core.runs.progress import Progress
from core.train import resume, resume_state
from tests.synth import blob_dataset

pytestmark = pytest.mark.slow


class Crash(RuntimeError):
    """The interruption the test plants."""


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return blob_dataset(tmp_path_factory.mktemp("blobs"), n_per_class=12)


def _config(root: Path, weights: str = "") -> dict:
    """3 epochs with augmentation on (so the RNG states matter), one thread, no workers: from scratch, or
    fine-tuned from a weights file (1 frozen epoch, then 2)."""
    cfg = RunConfig(source=SourceConfig(kind="csv", csv_path=str(root / "labels.csv")))
    cfg.data.img_size, cfg.data.batch_size, cfg.data.num_workers = 32, 8, 0
    cfg.train.pretrained, cfg.train.freeze_epochs, cfg.train.epochs, cfg.train.lr = False, 0, 3, 3e-3
    if weights:
        cfg.train.weights_path, cfg.train.freeze_epochs, cfg.train.epochs = weights, 1, 2
    cfg.train.torch_threads, cfg.train.seed = 1, 7
    return to_dict(cfg)


def _same_run(run_dir: Path, reference: Path) -> None:
    """The same history (valid loss per epoch) and final weights, within rounding."""
    hist, whole = rundir.RunFolder(run_dir).read_history(), rundir.RunFolder(reference).read_history()
    assert list(hist["epoch"]) == [0, 1, 2]
    assert hist["valid_loss"].to_numpy() == pytest.approx(whole["valid_loss"].to_numpy(), rel=1e-4, abs=1e-6)
    got, want = _weights(run_dir), _weights(reference)
    assert got.keys() == want.keys()
    for k in want:  # the same floating-point operations in the same order on CPU: equal up to rounding
        torch.testing.assert_close(got[k], want[k], rtol=1e-4, atol=1e-5, msg=k)


def _crash_after_epoch(monkeypatch, epoch: int) -> None:
    """The run stops (an exception, as a crash) right after the resume state of `epoch` is written (every epoch's
    state is written here, however short the epochs)."""
    original = resume_state.SaveResumeState.after_epoch
    monkeypatch.setattr(resume_state, "WRITE_SHARE", 1e9)

    def after_epoch(self):
        original(self)
        if self.clock.now() == epoch:
            raise Crash("planted interruption")

    monkeypatch.setattr(resume_state.SaveResumeState, "after_epoch", after_epoch)


def _weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(str(rundir.RunFolder(run_dir).model_dir / rundir.MODEL_WEIGHTS))


@pytest.fixture(scope="module")
def uninterrupted(data, tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("whole")
    jobs.run_inline("train", {"config": _config(data)}, run_dir=run_dir)
    return run_dir


@pytest.fixture
def crashed(data, tmp_path, monkeypatch) -> tuple[jobs.JobStore, jobs.Job]:
    """A queued job whose run crashed after its first epoch (its row marked failed, as a worker would)."""
    store = jobs.JobStore()
    params = {"config": _config(data)}
    job = store.submit("train", params)
    with monkeypatch.context() as m:
        _crash_after_epoch(m, 0)
        with pytest.raises(Crash):
            jobs.run_inline("train", params, run_dir=job.run_dir)
    store.finish(job.id, "failed", error="planted interruption", only_if_running=False)
    monkeypatch.setattr(executors, "executor", lambda: _NoWorkers())
    return store, job


class _NoWorkers:
    def start(self, store) -> None:
        """The test runs the queued task itself."""


def test_resumed_run_equals_the_uninterrupted_run(crashed, uninterrupted):
    store, job = crashed
    run = rundir.RunFolder(job.run_dir)
    assert run.resume_state.is_file() and not run.has_final_model()
    assert len(run.read_history()) == 1
    assert resume.why_not_resumable(run) == ""
    assert main(["resume", str(run.path), "--background"]) == 0  # the run's own job row, queued again
    queued = store.get(job.id)
    assert (queued.id, queued.status, queued.params["resume"]) == (job.id, "queued", True)
    jobs.resolve_task("train")(queued.params, run.path, Progress(run.path, job.id))
    _same_run(run.path, uninterrupted)
    metrics = run.read_metrics()
    assert metrics["resumed_after_epoch"] == 0 and metrics["epochs_run"] == 3
    assert "finished" in resume.why_not_resumable(run)
    assert not run.resume_state.exists()  # a finished run keeps no resume state


def test_resume_state_is_verified_json_and_tensors_and_refused_when_damaged_or_missing(
    crashed, tmp_path, capsys
):
    store, job = crashed
    run = rundir.RunFolder(job.run_dir)
    state = resume_state.read(run.resume_state)
    assert state.epoch == 0 and state.info["fit"] == 1 and any(k.startswith("opt.") for k in state.tensors)
    assert json.loads(json.dumps(state.info)) == state.info  # plain JSON: nothing that unpickles
    raw = run.resume_state.read_bytes()
    tampered = tmp_path / "resume.safetensors"
    tampered.write_bytes(raw.replace(b'\\"epoch\\": 0', b'\\"epoch\\": 1', 1))
    assert tampered.read_bytes() != raw
    with pytest.raises(Exception, match="incomplete or was changed"):
        resume_state.read(tampered)
    flipped = bytearray(raw)
    flipped[-20] ^= 0xFF  # a flipped bit in a tensor
    run.resume_state.write_bytes(bytes(flipped))
    assert "checksum" in resume.why_not_resumable(run)
    assert main(["resume", str(run.path)]) == 1
    assert "cannot resume" in capsys.readouterr().err
    assert store.get(job.id).status == "failed"
    run.resume_state.unlink()
    assert "no resumable state" in resume.why_not_resumable(run)


@pytest.fixture(scope="module")
def fine_tuned(data, tmp_path_factory) -> tuple[dict, Path]:
    """The config of a fine-tuned run (from a local weights file) and its uninterrupted run folder."""
    from safetensors.torch import save_file

    from core.models import archs

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("weights") / "resnet18.safetensors"
    save_file(archs.torchvision_builder("resnet18")(weights=None).state_dict(), str(path))
    params = {"config": _config(data, weights=str(path))}
    run_dir = tmp_path_factory.mktemp("whole_ft")
    jobs.run_inline("train", params, run_dir=run_dir)
    return params, run_dir


@pytest.mark.parametrize("after", [0, 1])  # 0: at the end of the frozen fit; 1: inside the unfrozen one
def test_resumed_fine_tune_equals_the_uninterrupted_run(fine_tuned, after, tmp_path, monkeypatch):
    params, reference = fine_tuned
    with monkeypatch.context() as m:
        _crash_after_epoch(m, after)
        with pytest.raises(Crash):
            jobs.run_inline("train", params, run_dir=tmp_path)
    assert resume_state.read(rundir.RunFolder(tmp_path).resume_state).info["fit"] == after + 1
    jobs.run_inline("train", {**params, "resume": True}, run_dir=tmp_path)
    _same_run(tmp_path, reference)


def test_requeue_takes_only_an_ended_job_and_clears_its_stop_flag():
    store = jobs.JobStore()
    job = store.submit("train", {"config": {}})
    assert store.requeue(job.id, {"resume": True}) is None  # queued: not ended
    store.finish(job.id, "cancelled", error="cancelled by the user", only_if_running=False)
    rundir.RunFolder(job.run_dir).stop.write_text("")
    again = store.requeue(job.id, {"resume": True})
    assert again is not None and (again.status, again.params, again.error) == ("queued", {"resume": True}, "")
    assert not rundir.RunFolder(job.run_dir).stop.exists()
    assert rundir.RunFolder(job.run_dir).read_job()["status"] == "queued"
