"""Model-based sweeps with nobody watching: pruning rules, the TPE ask, caps and bounds, trials created
without orphans, and a background sweep that prunes, asks for its next trials and survives a server restart.

Every metric here is decided by the test (planted curves, tests/sweeptasks.py:scripted), never by training.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from core.base.config import ConfigError, to_dict  # noqa: E402
from core.runs import jobs, rundir  # noqa: E402
from core.runs.executors import LocalExecutor  # noqa: E402
from core.train import experiments as ex  # noqa: E402
from core.train import pruning, sweep_loop, sweep_search  # noqa: E402
from tests import test_experiments  # noqa: E402
from tests.helpers import wait_for  # noqa: E402

base_config = test_experiments.base_config
blobs, fake_train = test_experiments.blobs, test_experiments.fake_train  # fixtures shared with those tests

# ---------------------------------------------------------------- pruning rules on planted curves


def curves(*rows: tuple[list[float], bool]) -> list[pruning.Curve]:
    return [pruning.Curve(tuple(v), done) for v, done in rows]


def test_median_rule_compares_with_finished_trials_at_the_same_epoch_after_warmup():
    others = curves(([0.6, 0.8], True), ([0.7, 0.9], True), ([0.65, 0.85], True), ([0.1], False))
    assert "median 0.650 of 3 finished" in pruning.median_rule(0.5, 1, others, warmup=1)
    assert pruning.median_rule(0.66, 1, others, warmup=1) is None  # above the median: goes on
    assert pruning.median_rule(0.5, 1, others, warmup=2) is None  # before warmup: never
    assert pruning.median_rule(0.5, 1, others[:1] + others[3:], warmup=1) is None  # one finished: too few


def test_asha_keeps_the_top_third_at_each_rung_only():
    assert pruning.rungs(1)[:4] == [1, 3, 9, 27] and pruning.rungs(2, last=20) == [2, 6, 18]
    others = curves(
        ([0.9, 0.9, 0.9], False), ([0.8, 0.8, 0.8], True), ([0.7], False), ([0.6], False), ([0.5], False)
    )
    assert "top 2 of 6" in pruning.asha_rule(0.75, 1, others, warmup=1)  # 6 at rung 1: keep 2
    assert pruning.asha_rule(0.85, 1, others, warmup=1) is None
    assert pruning.asha_rule(0.1, 2, others, warmup=1) is None  # epoch 2 is no rung
    assert "top 1 of 3" in pruning.asha_rule(0.85, 3, others, warmup=1)  # rung 3: two rivals reached it
    assert pruning.asha_rule(0.1, 1, [], warmup=1) is None  # alone at a rung: goes on


def _trial_folder(path: Path, values: list[float], finished: bool) -> dict:
    path.mkdir(parents=True)
    pd.DataFrame({"epoch": range(len(values)), "balanced_accuracy": values}).to_csv(
        rundir.RunFolder(path).history, index=False
    )
    if finished:
        rundir.write_json(rundir.RunFolder(path).metrics, {"type": "single"})
    return {"job": path.name, "run_dir": str(path), "settings": {}}


def test_a_trial_reports_and_is_pruned_with_its_epoch_and_curve_kept(tmp_path, monkeypatch):
    trials = [
        _trial_folder(tmp_path / "a", [0.6, 0.8], True),
        _trial_folder(tmp_path / "b", [0.7, 0.9], True),
        _trial_folder(tmp_path / "me", [0.3], False),
    ]
    spec = ex.SweepSpec(axes=["epochs=2"], pruner="median", prune_epoch=1)
    record = {"id": "20990101-000000-000-00000000", "spec": to_dict(spec), "trials": trials}
    rundir.write_json(rundir.experiment_file(record["id"]), record)
    assert pruning.decide(record, tmp_path / "a", 1, 0.9) is None
    state = rundir.RunFolder(tmp_path / "me").resume_state
    state.parent.mkdir(parents=True, exist_ok=True)
    state.write_bytes(b"state")  # a pruned trial is not resumed: its resume state goes
    with pytest.raises(pruning.Pruned, match="pruned after epoch 1"):
        pruning.report({"experiment": record["id"]}, tmp_path / "me", 1, 0.3)
    info = pruning.pruned_info(tmp_path / "me")
    assert info["epoch"] == 1 and "median 0.650" in info["reason"] and not state.exists()
    assert rundir.RunFolder(tmp_path / "me").read_history()["balanced_accuracy"].tolist() == [0.3]
    pruning.report({}, tmp_path / "me", 1, 0.0)  # a run that is no trial: never pruned
    old = ex.SweepSpec(axes=["epochs=2"], median_stop_epoch=2)  # the older flag is the median pruner
    assert (
        pruning.rule_of(old) == ("median", 2)
        and pruning.rule_of(ex.SweepSpec(axes=["epochs=2"]))[0] == "none"
    )


# ---------------------------------------------------------------- the model-based ask and importance


def test_tpe_asks_within_bounds_reproducibly_and_sees_running_trials():
    spec = ex.SweepSpec(axes=["lr=1e-4:1e-1:log", "epochs=1:5", "arch=resnet18,resnet34"], mode="tpe")
    axes = spec.parsed()
    dists = sweep_search.distributions(axes, {a.name: ex.SETTINGS[a.name].kind for a in axes})
    told = [
        sweep_search.Told(
            {"lr": 10 ** -(1 + i % 3), "epochs": 1 + i % 5, "arch": "resnet18"}, "complete", 0.5 + i / 40
        )
        for i in range(12)
    ]
    told.append(sweep_search.Told({"lr": 1e-3, "epochs": 2, "arch": "resnet34"}, "running"))
    told.append(sweep_search.Told({"lr": 1e-3, "epochs": 2, "arch": "resnet34"}, "pruned", None, {1: 0.2}))
    first = sweep_search.suggest(told, dists, seed=3, budget=16)
    assert first == sweep_search.suggest(told, dists, seed=3, budget=16)
    assert (
        1e-4 <= first["lr"] <= 1e-1
        and 1 <= first["epochs"] <= 5
        and first["arch"] in ("resnet18", "resnet34")
    )
    assert (
        sweep_search.n_startup(16) == 5
        and sweep_search.n_startup(100) == 10
        and sweep_search.n_startup(4) == 3
    )


def test_importance_names_the_setting_that_decides_the_metric():
    spec = ex.SweepSpec(axes=["lr=1e-4:1e-1:log", "epochs=1:5"], mode="tpe")
    axes = spec.parsed()
    dists = sweep_search.distributions(axes, {a.name: ex.SETTINGS[a.name].kind for a in axes})
    told = [
        sweep_search.Told({"lr": 10 ** (-4 + 3 * i / 19), "epochs": 1 + (i * 7) % 5}, "complete", i / 19)
        for i in range(20)
    ]
    imp = sweep_search.importance(told, dists)
    assert set(imp) == {"lr", "epochs"} and imp["lr"] > 0.8 > imp["epochs"]
    assert sweep_search.importance(told[:2], dists) == {}


# ---------------------------------------------------------------- caps and bounds (a plain refusal each)


@pytest.mark.parametrize(
    "axis, words",
    [
        ("epochs=0,3", "epochs can be swept within 1..1000"),
        ("batch_size=8:4096", "batch_size can be swept within 1..1024"),
        ("aug_strength=0.5,9", "aug_strength can be swept within 0..3"),
        ("img_size=8,64", "img_size can be swept within 16..2048"),
        ("lr=1e-3:50:log", "lr can be swept within 1e-07..10"),
    ],
)
def test_every_swept_axis_is_bounded(axis, words):
    with pytest.raises(ConfigError, match=words.replace(".", r"\.")):
        ex.SweepSpec(axes=[axis], mode="random").validate()


def test_trials_are_capped_by_the_setting(monkeypatch):
    monkeypatch.setenv("XRT_MAX_TRIALS", "10")
    with pytest.raises(ConfigError, match="at most 10 trials"):
        ex.SweepSpec(axes=["lr=1e-4:1e-1"], mode="tpe", trials=11).validate()
    with pytest.raises(ConfigError, match="grid has 12 points, more than the cap of 10"):
        ex.SweepSpec(axes=["lr=1e-4:1e-1:4", "epochs=1,2,3"]).validate()
    assert ex.trial_budget(ex.SweepSpec(axes=["lr=1e-4:1e-1:4", "epochs=1,2,3"], trials=5)) == 5
    assert ex.trial_budget(ex.SweepSpec(axes=["lr=1e-4:1e-1"], mode="tpe")) == ex.DEFAULT_RANDOM_TRIALS


def test_a_kill_while_trials_are_created_leaves_no_orphan_job(blobs, submitted, monkeypatch):
    store, real, calls = jobs.JobStore(), jobs.JobStore.submit, []

    def dies_on_second(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt  # as if the process was killed between two trials
        return real(self, *args, **kwargs)

    monkeypatch.setattr(jobs.JobStore, "submit", dies_on_second)
    with pytest.raises(KeyboardInterrupt):
        ex.start(ex.SweepSpec(axes=["epochs=1,2,3"]), base_config(blobs), store=store)
    exp_id = ex.list_ids()[0]
    record = ex.read(exp_id)  # the record came first and names every trial it was creating
    assert len(record["trials"]) == 3 and [t["job"] for t in record["trials"]] == ["", "", ""]
    assert len(store.list()) == 1
    monkeypatch.setattr(jobs.JobStore, "submit", real)
    sweep_loop.advance(exp_id, store)
    after = ex.read(exp_id)["trials"]
    assert len(store.list()) == 3 and {t["job"] for t in after} == {j.id for j in store.list()}
    assert {t["run_dir"] for t in after} == {j.run_dir for j in store.list()}  # the first job adopted


# ---------------------------------------------------------------- with workers, nobody watching


def _quiet_status(exp_id: str, store: jobs.JobStore) -> dict:
    """The experiment's status without refresh (no reap, no ask): what a closed page would leave alone."""
    record = ex.read(exp_id)
    return {**record, **ex.status(record, store)}


def _finished(exp_id: str, store: jobs.JobStore, n: int) -> dict | None:
    now = _quiet_status(exp_id, store)
    return now if len(now["trials"]) == n and now["status"] not in jobs.ACTIVE else None


def _running_trial(exp_id: str, store: jobs.JobStore, i: int) -> jobs.Job | None:
    """Trial i's job once its worker process runs it."""
    trials = ex.read(exp_id)["trials"]
    job = store.get(trials[i]["job"]) if len(trials) > i and trials[i]["job"] else None
    return job if job is not None and job.status == "running" and job.pid else None


def tpe_spec(trials: int, **kw) -> ex.SweepSpec:
    return ex.SweepSpec(axes=["lr=1e-4:1e-1:log"], mode="tpe", trials=trials, parallel=1, seed=1, **kw)


@pytest.mark.slow
def test_background_model_based_sweep_prunes_and_asks_with_no_page_open(blobs, fake_train):
    fake_train("scripted")
    store, cfg = jobs.JobStore(), base_config(blobs)
    cfg.train.epochs = 3
    record = ex.start(tpe_spec(7, pruner="median"), cfg, store=store)
    assert len(record["trials"]) == 1  # parallel=1: one trial asked now, the rest as trials end
    done = wait_for(lambda: _finished(record["id"], store, 7), timeout=240, poll=0.3)
    table = ex.trial_table(done, store, n_boot=50)
    assert len(table) == 7 and set(table["status"]) <= {"done", "pruned"}
    pruned = table[table["status"] == "pruned"]
    assert len(pruned) >= 1 and pruned["note"].str.startswith("pruned after epoch").all()
    run = next(t["run_dir"] for t in done["trials"] if t["job"] == pruned["job"].iloc[0])
    epoch = pruning.pruned_info(run)["epoch"]
    assert len(rundir.RunFolder(run).read_history()) == epoch < 3  # the partial curve is kept
    lrs = [t["settings"]["lr"] for t in done["trials"]]
    assert len(set(lrs)) == 7 and all(1e-4 <= v <= 1e-1 for v in lrs)
    told = ex.summary(record["id"], store, n_boot=50)  # what `runs --experiment` prints
    assert told["mode"] == "tpe" and told["pruner"] == "median" and told["counts"]["pruned"] == len(pruned)
    assert told["best_vs_base"] == [
        {"setting": "lr", "base": 3e-3, "best": table.loc[table["best"], "lr"].item()}
    ]
    assert (
        told["importance"]["values"] == {"lr": 1.0}
        and "unreliable below about 30" in told["importance"]["note"]
    )


@pytest.mark.slow
def test_a_server_restart_mid_sweep_and_the_sweep_completes(blobs, fake_train, monkeypatch):
    fake_train("scripted")
    monkeypatch.setenv("XRT_TEST_EPOCH_S", "0.4")
    store, cfg = jobs.JobStore(), base_config(blobs)
    cfg.train.epochs = 3
    record = ex.start(tpe_spec(4), cfg, store=store)
    victim = wait_for(lambda: _running_trial(record["id"], store, 1), timeout=120, poll=0.1)
    for pid in (victim.supervisor_pid, victim.pid):  # the server and its worker die
        os.kill(pid, signal.SIGKILL)
    time.sleep(0.5)
    assert jobs.mark_orphans_interrupted(store, executor=LocalExecutor()) == [
        victim.id
    ]  # the app starts again
    done = wait_for(lambda: _finished(record["id"], store, 4), timeout=240, poll=0.3)
    statuses = ex.trial_table(done, store, n_boot=50)["status"].tolist()
    assert statuses.count("interrupted") == 1 and statuses.count("done") == 3


def test_real_training_reports_each_epoch_and_a_pruned_trial_stops_itself(blobs, tmp_path):
    from core.runs.progress import Progress
    from core.train.tasks import run_task

    rivals = [_trial_folder(tmp_path / n, [1.01, 1.01], True) for n in ("a", "b")]  # no real run beats them
    me = tmp_path / "me"
    spec = ex.SweepSpec(axes=["epochs=2"], pruner="median", prune_epoch=1)
    record = {"id": "20990101-000000-000-11111111", "spec": to_dict(spec), "trials": rivals}
    rundir.write_json(rundir.experiment_file(record["id"]), record)
    cfg = base_config(blobs)
    cfg.train.epochs = 2
    params = {"config": to_dict(cfg), "experiment": record["id"], "metric": "balanced_accuracy"}
    with pytest.raises(pruning.Pruned):
        run_task(params, me, Progress(me))
    assert pruning.pruned_info(me)["epoch"] == 1 and len(rundir.RunFolder(me).read_history()) == 1
    assert not rundir.RunFolder(me).is_finished()


@pytest.mark.slow
def test_two_slots_run_two_trials_at_once_and_never_ask_past_the_budget(blobs, fake_train, monkeypatch):
    fake_train("scripted")
    monkeypatch.setenv("XRT_MAX_JOBS", "2")  # two job slots, as on a two-GPU server
    store, cfg = jobs.JobStore(), base_config(blobs)
    cfg.train.epochs = 2
    spec = ex.SweepSpec(axes=["lr=1e-4:1e-1:log"], mode="tpe", trials=5, seed=2)  # parallel 0: the slots
    record = ex.start(spec, cfg, store=store)
    assert (
        len(record["trials"]) == 2
    )  # both slots get a trial at once (the second asked with the first running)
    done = wait_for(lambda: _finished(record["id"], store, 5), timeout=240, poll=0.3)
    time.sleep(1.0)  # the last trials' end hooks have run: still no sixth trial
    assert len(ex.read(record["id"])["trials"]) == 5 and done["counts"] == {"done": 5}
    assert len({t["settings"]["lr"] for t in done["trials"]}) == 5
