"""AppTest of the Experiments page: start a sweep (job submission mocked), compare finished trials, reuse one."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from streamlit.testing.v1 import AppTest

from core.base.config import RunConfig, from_dict
from core.runs import jobs
from core.runs.jobs import JobStore
from core.runs.progress import Progress
from core.train import experiments
from core.web import settings_store

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
import sweeptasks  # noqa: E402

EXPERIMENTS = "pages/6_experiments.py"


def app() -> AppTest:
    """The whole app (router + pages), opened on the Experiments page."""
    at = AppTest.from_file(str(ROOT / "streamlit_app.py"), default_timeout=120).run()
    return at.switch_page(EXPERIMENTS).run()


def finish_all(store: JobStore) -> None:
    """Run every queued trial's stand-in training in this process and mark it done."""
    while isinstance(job := store.claim(os.getpid(), 5), jobs.Job):
        sweeptasks.fake_train(job.params, Path(job.run_dir), Progress(job.run_dir))
        store.finish(job.id, "done")


def test_start_a_sweep_from_the_working_settings(submitted):
    at = app()
    assert not at.exception, at.exception
    assert at.title[0].value == "Experiments"
    assert at.multiselect(key="ex_settings").value == ["lr"]
    at.text_input(key="ex_val_lr").set_value("1e-3,3e-3,1e-2").run()
    at.text_input(key="ex_name").set_value("lr try").run()
    assert any("3 trial(s)" in c.value for c in at.caption)
    at.button(key="ex_start").click().run()
    assert not at.exception, at.exception
    assert [c["kind"] for c in submitted] == ["train"] * 3
    lrs = [from_dict(RunConfig, c["params"]["config"]).train.lr for c in submitted]
    assert lrs == [1e-3, 3e-3, 1e-2]
    exp_id = at.session_state["ex_pick"]
    record = experiments.read(exp_id)
    assert [t["job"] for t in record["trials"]] == [c["id"] for c in submitted]
    assert "Status: queued" in " ".join(m.value for m in at.markdown)
    frame = at.dataframe[1].value  # [0]: experiments, [1]: trials
    assert list(frame["trial"]) == [1, 2, 3] and "lr try #1: lr=0.001" in list(frame["name"])
    at.button(key="ex_cancel_all").click().run()
    assert experiments.refresh(exp_id)["status"] == "cancelled"


def test_bad_values_disable_start(submitted):
    at = app()
    at.text_input(key="ex_val_lr").set_value("1e-2:1e-4").run()
    assert at.button(key="ex_start").disabled and at.warning
    assert not submitted


def test_finished_sweep_is_compared_and_its_best_settings_reused(submitted):
    at = app()
    at.text_input(key="ex_val_lr").set_value("1e-3,1e-2").run()
    at.button(key="ex_start").click().run()
    finish_all(JobStore())
    at.run()
    assert not at.exception, at.exception
    frame = at.dataframe[1].value
    assert list(frame["best"]) == ["", "★"] and frame.iloc[1, 5].count("(") == 1  # value (lo-hi)
    assert "Status: done" in " ".join(m.value for m in at.markdown)
    charts = at.get("plotly_chart")
    assert len(charts) == 2  # metric vs lr, curves of both trials
    assert at.selectbox(key="ex_use_pick").value == submitted[1]["id"]  # the best trial is offered first
    at.button(key="ex_use").click().run()
    assert not at.exception, at.exception
    assert at.title[0].value == "Training setup"
    assert at.text_input(key="su_lr").value == "0.01"
    kept = settings_store.load("local").run_config
    assert kept is not None and kept.train.lr == 1e-2


def test_what_mattered_shows_importance_a_contour_and_the_best_settings_vs_the_base(submitted):
    at = app()
    at.multiselect(key="ex_settings").set_value(["lr", "epochs"]).run()
    at.text_input(key="ex_val_lr").set_value("1e-3,1e-2").run()
    at.text_input(key="ex_val_epochs").set_value("1,2").run()
    at.button(key="ex_start").click().run()
    finish_all(JobStore())  # fake_train: the metric grows with lr, epochs do not matter
    at.run()
    assert not at.exception, at.exception
    titles = [c.proto.spec for c in at.get("plotly_chart")]
    assert any("What mattered" in t and "unreliable below about 30" in t for t in titles)
    assert any("over lr and epochs" in t or "over epochs and lr" in t for t in titles)
    best_vs_base = at.dataframe[2].value
    assert list(best_vs_base["setting"]) == ["lr", "epochs"] and best_vs_base["best"].iloc[0] == "0.01"


def test_cancel_all_after_a_finished_trial_reads_cancelled_and_reuse_says_what_changed(submitted):
    at = app()
    at.text_input(key="ex_val_lr").set_value("1e-3,3e-3,1e-2").run()
    at.button(key="ex_start").click().run()
    store = JobStore()
    first = store.claim(os.getpid(), 5)  # one trial finishes, then the user cancels the rest
    sweeptasks.fake_train(first.params, Path(first.run_dir), Progress(first.run_dir))
    store.finish(first.id, "done")
    at.run()
    offered = at.selectbox(key="ex_cancel_pick").options
    assert len(offered) == 2 and not any("#1" in n for n in offered)  # not the finished trial
    at.button(key="ex_cancel_all").click().run()
    assert not at.exception, at.exception
    record = experiments.refresh(at.session_state["ex_pick"])
    assert record["status"] == "cancelled" and record["counts"] == {"done": 1, "cancelled": 2}
    assert "Status: cancelled** (1 done, 2 cancelled)" in " ".join(m.value for m in at.markdown)
    widths = {k: v.get("width") for k, v in json.loads(at.dataframe[1].proto.columns).items()}
    assert (
        widths["name"] == widths["note"] == widths["progress"] == "medium"
    )  # bounded: the table fits the page
    at.button(key="ex_use").click().run()
    assert not at.exception, at.exception
    said = [i.value for i in at.info if i.value.startswith("Settings applied")]
    assert said and "Learning rate" in said[0] and "→ 0.001" in said[0], said


def test_a_train_fraction_sweep_forecasts_more_data(submitted):
    at = app()
    at.multiselect(key="ex_settings").set_value(["train_fraction"]).run()
    at.text_input(key="ex_val_train_fraction").set_value("0.125,0.25,0.5,1").run()
    at.button(key="ex_start").click().run()
    finish_all(JobStore())  # fake_train: skill grows with the fraction
    at.run()
    assert not at.exception, at.exception
    assert any("Learning curve and forecast" in c.proto.spec for c in at.get("plotly_chart"))
    text = " ".join(c.value for c in at.caption)
    assert "2x the data" in text and "4x the data" in text and "Extrapolation" in text
    exp_id = experiments.list_ids()[0]
    told = experiments.summary(exp_id, JobStore(), n_boot=50)["learning_curve"]  # what the CLI prints
    assert told["fractions"] == [0.125, 0.25, 0.5, 1.0] and [e["multiple"] for e in told["forecast"]] == [
        1,
        2,
        4,
    ]
