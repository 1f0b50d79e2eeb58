"""Training engine on tiny generated data (CPU, seconds): learns, best epoch, early stop, k-fold, jobs, models."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from core.base.config import RunConfig, SourceConfig, to_dict
from core.runs import jobs, rundir
from core.runs.jobs import run_inline
from core.runs.progress import read_progress
from core.train import callbacks
from tests.helpers import wait_for
from tests.synth import blob_dataset

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def blobs(tmp_path_factory) -> Path:
    """A learnable 2-class dataset with patient ids (80 images, 32 px)."""
    return blob_dataset(tmp_path_factory.mktemp("blobs"), n_per_class=40)


def tiny_config(root: Path, **train) -> RunConfig:
    """A CPU-cheap run config on the blob dataset, split by patient."""
    cfg = RunConfig(
        source=SourceConfig(kind="csv", csv_path=str(root / "labels.csv"), group_col="patient_id")
    )
    cfg.data.img_size, cfg.data.batch_size, cfg.data.aug.enabled = 32, 16, False
    cfg.data.split.method = "group"
    cfg.train.pretrained, cfg.train.freeze_epochs, cfg.train.epochs, cfg.train.lr = False, 0, 4, 3e-3
    for k, v in train.items():
        setattr(cfg.train, k, v)
    return cfg


@pytest.fixture(scope="module")
def trained(blobs, tmp_path_factory):
    """One finished single run shared by several tests."""
    run_dir = tmp_path_factory.mktemp("run")
    cfg = tiny_config(blobs)
    cfg.data.batch_size = (
        8  # 8 steps per epoch: the saved last epoch is settled (at 16 it ended at 0.75-0.81)
    )
    result = run_inline("train", {"config": to_dict(cfg)}, run_dir=run_dir)
    return run_dir, result


def test_run_learns_and_writes_a_complete_run_folder(trained):
    run_dir, result = trained
    assert result["metrics"]["valid"]["accuracy"] >= 0.8  # chance is 0.5
    assert result["metrics"]["valid"]["roc_auc"] >= 0.85
    for name in (
        "config.json",
        "items.csv",
        "history.csv",
        "valid_predictions.csv",
        "metrics.json",
        "env.json",
        "progress.json",
        "model/model.json",
        "model/model.safetensors",
    ):
        assert (run_dir / name).exists(), name
    hist = pd.read_csv(run_dir / "history.csv")
    assert list(hist["epoch"]) == [0, 1, 2, 3]
    assert {"train_loss", "valid_loss", "accuracy", "balanced_accuracy", "roc_auc", "recall_blob"} <= set(
        hist
    )
    env = json.loads((run_dir / "env.json").read_text())
    assert env["torch"] == torch.__version__ and "fastai" in env
    assert env["torch_threads"] == torch.get_num_threads() >= 1 and env["torch_threads_from"]
    assert json.loads((run_dir / "progress.json").read_text())["phase"] == "done"


def test_no_patient_id_in_run_folder(trained, blobs):
    run_dir, _ = trained
    raw_ids = set(pd.read_csv(blobs / "labels.csv")["patient_id"])
    text = "".join(
        p.read_text(errors="ignore") for p in run_dir.rglob("*") if p.suffix in (".csv", ".json", ".txt")
    )
    assert not any(f",{pid}," in text or f'"{pid}"' in text for pid in raw_ids)
    groups = pd.read_csv(run_dir / "items.csv")["group"]
    assert groups.str.startswith("anon-").all()


def valid_loss_of(pred: pd.DataFrame, classes: list[str]) -> float:
    """Mean cross-entropy of a predictions table."""
    probs = pred[[f"prob_{c}" for c in classes]].to_numpy()
    y = pred["label"].map({c: i for i, c in enumerate(classes)}).to_numpy()
    return float(-np.log(np.clip(probs[np.arange(len(y)), y], 1e-12, None)).mean())


def test_final_model_is_the_last_epoch_without_early_stopping(trained):
    run_dir, result = trained
    hist = pd.read_csv(run_dir / "history.csv")
    best = int(hist["valid_loss"].idxmin())
    assert result["best_epoch"] == best  # still reported (and checkpointed), but not what is saved
    assert result["model_weights"] == "last" and result["model_epoch"] == len(hist) - 1 == 3
    assert result["valid_used_for_selection"] is False and result["headline_set"] == "valid"
    pred = pd.read_csv(run_dir / "valid_predictions.csv")
    # predictions were made with the last epoch's weights: their loss is the last epoch's valid loss
    assert valid_loss_of(pred, result["classes"]) == pytest.approx(
        hist["valid_loss"].iloc[-1], rel=1e-3, abs=1e-4
    )
    manifest = json.loads((run_dir / "model" / "model.json").read_text())
    assert manifest["model_epoch"] == 3 and manifest["model_weights"] == "last"


def assert_fresh_process_predicts_the_run(run_dir: Path, tmp_path: Path) -> None:
    """The saved model, loaded in a fresh process, gives the run's own validation probabilities back."""
    pred = pd.read_csv(run_dir / "valid_predictions.csv")
    out = tmp_path / "fresh.csv"
    code = (
        "import sys; from core.evaluation.predict import Predictor; import pandas as pd\n"
        "p = Predictor(sys.argv[1], device='cpu'); paths = pd.read_csv(sys.argv[2])['path'].tolist()\n"
        "df, probs = p.predict_paths(paths); df.to_csv(sys.argv[3], index=False)\n"
    )
    res = subprocess.run(
        [
            sys.executable,
            "-c",
            code,
            str(run_dir / "model"),
            str(run_dir / "valid_predictions.csv"),
            str(out),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 0, res.stderr[-2000:]
    fresh = pd.read_csv(out)
    assert list(fresh["path"]) == list(pred["path"])
    cols = [c for c in pred if c.startswith("prob_") and c != "prob_pred"]
    np.testing.assert_allclose(fresh[cols].to_numpy(), pred[cols].to_numpy(), atol=1e-5)


def test_saved_model_predicts_identically_in_a_fresh_process(trained, tmp_path):
    run_dir, _ = trained
    manifest = json.loads((run_dir / "model" / "model.json").read_text())
    # normalize="auto" from scratch: the blob images' own statistics (mean about 0.35), not ImageNet's
    assert manifest["normalize"]["mean"] != pytest.approx([0.485, 0.456, 0.406], abs=1e-3)
    assert manifest["normalize"]["mean"][0] == pytest.approx(0.35, abs=0.05)
    assert_fresh_process_predicts_the_run(run_dir, tmp_path)


def test_each_file_is_decoded_once_per_run_and_not_at_all_when_cached(blobs, tmp_path, monkeypatch):
    from collections import Counter

    from core.data import imaging

    reads: Counter = Counter()
    real = imaging.read_image

    def counting(path, *a, **k):
        reads[Path(path).name] += 1
        return real(path, *a, **k)

    monkeypatch.setattr(imaging, "read_image", counting)
    cfg = to_dict(tiny_config(blobs, epochs=1))
    run_inline("train", {"config": cfg}, run_dir=tmp_path / "a")
    n_items = len(pd.read_csv(tmp_path / "a" / "items.csv"))
    assert len(reads) == n_items and set(reads.values()) == {1}  # validation decode = the training decode
    reads.clear()
    run_inline("train", {"config": cfg}, run_dir=tmp_path / "b")
    assert not reads  # the second run validates from the cache entries and trains from them


def test_early_stopping_stops(blobs, tmp_path, monkeypatch):
    # the validation losses are scripted (1.0, 0.6, then worse), so the rule is decided by the test's own input and
    # not by what the model happens to learn on this machine's thread count
    script = [1.0, 0.6, 0.7, 0.8, 0.9, 1.0, 1.1, 1.2, 1.3, 1.4, 1.5, 1.6]
    real = callbacks.epoch_values

    def scripted(recorder):
        values = real(recorder)
        return {**values, "valid_loss": script[len(recorder.values) - 1]}

    monkeypatch.setattr(callbacks, "epoch_values", scripted)
    cfg = tiny_config(blobs, epochs=12, early_stop_patience=1, monitor="valid_loss")
    result = run_inline("train", {"config": to_dict(cfg)}, run_dir=tmp_path / "run")
    assert result["stopped_early"] is True
    assert (
        result["epochs_run"] == 3 and result["best_epoch"] == 1
    )  # epoch 2 was worse than epoch 1: patience 1
    hist = pd.read_csv(tmp_path / "run" / "history.csv")
    assert len(hist) == result["epochs_run"] and result["best_epoch"] == int(hist["valid_loss"].idxmin())
    # with early stopping the saved model is the best checkpoint, labelled so, and validation is optimistic
    assert result["model_weights"] == "best" and result["model_epoch"] == result["best_epoch"]
    assert result["valid_used_for_selection"] is True and "optimistic" in result["sets"]["valid"]
    from safetensors.torch import load_file

    saved, ckpt = (
        load_file(str(tmp_path / "run" / p))
        for p in ("model/model.safetensors", "checkpoints/best.safetensors")
    )
    assert saved.keys() == ckpt.keys() and all(
        torch.equal(saved[k], ckpt[k]) for k in saved
    )  # the best epoch's weights


@pytest.fixture(scope="module")
def scratch_dataset_norm(blobs, tmp_path_factory):
    """From scratch with the default frozen-epoch setting, dataset normalisation and a holdout test split."""
    cfg = tiny_config(blobs, epochs=2, freeze_epochs=1)
    cfg.data.normalize, cfg.data.split.test_pct = "dataset", 0.25
    run_dir = tmp_path_factory.mktemp("scratch")
    return run_dir, run_inline("train", {"config": to_dict(cfg)}, run_dir=run_dir)


def test_from_scratch_trains_exactly_epochs_and_headlines_the_test_set(scratch_dataset_norm):
    run_dir, result = scratch_dataset_norm
    hist = pd.read_csv(run_dir / "history.csv")
    assert list(hist["epoch"]) == [0, 1] and set(hist["phase"]) == {"unfrozen"}  # no frozen epoch added
    assert result["epochs_planned"] == result["epochs_run"] == 2
    saved = json.loads((run_dir / "metrics.json").read_text())
    assert saved["headline_set"] == "test" and set(saved["metrics"]) == {"valid", "test"}
    assert saved["model_epoch"] == 1 and saved["model_weights"] == "last"
    assert "never seen" in saved["sets"]["test"] and "not used to choose" in saved["sets"]["valid"]


def test_dataset_normalisation_is_what_the_saved_model_uses(scratch_dataset_norm, tmp_path):
    run_dir, _ = scratch_dataset_norm
    norm = json.loads((run_dir / "model" / "model.json").read_text())["normalize"]
    assert norm["mean"] != pytest.approx([0.485, 0.456, 0.406], abs=1e-3)  # not ImageNet's statistics
    assert_fresh_process_predicts_the_run(run_dir, tmp_path)


def test_kfold_grouped_out_of_fold_covers_every_item_once(blobs, tmp_path):
    cfg = tiny_config(blobs, epochs=1)
    cfg.data.split.k_folds = 3
    result = run_inline("train", {"config": to_dict(cfg)}, run_dir=tmp_path / "kf")
    run_dir = tmp_path / "kf"
    assert result["type"] == "kfold" and len(result["metrics"]["per_fold"]) == 3
    assert {"mean", "sd"} <= set(result["metrics"]["mean_sd"]["accuracy"])
    oof = pd.read_csv(run_dir / "oof_predictions.csv")
    labels = pd.read_csv(blobs / "labels.csv")
    assert sorted(Path(p).name for p in oof["path"]) == sorted(Path(p).name for p in labels["path"])
    items = pd.read_csv(run_dir / "items.csv")
    per_group = items.groupby("group")["fold"].nunique()
    assert (per_group == 1).all()  # no patient in two folds
    for i in range(3):
        assert (run_dir / "folds" / f"fold{i}" / "model.json").exists()
    assert set(oof["fold"]) == {0, 1, 2}


def test_kfold_final_model_on_all_data_with_oversampling(blobs, tmp_path):
    cfg = tiny_config(blobs, epochs=1, final_model_on_all=True, imbalance="oversample")
    cfg.data.split.k_folds = 2
    result = run_inline("train", {"config": to_dict(cfg)}, run_dir=tmp_path / "kf")
    assert result["final_model"]["epochs"] >= 1
    manifest = json.loads((tmp_path / "kf" / "model" / "model.json").read_text())
    assert manifest["classes"] == ["blob", "plain"] and "kfold_mean_sd" in manifest["metrics"]


def test_kfold_folds_as_child_jobs_on_two_slots_match_one_slot(blobs, tmp_path, store, monkeypatch):
    from safetensors.torch import load_file

    monkeypatch.setenv("XRT_TORCH_THREADS", "1")  # same intra-op threads on both sides: same summation order
    threads = torch.get_num_threads()
    cfg = tiny_config(blobs, epochs=1, final_model_on_all=True)
    cfg.data.split.k_folds = 2
    params = {"config": to_dict(cfg)}
    try:
        run_inline("train", params, run_dir=tmp_path / "one")  # one slot: the folds in sequence, one job
    finally:
        torch.set_num_threads(threads)
    monkeypatch.setenv("XRT_MAX_JOBS", "2")
    job = jobs.submit_and_start("train", params, store=store)
    done = jobs.wait(job.id, store=store, timeout=900)
    assert done.status == "done", done.error
    kids = sorted(store.list(parent_id=job.id), key=lambda k: k.params["fold"])
    assert [(k.kind, k.status, k.params["fold"]) for k in kids] == [("fold", "done", 0), ("fold", "done", 1)]
    one, two = rundir.RunFolder(tmp_path / "one"), rundir.RunFolder(done.run_dir)
    assert pd.read_csv(one.items).equals(pd.read_csv(two.items))  # same items in the same folds
    oof = [pd.read_csv(r.predictions("oof")) for r in (one, two)]
    assert list(oof[0]["path"]) == list(oof[1]["path"]) and list(oof[0]["fold"]) == list(oof[1]["fold"])
    probs = [o.filter(like="prob_").to_numpy() for o in oof]
    assert np.abs(probs[0] - probs[1]).max() <= 1e-6
    hist = [pd.read_csv(r.history) for r in (one, two)]
    assert list(hist[0]["fold"].fillna(-1)) == list(hist[1]["fold"].fillna(-1)) == [0, 1, -1]  # -1: final
    assert np.allclose(hist[0]["train_loss"], hist[1]["train_loss"], atol=1e-6)
    summary = [r.read_metrics() for r in (one, two)]
    assert summary[1]["type"] == "kfold" and [f["fold"] for f in summary[1]["metrics"]["per_fold"]] == [0, 1]
    assert summary[0]["metrics"]["pooled_oof"] == pytest.approx(
        summary[1]["metrics"]["pooled_oof"], abs=1e-6, nan_ok=True
    )
    assert [i for i, _ in two.fold_models()] == [0, 1]
    assert summary[0]["final_model"] == summary[1]["final_model"]  # trained by the parent's second run
    weights = [load_file(str(r.model_dir / "model.safetensors")) for r in (one, two)]
    assert max(float((weights[0][n] - weights[1][n]).abs().max()) for n in weights[0]) <= 1e-6


@pytest.mark.parametrize("arch,imbalance", [("efficientnet_b0", "weighted_loss"), ("resnet34", "none")])
def test_other_architectures_and_weighted_loss(blobs, tmp_path, arch, imbalance):
    cfg = tiny_config(blobs, arch=arch, epochs=1, imbalance=imbalance)
    result = run_inline("train", {"config": to_dict(cfg)}, run_dir=tmp_path / "r")
    assert result["epochs_run"] == 1
    assert json.loads((tmp_path / "r" / "model" / "model.json").read_text())["arch"] == arch


def test_training_refused_with_one_class(tmp_path):
    root = blob_dataset(tmp_path / "d", n_per_class=6)
    df = pd.read_csv(root / "labels.csv")
    df[df["label"] == "blob"].to_csv(root / "one.csv", index=False)
    cfg = tiny_config(root)
    cfg.source.csv_path = str(root / "one.csv")
    with pytest.raises(Exception, match="(?i)one class|refused"):
        run_inline("train", {"config": to_dict(cfg)}, run_dir=tmp_path / "r")


def test_lr_find_returns_curve_and_suggestions(blobs, tmp_path):
    cfg = tiny_config(blobs)
    result = run_inline("lr_find", {"config": to_dict(cfg), "num_it": 40}, run_dir=tmp_path / "lr")
    data = json.loads((tmp_path / "lr" / "lr_find.json").read_text())
    assert len(data["lrs"]) == len(data["losses"]) > 5
    assert "valley" in result["suggestions"]
    assert set(result["suggestions"]) <= {"minimum", "steep", "valley", "slide"}
    assert all(1e-8 < v < 10 for v in result["suggestions"].values())
    assert data["verdict"] == result["verdict"] and set(result["verdict"]) == {
        "usable",
        "reason",
        "default_lr",
    }


def test_offline_pretrained_weights_give_a_clear_message(blobs, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty_torch_home"))
    import urllib.request

    def no_network(*a, **k):
        raise OSError("network is unreachable")

    monkeypatch.setattr(urllib.request, "urlopen", no_network)
    cfg = tiny_config(blobs, pretrained=True)
    with pytest.raises(Exception) as err:
        run_inline("train", {"config": to_dict(cfg)}, run_dir=tmp_path / "r")
    msg = str(err.value)
    assert "resnet18" in msg and "scratch" in msg and "Traceback" not in msg


def test_torch_hub_cache_gives_offline_pretrained_training(blobs, tmp_path, monkeypatch):
    import torchvision

    home = tmp_path / "torch_home"
    (home / "hub" / "checkpoints").mkdir(parents=True)
    torch.save(
        torchvision.models.resnet18().state_dict(), home / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    )
    monkeypatch.setenv("TORCH_HOME", str(home))
    cfg = tiny_config(blobs, pretrained=True, freeze_epochs=1, epochs=1)
    result = run_inline("train", {"config": to_dict(cfg)}, run_dir=tmp_path / "r")
    hist = pd.read_csv(tmp_path / "r" / "history.csv")
    assert list(hist["phase"]) == ["frozen", "unfrozen"]  # fine_tune: head first, then the whole network
    assert result["epochs_run"] == 2


@pytest.fixture
def store():
    """A JobStore in the isolated home; kills leftover workers afterwards."""
    s = jobs.JobStore()
    yield s
    for job in s.list():
        for pid in (job.pid, getattr(job, "supervisor_pid", None)):
            if pid:
                try:
                    os.kill(pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass


def test_cancel_a_running_training_job(blobs, store):
    cfg = tiny_config(blobs, epochs=200)
    job = jobs.submit_and_start("train", {"config": to_dict(cfg)}, store=store)
    wait_for(lambda: read_progress(job.run_dir).get("batch", 0) >= 1, timeout=120, poll=0.2)
    store.cancel(job.id)
    done = jobs.wait(job.id, store=store, timeout=60)
    assert done.status == "cancelled"
    history = Path(done.run_dir) / "history.csv"
    assert not history.exists() or len(pd.read_csv(history)) < 200


def test_kill_9_of_a_training_worker_is_detected(blobs, store):
    cfg = tiny_config(blobs, epochs=200)
    job = jobs.submit_and_start("train", {"config": to_dict(cfg)}, store=store)
    wait_for(lambda: read_progress(job.run_dir).get("batch", 0) >= 1, timeout=120, poll=0.2)
    pid = store.get(job.id).pid
    os.kill(pid, signal.SIGKILL)
    done = jobs.wait(job.id, store=store, timeout=60)
    assert done.status == "failed" and "signal 9" in done.error


def test_cli_exports_a_trained_model_to_onnx(trained, tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    from core.cli import main

    run_dir, _ = trained
    assert main(["export", "--model", str(run_dir), "--onnx", str(tmp_path / "m.onnx")]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["verified"] is True and out["max_abs_diff"] < 1e-3
    assert (tmp_path / "m.onnx").stat().st_size > 1000


def test_cli_points_kfold_runs_to_their_fold_models(tmp_path, capsys):
    from core.cli import main

    (tmp_path / "kf" / "folds" / "fold0").mkdir(parents=True)
    assert main(["predict", "--model", str(tmp_path / "kf"), str(tmp_path)]) == 1
    assert "fold" in capsys.readouterr().err


@pytest.mark.parametrize(
    "setting, cuda, layout",
    [
        ("auto", False, torch.contiguous_format),  # a CPU at 128 px: channels_last cost test accuracy there
        ("auto", True, torch.channels_last),
        ("on", False, torch.channels_last),  # an explicit choice is kept
        ("off", True, torch.contiguous_format),
    ],
)
def test_channels_last_for_training_is_a_gpu_default_only(blobs, monkeypatch, setting, cuda, layout):
    from core.data.loaders import build_dataloaders
    from core.data.sources import load_source
    from core.data.splits import assign_splits
    from core.train.learner import make_learner, use_channels_last

    cfg = tiny_config(blobs, channels_last=setting, mixed_precision="off")  # no fp16 on a pretend GPU
    cfg.data.img_size = 128  # the size from which the CPU default used to switch it on
    items = assign_splits(load_source(cfg.source).items, cfg.data.split)
    dls = build_dataloaders(items, cfg.data, device=torch.device("cpu"))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)  # the learner's choice on this "machine"
    assert use_channels_last(setting) == (layout is torch.channels_last)
    learn = make_learner(dls, cfg)
    conv = next(m for m in learn.model.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=layout)
