"""Sweeps (experiments): value syntax, grid / random plans, shared splits, derived status, cancel, budget."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from core.base.config import ConfigError, RunConfig, SourceConfig, to_dict  # noqa: E402
from core.data.splits import assign_splits, train_subset  # noqa: E402
from core.runs import jobs, rundir  # noqa: E402
from core.runs.progress import JobCancelled, Progress  # noqa: E402
from core.train import experiments as ex  # noqa: E402
from tests.helpers import wait_for  # noqa: E402
from tests.synth import blob_dataset  # noqa: E402
from tests.test_jobs import _kill_leftovers  # noqa: E402


def base_config(root: Path) -> RunConfig:
    """A CPU-cheap base run on the blob dataset, split by patient."""
    cfg = RunConfig(
        source=SourceConfig(kind="csv", csv_path=str(root / "labels.csv"), group_col="patient_id")
    )
    cfg.data.img_size, cfg.data.batch_size, cfg.data.aug.enabled = 32, 16, False
    cfg.data.split.method = "group"
    cfg.train.pretrained, cfg.train.freeze_epochs, cfg.train.epochs, cfg.train.lr = False, 0, 1, 3e-3
    return cfg


@pytest.fixture(scope="module")
def blobs(tmp_path_factory):
    return blob_dataset(tmp_path_factory.mktemp("blobs"), n_per_class=20)


# ---------------------------------------------------------------- syntax and plans


def test_axis_lists_ranges_and_aliases():
    assert ex.parse_axis("epochs=2,4,4").grid() == [2, 4]
    assert ex.parse_axis("bs=16, 32").name == "batch_size"
    assert ex.parse_axis("lr=1e-4:1e-2:log3").grid() == [1e-4, 1e-3, 1e-2]
    assert ex.parse_axis("img_size=64:128:3").grid() == [64, 96, 128]
    assert ex.parse_axis("train_fraction=0.25:1").grid() == [0.25, 0.625, 1.0]  # no count: 3 points
    assert ex.parse_axis("aug=none,fastai").grid() == ["none", "fastai"]
    for bad in (
        "epochs",
        "colour=1,2",
        "lr=1e-2:1e-4",
        "lr=0:1:log3",
        "aug=wild",
        "epochs=a,b",
        "lr=1:2:3:4",
    ):
        with pytest.raises(ConfigError):
            ex.parse_axis(bad)


def test_grid_is_every_combination_and_a_seeded_subset_when_trials_are_fewer():
    spec = ex.SweepSpec(axes=["epochs=1,2,3", "lr=1e-3,1e-2"])
    plan = ex.plan_trials(spec)
    assert len(plan) == 6 and plan[0] == {"epochs": 1, "lr": 1e-3} and plan[-1] == {"epochs": 3, "lr": 1e-2}
    spec.trials = 4
    subset = ex.plan_trials(spec)
    assert len(subset) == 4 and all(p in plan for p in subset) and subset == ex.plan_trials(spec)


def test_random_draws_stay_in_range_are_seeded_and_distinct():
    spec = ex.SweepSpec(
        axes=["lr=1e-5:1e-1:log", "img_size=32:64", "arch=resnet18,resnet34"],
        mode="random",
        trials=12,
        seed=3,
    )
    plan = ex.plan_trials(spec)
    assert len(plan) == 12 and plan == ex.plan_trials(spec)
    assert all(
        1e-5 <= p["lr"] <= 1e-1 and 32 <= p["img_size"] <= 64 and isinstance(p["img_size"], int) for p in plan
    )
    assert len({json.dumps(p, sort_keys=True) for p in plan}) == 12
    assert np.median([np.log10(p["lr"]) for p in plan]) < -2  # log-uniform, not crowded at the top
    small = ex.SweepSpec(axes=["epochs=1,2"], mode="random", trials=5)
    assert sorted(p["epochs"] for p in ex.plan_trials(small)) == [1, 2]  # only 2 distinct points exist


def test_spec_refuses_what_cannot_run():
    for spec in (
        ex.SweepSpec(),
        ex.SweepSpec(axes=["epochs=1"], mode="bayes"),
        ex.SweepSpec(axes=["epochs=1"], metric="valid_loss"),
        ex.SweepSpec(axes=["epochs=1", "epochs=2"]),
        ex.SweepSpec(axes=["epochs=1"], trials=-1),
    ):
        with pytest.raises(ConfigError):
            spec.validate()


def test_apply_settings_preset_strength_fraction_and_training_seed_only(blobs):
    base = base_config(blobs)
    cfg = ex.apply_settings(
        base, {"aug": "fastai", "aug_strength": 2.0, "train_fraction": 0.5, "seed": 7, "bs": 8}
    )
    assert (
        cfg.data.aug.warp == pytest.approx(0.4)
        and cfg.data.aug.rotate == 20
        and cfg.data.aug.zoom == pytest.approx(1.2)
    )
    assert cfg.data.train_fraction == 0.5 and cfg.data.batch_size == 8
    assert cfg.train.seed == 7 and cfg.data.split.seed == base.data.split.seed  # same split for every trial
    assert base.data.train_fraction == 1.0 and base.train.seed == 42  # the base is not changed
    with pytest.raises(ConfigError):
        ex.apply_settings(base, {"arch": "vgg99"})
    with pytest.raises(ConfigError):
        ex.apply_settings(base, {"train_fraction": 1.5})


def test_train_fraction_is_validated_and_refused_with_kfold():
    cfg = RunConfig()
    cfg.data.train_fraction = 0.0
    with pytest.raises(ConfigError):
        cfg.validate()
    cfg.data.train_fraction, cfg.data.split.k_folds = 0.5, 5
    with pytest.raises(ConfigError):
        cfg.validate()


def test_train_subset_drops_training_rows_only_stratified_and_seeded(blobs):
    items = pd.read_csv(blobs / "labels.csv").rename(columns={"patient_id": "group"})
    split = assign_splits(items, base_config(blobs).data.split)
    half = train_subset(split, 0.5, seed=44)
    keyed = ["path", "split"]
    for part in ("valid", "test"):
        assert (
            half[half["split"] == part][keyed]
            .reset_index(drop=True)
            .equals(split[split["split"] == part][keyed].reset_index(drop=True))
        )
    n_train = (split["split"] == "train").sum()
    kept = half[half["split"] == "train"]
    assert len(kept) == round(n_train / 2) and set(kept["path"]) <= set(split["path"])
    assert kept["label"].value_counts().min() >= len(kept) // 2 - 1  # both classes kept about equally
    assert train_subset(split, 0.5, seed=44).equals(half) and train_subset(split, 1.0, seed=1) is split


def test_children_of_a_sweep_share_the_split(blobs, tmp_path):
    from core.train.prepare import prepare

    spec = ex.SweepSpec(axes=["train_fraction=0.5,1", "seed=1,2", "img_size=32,48"])
    splits = []
    for i, settings in enumerate(ex.plan_trials(spec)):
        cfg = ex.apply_settings(base_config(blobs), settings)
        prepare(cfg, tmp_path / f"t{i}", Progress(tmp_path / f"t{i}"))
        items = pd.read_csv(rundir.RunFolder(tmp_path / f"t{i}").items)
        splits.append((settings["train_fraction"], items))
    full = splits[-1][1]
    for fraction, items in splits:
        for part in ("valid", "test"):
            assert set(items[items["split"] == part]["relpath"]) == set(
                full[full["split"] == part]["relpath"]
            )
        train = set(items[items["split"] == "train"]["relpath"])
        assert train <= set(full[full["split"] == "train"]["relpath"])
        assert len(train) == (full["split"] == "train").sum() if fraction == 1 else len(train) < len(full)
    halves = [set(i[i["split"] == "train"]["relpath"]) for f, i in splits if f == 0.5]
    assert all(h == halves[0] for h in halves)  # the subset depends on the split seed only


def test_a_trial_claimed_after_the_deadline_cancels_itself(blobs, tmp_path):
    from core.train.tasks import run_task

    params = {"config": to_dict(base_config(blobs)), "not_after": time.time() - 1}
    with pytest.raises(JobCancelled, match="time budget"):
        run_task(params, tmp_path, Progress(tmp_path))


def test_status_is_derived_from_the_children():
    assert ex.derive_status(["done", "running", "queued"]) == "running"
    assert ex.derive_status(["cancelled", "queued"]) == "queued"
    assert ex.derive_status(["done", "failed", "interrupted"]) == "done"
    assert ex.derive_status(["cancelled", "cancelled"]) == "cancelled"
    assert ex.derive_status(["failed", "interrupted", "cancelled"]) == "failed"


# ---------------------------------------------------------------- through the local executor


@pytest.fixture
def fake_train(monkeypatch):
    """Workers run the stand-in tasks of tests/sweeptasks.py as "train"; leftovers killed afterwards."""
    monkeypatch.setenv(
        "PYTHONPATH", os.pathsep.join(filter(None, [str(TESTS), os.environ.get("PYTHONPATH")]))
    )
    monkeypatch.delenv("XRT_MAX_JOBS", raising=False)
    monkeypatch.setenv(
        jobs.EXTRA_TASKS_ENV, os.environ.get(jobs.EXTRA_TASKS_ENV, "")
    )  # restored after the test
    saved = dict(jobs.TASKS)

    def use(task: str) -> None:
        jobs.register_task("train", f"sweeptasks:{task}")

    yield use
    _kill_leftovers(jobs.JobStore().db_path)
    jobs.TASKS.clear()
    jobs.TASKS.update(saved)


def _wait_done(exp_id: str, store: jobs.JobStore, timeout: float = 120) -> dict:
    """Refresh until the experiment is no longer queued / running."""
    return wait_for(
        lambda: (r := ex.refresh(exp_id, store))["status"] not in jobs.ACTIVE and r, timeout=timeout
    )


@pytest.mark.slow
def test_sweep_runs_children_ranks_them_and_a_new_process_reads_the_same(blobs, fake_train, capsys):
    from core import cli

    fake_train("fake_train")
    store = jobs.JobStore()
    record = ex.start(
        ex.SweepSpec(axes=["lr=1e-3,1e-2"], name="lr sweep"), base_config(blobs), owner="me", store=store
    )
    assert [store.get(t["job"]).kind for t in record["trials"]] == ["train", "train"]
    assert (
        record["trials"][1]["name"].startswith("lr sweep #2")
        and store.get(record["trials"][1]["job"]).owner == "me"
    )
    done = _wait_done(record["id"], store)
    assert done["status"] == "done" and done["counts"] == {"done": 2}
    table = ex.trial_table(done, store, n_boot=100)
    assert table["best"].tolist() == [False, True] and table["ci_lo"].le(table["balanced_accuracy"]).all()
    assert list(table["lr"]) == [1e-3, 1e-2] and table["duration_s"].gt(0).all()
    code = f"import json; from core.train import experiments as ex; print(json.dumps(ex.summary({record['id']!r}, n_boot=100)))"
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    fresh = json.loads(out.stdout)
    assert (
        fresh["status"] == "done"
        and fresh["best"] == record["trials"][1]["job"]
        and fresh["dataset"].startswith("csv")
    )
    assert cli.main(["runs", "--experiment", record["id"]]) == 0
    assert json.loads(capsys.readouterr().out)["best"] == fresh["best"]
    assert ex.trial_config(record, fresh["best"]).train.lr == 1e-2


@pytest.mark.slow
def test_cancel_all_cancels_queued_children_and_the_running_one(blobs, fake_train):
    fake_train("hold")
    store = jobs.JobStore()
    record = ex.start(ex.SweepSpec(axes=["epochs=1,2,3"]), base_config(blobs), store=store)
    first, *rest = [t["job"] for t in record["trials"]]
    wait_for(lambda: store.get(first).status == "running", timeout=60)
    assert ex.refresh(record["id"], store)["status"] == "running"
    assert sorted(ex.cancel(record["id"], store=store)) == sorted([first, *rest])
    assert [store.get(j).status for j in rest] == ["cancelled", "cancelled"]  # queued: cancelled at once
    final = _wait_done(record["id"], store, timeout=60)
    assert final["status"] == "cancelled" and final["counts"] == {"cancelled": 3}


@pytest.mark.slow
def test_time_budget_cancels_trials_not_started_and_one_trial_can_be_cancelled(blobs, fake_train):
    fake_train("hold")
    store = jobs.JobStore()
    record = ex.start(ex.SweepSpec(axes=["epochs=1,2,3"], budget_min=10), base_config(blobs), store=store)
    first, *rest = [t["job"] for t in record["trials"]]
    assert store.get(first).params["not_after"] == pytest.approx(record["created"] + 600)
    wait_for(lambda: store.get(first).status == "running", timeout=60)
    assert ex.refresh(record["id"], store)["counts"] == {"queued": 2, "running": 1}  # before the deadline
    later = ex.refresh(record["id"], store, now=time.time() + 3600)
    assert later["counts"] == {"running": 1, "cancelled": 2}  # the running trial goes on
    with pytest.raises(KeyError):
        ex.cancel(record["id"], "not-a-trial", store=store)
    assert ex.cancel(record["id"], first, store=store) == [first]
    assert _wait_done(record["id"], store, timeout=60)["status"] == "cancelled"


@pytest.mark.slow
def test_real_trials_share_the_split_and_get_metrics_with_cis(blobs):
    store = jobs.JobStore()
    record = ex.start(ex.SweepSpec(axes=["train_fraction=0.5,1"]), base_config(blobs), store=store)
    try:
        done = _wait_done(record["id"], store, timeout=600)
    finally:
        ex.cancel(record["id"], store=store)
        _kill_leftovers(store.db_path)
    assert done["status"] == "done", [store.get(t["job"]).error for t in record["trials"]]
    half, full = (pd.read_csv(rundir.RunFolder(t["run_dir"]).items) for t in record["trials"])
    for part in ("valid", "test"):
        assert (
            half[half["split"] == part]["relpath"].tolist() == full[full["split"] == part]["relpath"].tolist()
        )
    assert (half["split"] == "train").sum() < (full["split"] == "train").sum()
    table = ex.trial_table(done, store, n_boot=100)
    assert table["balanced_accuracy"].notna().all() and table["best"].sum() == 1
    assert len(ex.trial_curves(done)["trial"].unique()) == 2


def test_cli_sweep_background_list_cancel_and_bad_syntax(monkeypatch, capsys):
    from core import cli
    from core.runs import executors

    class QueueOnly:
        def start(self, store) -> None:  # trials are queued, no worker runs them
            pass

    monkeypatch.setattr(executors, "executor", QueueOnly)
    args = [
        "sweep",
        "--kind",
        "sample",
        "--no-pretrained",
        "--epochs",
        "1",
        "--img-size",
        "32",
        "--name",
        "cli try",
        "--sweep",
        "lr=1e-3:1e-2:log2",
        "--sweep",
        "bs=8",
        "--budget-min",
        "5",
        "--background",
    ]
    assert cli.main(args) == 0
    started = json.loads(capsys.readouterr().out)
    record = ex.read(started["experiment"])
    assert len(started["trials"]) == 2 and record["name"] == "cli try" and record["spec"]["budget_min"] == 5
    assert [t["settings"] for t in record["trials"]] == [
        {"lr": 1e-3, "batch_size": 8},
        {"lr": 1e-2, "batch_size": 8},
    ]
    assert ex.base_of(record).data.img_size == 32 and ex.base_of(record).name == ""
    assert cli.main(["cancel", started["experiment"]]) == 0
    assert sorted(json.loads(capsys.readouterr().out)["cancelled"]) == sorted(started["trials"])
    assert cli.main(["experiments"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert listed[0]["experiment"] == started["experiment"] and listed[0]["status"] == "cancelled"
    assert listed[0]["dataset"] == "sample"
    assert cli.main(["sweep", "--kind", "sample", "--sweep", "lr=fast"]) == 1
    assert "cannot read the values of lr" in capsys.readouterr().err
    assert cli.main(["runs", "--experiment", "no-such-id"]) == 1
    tpe = [
        "sweep",
        "--kind",
        "sample",
        "--sweep",
        "lr=1e-4:1e-1:log",
        "--tpe",
        "--trials",
        "3",
        "--parallel",
        "1",
    ]
    assert cli.main([*tpe, "--pruner", "asha", "--prune-epoch", "2", "--background"]) == 0
    started = json.loads(capsys.readouterr().out)
    assert len(started["trials"]) == 1 and started["planned"] == 3  # the others are asked as trials end
    spec = ex.spec_of(ex.read(started["experiment"]))
    assert (spec.mode, spec.pruner, spec.prune_epoch, spec.parallel) == ("tpe", "asha", 2, 1)
    assert cli.main([*tpe[:-4], "--trials", "500", "--background"]) == 1
    assert "at most 100 trials" in capsys.readouterr().err


def test_sweep_figures_show_each_trial_the_best_and_the_curves():
    from core.evaluation import plots

    table = pd.DataFrame(
        {
            "trial": [1, 2, 3],
            "lr": [1e-4, 1e-3, 1e-2],
            "aug": ["none", "default", "none"],
            "epochs": [1, 2, 3],
            "balanced_accuracy": [0.6, 0.8, np.nan],
            "ci_lo": [0.5, 0.7, np.nan],
            "ci_hi": [0.7, 0.9, np.nan],
            "best": [False, True, False],
        }
    )
    fig = plots.sweep_metric(table, "lr", "balanced_accuracy")
    assert list(fig.data[0].y) == [0.6, 0.8] and fig.layout.xaxis.type == "log"  # unfinished trial left out
    assert list(fig.data[0].marker.symbol) == ["circle", "star"] and list(
        fig.data[0].error_y.array
    ) == pytest.approx([0.1, 0.1])
    assert plots.sweep_metric(table, "aug", "balanced_accuracy").layout.xaxis.type == "category"
    par = plots.sweep_parallel(table, ["lr", "aug", "epochs"], "balanced_accuracy")
    dims = par.data[0].dimensions
    assert [d.label for d in dims] == ["lr", "aug", "epochs", "balanced_accuracy"] and list(
        dims[1].ticktext
    ) == ["default", "none"]
    curves = pd.DataFrame({"trial": [1, 1, 2], "balanced_accuracy": [0.5, 0.6, 0.7]})
    lines = plots.sweep_curves(curves, "balanced_accuracy").data
    assert [t.name for t in lines] == ["trial 1", "trial 2"] and list(lines[0].x) == [1, 2]


@pytest.mark.slow
def test_cli_sweep_waits_for_its_trials_and_prints_the_comparison(blobs, fake_train, capsys):
    from core import cli

    fake_train("fake_train")
    args = [
        "sweep",
        "--csv",
        str(blobs / "labels.csv"),
        "--group-col",
        "patient_id",
        "--no-pretrained",
        "--epochs",
        "2",
        "--sweep",
        "lr=2e-3,8e-3",
        "--metric",
        "accuracy",
    ]
    assert cli.main(args) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["status"] == "done" and out["metric"] == "valid accuracy" and len(out["trials"]) == 2
    best = next(t for t in out["trials"] if t["best"])
    assert (
        best["job"] == out["best"]
        and best["lr"] == 8e-3
        and best["ci_lo"] <= best["accuracy"] <= best["ci_hi"]
    )
