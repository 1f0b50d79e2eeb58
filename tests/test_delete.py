"""Deleting runs and experiments: refusals while active, fold jobs with their parent, containment, the CLI."""

from __future__ import annotations

import json
import os

import pytest

from core.base import paths
from core.cli import main
from core.runs import jobs, removal, rundir
from core.train import experiments


def finished(store: jobs.JobStore, status: str = "done", **params) -> jobs.Job:
    """A job row that has ended, its run folder holding a file."""
    job = store.submit("train", {"config": {}, **params})
    (rundir.RunFolder(job.run_dir).path / "history.csv").write_text("epoch\n0\n")
    store.finish(job.id, status, only_if_running=False)
    return store.get(job.id)


def test_a_finished_run_goes_with_its_folder_and_job_row():
    store = jobs.JobStore()
    job, other = finished(store), finished(store)
    plan = removal.plan(job.id, store)
    assert plan.job_ids == [job.id] and plan.folders == [rundir.RunFolder(job.run_dir).path.resolve()]
    removal.delete(job.id, store)
    assert store.get(job.id) is None and not os.path.exists(job.run_dir)
    assert store.get(other.id) is not None and os.path.isdir(other.run_dir)  # nothing else touched


@pytest.mark.parametrize("state", ["queued", "running", "waiting"])
def test_an_active_run_is_refused_with_a_reason(state):
    store = jobs.JobStore()
    job = store.submit("train", {"config": {}})
    if state != "queued":
        with store._write() as con:
            con.execute(
                "UPDATE jobs SET status='running', waiting=? WHERE id=?", (state == "waiting", job.id)
            )
    with pytest.raises(removal.DeleteRefused, match="cancel it"):
        removal.delete(job.id, store)
    assert store.get(job.id) is not None and os.path.isdir(job.run_dir)


def test_fold_jobs_go_with_their_parent_and_not_alone():
    store = jobs.JobStore()
    parent = finished(store)
    kids = [
        store.submit(
            "fold", {}, run_dir=rundir.RunFolder(parent.run_dir).path / f"fold_job_{i}", parent_id=parent.id
        )
        for i in range(2)
    ]
    for k in kids:
        store.finish(k.id, "done", only_if_running=False)
    with pytest.raises(removal.DeleteRefused, match="fold of run"):
        removal.delete(kids[0].id, store)
    assert sorted(removal.plan(parent.id, store).job_ids) == sorted([parent.id, *(k.id for k in kids)])
    removal.delete(parent.id, store)
    assert all(store.get(j) is None for j in (parent.id, *(k.id for k in kids)))


def test_a_running_fold_child_keeps_its_parent():
    store = jobs.JobStore()
    parent = finished(store, status="failed")
    kid = store.submit("fold", {}, run_dir=rundir.RunFolder(parent.run_dir).path / "f0", parent_id=parent.id)
    with pytest.raises(removal.DeleteRefused):
        removal.delete(parent.id, store)
    assert store.get(kid.id) is not None


def test_never_outside_the_runs_folder_nor_through_a_link(tmp_path):
    store = jobs.JobStore()
    outside = tmp_path / "precious"
    outside.mkdir()
    (outside / "keep.txt").write_text("x")
    job = store.submit("train", {"config": {}}, run_dir=outside)  # a run folder chosen elsewhere
    store.finish(job.id, "done", only_if_running=False)
    with pytest.raises(removal.DeleteRefused, match="not inside the runs folder"):
        removal.delete(job.id, store)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "keep.txt").write_text("x")
    link = paths.runs_dir() / "linked-run"  # a run folder that is a link to a folder elsewhere
    link.symlink_to(elsewhere, target_is_directory=True)
    with pytest.raises(removal.DeleteRefused, match="link"):
        removal.delete(str(link), store)
    with pytest.raises(removal.DeleteRefused):
        removal.contained(paths.runs_dir(), paths.runs_dir())  # the runs folder itself
    assert (outside / "keep.txt").is_file() and (elsewhere / "keep.txt").is_file() and link.is_symlink()
    assert store.get(job.id) is not None


def _experiment(store: jobs.JobStore, statuses: list[str]) -> tuple[str, list[jobs.Job]]:
    """An experiment record over trial jobs that ended (or not) as given."""
    exp_id = jobs.new_job_id()
    trials = []
    for i, status in enumerate(statuses):
        job = store.submit("train", {"config": {}, "experiment": exp_id, "trial": i})
        if status != "queued":
            store.finish(job.id, status, only_if_running=False)
        trials.append(job)
    record = {
        "id": exp_id,
        "name": "test sweep",
        "trials": [{"job": j.id, "run_dir": j.run_dir} for j in trials],
    }
    rundir.write_json(rundir.experiment_file(exp_id), record)
    return exp_id, trials


def test_an_experiment_goes_with_its_trial_runs_and_a_trial_not_alone():
    store = jobs.JobStore()
    exp_id, trials = _experiment(store, ["done", "cancelled"])
    with pytest.raises(removal.DeleteRefused, match="trial of experiment"):
        removal.delete(trials[0].id, store)
    experiments.delete(exp_id, store)
    assert not experiments.exists(exp_id) and not rundir.experiment_file(exp_id).parent.exists()
    assert all(store.get(t.id) is None and not os.path.exists(t.run_dir) for t in trials)


def test_an_experiment_with_an_active_trial_is_refused():
    store = jobs.JobStore()
    exp_id, trials = _experiment(store, ["done", "queued"])
    with pytest.raises(removal.DeleteRefused, match="queued or running trial"):
        experiments.delete(exp_id, store)
    assert experiments.exists(exp_id) and all(store.get(t.id) for t in trials)


def test_cli_delete_says_what_without_yes_and_deletes_with_it(capsys):
    store = jobs.JobStore()
    job = finished(store)
    assert main(["delete", job.id]) == 1
    captured = capsys.readouterr()
    assert json.loads(captured.out)["would_delete"]["jobs"] == [job.id] and "--yes" in captured.err
    assert store.get(job.id) is not None
    assert main(["delete", job.id, "--yes"]) == 0
    assert json.loads(capsys.readouterr().out)["deleted"]["jobs"] == [job.id] and store.get(job.id) is None
    assert main(["delete", "no-such-run", "--yes"]) == 1 and "no run" in capsys.readouterr().err


def test_cli_delete_an_experiment_and_refuse_an_active_run(capsys):
    store = jobs.JobStore()
    exp_id, trials = _experiment(store, ["done"])
    assert main(["delete", exp_id, "--yes"]) == 0
    assert json.loads(capsys.readouterr().out)["deleted"]["experiment"] == exp_id
    busy = store.submit("train", {"config": {}})
    assert main(["delete", busy.id, "--yes"]) == 1 and "queued" in capsys.readouterr().err


def test_an_experiment_whose_trial_job_row_is_gone_still_takes_its_folder():
    store = jobs.JobStore()
    exp_id, trials = _experiment(store, ["done", "done"])
    store.delete([trials[1].id])  # e.g. a job store reset: the folder stays behind
    plan = experiments.deletion(exp_id, store)
    assert [r.job_ids for r in plan["runs"]] == [[trials[0].id], []]
    experiments.delete(exp_id, store)
    assert not any(os.path.exists(t.run_dir) for t in trials) and not experiments.exists(exp_id)
