"""Finish a crashed run from its best checkpoint: kill -9 mid-training, then a usable model with its metrics."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pandas as pd
import pytest

from core.base.config import RunConfig, SourceConfig, to_dict
from core.models import checkpoints
from core.runs import jobs
from core.train import finish
from tests.helpers import wait_for
from tests.synth import blob_dataset

pytestmark = pytest.mark.slow


def _config(root: Path) -> RunConfig:
    """A CPU-cheap run on the blob dataset that would go on for a long time."""
    cfg = RunConfig(
        source=SourceConfig(kind="csv", csv_path=str(root / "labels.csv"), group_col="patient_id")
    )
    cfg.data.img_size, cfg.data.batch_size, cfg.data.aug.enabled = 32, 16, False
    cfg.train.pretrained, cfg.train.freeze_epochs, cfg.train.epochs, cfg.train.lr = False, 0, 200, 3e-3
    return cfg


def test_a_killed_run_is_finished_from_its_best_checkpoint(tmp_path, capsys):
    from core.cli import main
    from core.evaluation.predict import Predictor

    data = blob_dataset(tmp_path / "blobs", n_per_class=20)
    store = jobs.JobStore()
    job = jobs.submit_and_start("train", {"config": to_dict(_config(data))}, store=store)
    run = Path(job.run_dir)
    try:
        wait_for(
            lambda: len(pd.read_csv(run / "history.csv")) >= 2 if (run / "history.csv").exists() else False,
            timeout=240,
            poll=0.2,
        )
        os.kill(store.get(job.id).pid, signal.SIGKILL)
        assert jobs.wait(job.id, store=store, timeout=60).status == "failed"
    finally:
        for pid in (store.get(job.id).pid, store.get(job.id).supervisor_pid):
            if pid and jobs.pid_alive(pid, None):
                os.kill(pid, signal.SIGKILL)
    assert not (run / "model").exists() and finish.why_not_finishable(run) == ""
    assert main(["report", str(run)]) == 1 and "python -m core finish" in capsys.readouterr().err
    assert main(["finish", job.id]) == 0  # by run id, as the CLI takes it
    out = json.loads(capsys.readouterr().out)
    summary = json.loads((run / "metrics.json").read_text())
    origin = summary["finished_from_checkpoint"]
    hist = pd.read_csv(run / "history.csv")
    # the file holds a best-so-far epoch (written every few epochs when epochs are short) and says which
    said = checkpoints.checkpoint_epoch(run / "checkpoints" / "best.safetensors")
    assert origin["epoch"] == summary["best_epoch"] == said
    upto = hist[hist["epoch"] <= said]
    assert int(upto.loc[upto["valid_loss"].idxmin(), "epoch"]) == said
    assert origin["run_status"] == "failed" and "signal 9" in origin["run_error"]
    assert f"from epoch {origin['epoch'] + 1} of 200 of a run that failed" in out["note"] == origin["note"]
    valid = pd.read_csv(run / "valid_predictions.csv")
    n_valid = (pd.read_csv(run / "items.csv")["split"] == "valid").sum()
    assert len(valid) == n_valid and {"path", "label", "pred", "prob_blob", "prob_plain"} <= set(valid)
    assert 0 <= summary["metrics"]["valid"]["accuracy"] <= 1 and out["metrics"] == summary["metrics"]
    manifest = json.loads((run / "model" / "model.json").read_text())
    assert manifest["finished_from_checkpoint"]["epoch"] == origin["epoch"] and manifest["metrics"]["valid"]
    assert Predictor(run, device="cpu").classes == ["blob", "plain"]  # the run folder is now a usable model
    assert finish.finished_from_checkpoint(run)["epoch"] == origin["epoch"]
    assert main(["finish", str(run)]) == 1 and "already has a model" in capsys.readouterr().err


def test_what_cannot_be_finished_says_why(tmp_path):
    run = tmp_path / "r"
    assert "not a training run folder" in finish.why_not_finishable(run)
    run.mkdir()
    (run / "config.json").write_text(json.dumps(to_dict(RunConfig())))
    (run / "items.csv").write_text("relpath,label,split\n")
    assert "no checkpoint" in finish.why_not_finishable(run) and "first epoch" in finish.why_not_finishable(
        run
    )
    (run / "checkpoints").mkdir()
    (run / "checkpoints" / "best.safetensors").write_bytes(b"x")
    (run / jobs.JOB_FILE).write_text(json.dumps({"status": "running"}))
    assert finish.why_not_finishable(run) == "the run is running; wait until it ends or cancel it"
    (run / "folds").mkdir()
    assert "k-fold" in finish.why_not_finishable(run)
