"""AppTest: deleting a run (Training run page) and an experiment (Experiments page), asked first; hosted
users are offered it for their own runs only."""

from __future__ import annotations

from pathlib import Path

from streamlit.testing.v1 import AppTest

from core.runs import jobs, rundir
from core.train import experiments

ROOT = Path(__file__).resolve().parents[1]
TRAIN, EXPERIMENTS = str(ROOT / "pages/3_train.py"), str(ROOT / "pages/6_experiments.py")
OWNER = "ab" * 16


def app(page: str, pick: str, pick_key: str = "tr_pick") -> AppTest:
    """A session of one page watching `pick`."""
    at = AppTest.from_file(page, default_timeout=60)
    at.query_params["owner"] = OWNER
    at.session_state[pick_key] = pick
    return at.run()


def ended_run(owner: str = OWNER, **params) -> jobs.Job:
    """A run that ended (failed: no model files needed), with its folder."""
    store = jobs.JobStore()
    job = store.submit("train", {"config": {}, **params}, owner=owner)
    store.finish(job.id, "failed", error="boom", only_if_running=False)
    return job


def buttons(at: AppTest) -> list[str]:
    """The keys of the buttons on the page."""
    return [b.key for b in at.button]


def test_delete_run_asks_first_and_keep_keeps_it():
    job = ended_run()
    at = app(TRAIN, job.id)
    assert not at.exception, at.exception
    at.button(key=f"tr_delete_{job.id}").click().run()
    assert any("cannot be undone" in w.value for w in at.warning)
    assert jobs.JobStore().get(job.id) is not None  # asking deletes nothing
    at.button(key=f"tr_delete_{job.id}_keep").click().run()
    assert not at.warning and jobs.JobStore().get(job.id) is not None
    at.button(key=f"tr_delete_{job.id}").click().run()
    at.button(key=f"tr_delete_{job.id}_yes").click().run()
    assert not at.exception, at.exception
    assert jobs.JobStore().get(job.id) is None and not Path(job.run_dir).exists()
    assert f"tr_delete_{job.id}" not in buttons(at)


def test_an_active_run_and_a_sweep_trial_offer_no_delete():
    busy = jobs.JobStore().submit("train", {"config": {}}, owner=OWNER)
    at = app(TRAIN, busy.id)
    assert not at.exception and f"tr_delete_{busy.id}" not in buttons(at)
    trial = ended_run(experiment="E1")
    at = app(TRAIN, trial.id)
    assert f"tr_delete_{trial.id}" not in buttons(at)
    assert any("trial of experiment E1" in c.value for c in at.caption)


def test_hosted_another_owners_run_offers_no_delete(monkeypatch):
    from core.web import signin

    monkeypatch.setenv("XRT_HOSTED", "1")
    job = ended_run(owner=signin.owner_for("user:carol"))
    for who, offered in (("user:carol", True), ("user:dave", False)):
        at = AppTest.from_file(TRAIN, default_timeout=60)
        at.session_state["auth_identity"] = who
        at.session_state["tr_pick"] = job.id  # dave asks for carol's run: not his to delete
        at.run()
        assert not at.exception, at.exception
        assert (f"tr_delete_{job.id}" in buttons(at)) is offered, who
    assert jobs.JobStore().get(job.id) is not None


def experiment(owner: str = "") -> tuple[str, jobs.Job]:
    """An ended one-trial experiment record owned by `owner`."""
    exp_id = jobs.new_job_id()
    trial = ended_run(owner=owner, experiment=exp_id, trial=0)
    record = {
        "id": exp_id,
        "name": "lr sweep",
        "owner": owner,
        "created": 0.0,
        "deadline": None,
        "spec": {"axes": ["lr=1e-3"]},
        "base_config": {},
        "trials": [{"job": trial.id, "run_dir": trial.run_dir, "settings": {"lr": 1e-3}, "name": "t1"}],
        "stopped": {},
    }
    rundir.write_json(rundir.experiment_file(exp_id), record)
    return exp_id, trial


def test_delete_experiment_with_its_trial_runs():
    store = jobs.JobStore()
    exp_id, trial = experiment()
    at = app(EXPERIMENTS, exp_id, "ex_pick")
    assert not at.exception, at.exception
    at.button(key=f"ex_delete_{exp_id}").click().run()
    at.button(key=f"ex_delete_{exp_id}_yes").click().run()
    assert not at.exception, at.exception
    assert not experiments.exists(exp_id) and store.get(trial.id) is None and not Path(trial.run_dir).exists()


def test_hosted_another_owners_experiment_offers_no_delete(monkeypatch):
    from core.web import signin

    monkeypatch.setenv("XRT_HOSTED", "1")
    exp_id, _ = experiment(owner=signin.owner_for("user:carol"))
    for who, offered in (("user:carol", True), ("user:dave", False)):
        at = AppTest.from_file(EXPERIMENTS, default_timeout=60)
        at.session_state["auth_identity"] = who
        at.session_state["ex_pick"] = exp_id
        at.run()
        assert not at.exception, at.exception
        assert (f"ex_delete_{exp_id}" in buttons(at)) is offered, who
    assert experiments.exists(exp_id)
