"""AppTest tests of the Training setup and Training run pages (job submission mocked, fake run folders)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from core.base.config import RunConfig, from_dict, to_dict
from core.runs import jobs
from core.runs.jobs import JobStore

ROOT = Path(__file__).resolve().parents[1]
SETUP, TRAIN = str(ROOT / "pages/2_setup.py"), str(ROOT / "pages/3_train.py")


OWNER = "ef" * 16  # the browser session of these tests (local mode keeps it in the URL)


def app(page: str) -> AppTest:
    """A fresh session of one page, in the browser session that owns running_job()'s runs."""
    at = AppTest.from_file(page, default_timeout=60)
    at.query_params["owner"] = OWNER
    return at


def texts(at: AppTest) -> str:
    """Every piece of text the page shows (markdown, captions, alerts, progress labels), joined."""
    out: list[str] = []

    def walk(node) -> None:
        proto = getattr(node, "proto", None)
        for attr in ("body", "text", "value", "label"):
            v = getattr(proto, attr, None) if proto is not None else None
            if isinstance(v, str):
                out.append(v)
        for child in getattr(node, "children", {}).values():
            walk(child)

    walk(at._tree)
    return "\n".join(out)


def running_job(kind: str = "train", owner: str = OWNER) -> jobs.Job:
    """A job row marked running, looked after by this (live) test process."""
    store = JobStore()
    store.submit(kind, {"config": to_dict(RunConfig())}, owner=owner)
    job = store.claim(os.getpid(), 5)
    assert isinstance(job, jobs.Job) and job.status == "running"
    return job


def write_progress(job: jobs.Job) -> None:
    """progress.json mid-epoch and two epochs of history.csv, by hand."""
    rdir = Path(job.run_dir)
    (rdir / "progress.json").write_text(
        json.dumps(
            {
                "phase": "training",
                "epoch": 1,
                "n_epochs": 4,
                "batch": 5,
                "n_batches": 10,
                "train_loss": 0.5,
                "eta_s": 125.0,
                "elapsed_s": 30.0,
                "fold": None,
                "n_folds": 0,
                "last_epoch": {"epoch": 0, "valid_loss": 0.6},
            }
        )
    )
    (rdir / "history.csv").write_text(
        "epoch,phase,train_loss,valid_loss,accuracy,balanced_accuracy,roc_auc,time_s\n"
        "0,frozen,0.9,0.8,0.6,0.6,0.65,10\n1,unfrozen,0.7,0.6,0.7,0.7,0.75,20\n"
    )


# ---------------------------------------------------------------- setup page


def test_setup_renders_defaults_preview_and_split():
    at = app(SETUP).run()
    assert not at.exception, at.exception
    cfg = from_dict(RunConfig, at.session_state["run_config"]).validate()
    assert cfg.source.group_col == "patient_id" and cfg.data.split.method == "group"
    # from scratch on a CPU (no weights offline): the schedule planned for ~230 training images (core.base.plan)
    assert (cfg.data.img_size, cfg.data.batch_size, cfg.train.epochs) == (128, 32, 10)
    assert "SYNTHETIC sample" in at.info[0].value
    assert len(at.get("image")) == 8
    summary = at.dataframe[0].value
    assert set(summary["split"]) == {"train", "valid"} and summary["items"].sum() >= 200
    assert not at.error


def test_setup_widgets_produce_run_config():
    at = app(SETUP).run()
    at.selectbox(key="su_arch").select("resnet34")
    at.number_input(key="su_img_size").set_value(96)
    at.number_input(key="su_epochs").set_value(2)
    at.text_input(key="su_lr").input("1e-3")
    at.toggle(key="su_aug_enabled").set_value(False)
    at.selectbox(key="su_imbalance").select("weighted_loss")
    at.run()
    at.toggle(key="su_kfold").set_value(True).run()
    at.number_input(key="su_k").set_value(3).run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    cfg = from_dict(RunConfig, at.session_state["run_config"]).validate()
    assert (cfg.train.arch, cfg.data.img_size, cfg.train.epochs, cfg.train.lr) == ("resnet34", 96, 2, 1e-3)
    assert not cfg.data.aug.enabled and cfg.train.imbalance == "weighted_loss" and cfg.data.split.k_folds == 3
    assert len(at.dataframe) == 2 and len(at.dataframe[1].value) == 3  # split summary + one row per fold


def test_setup_invalid_values_show_error():
    at = app(SETUP).run()
    good = at.session_state["run_config"]
    at.slider(key="su_valid_pct").set_value(60)
    at.slider(key="su_test_pct").set_value(40).run()
    assert not at.exception
    assert any("training data" in e.value for e in at.error)
    assert at.session_state["run_config"] == good  # the last valid config stays carried, flagged as stale
    assert "valid_pct" in at.session_state["run_config_error"]
    at.slider(key="su_test_pct").set_value(10)
    at.text_input(key="su_lr").input("fast").run()
    assert any("learning rate must be a number" in e.value for e in at.error)


def test_lr_finder_button_submits_job_and_applies_suggestion(submitted):
    at = app(SETUP).run()
    at.button(key="su_lr_find").click().run()
    assert not at.exception
    assert [c["kind"] for c in submitted] == ["lr_find"]
    assert submitted[0]["params"]["num_it"] == 30  # the CPU default: about a minute (was 100 before issue 14)
    assert submitted[0]["owner"] == at.session_state["owner_id"]
    from_dict(RunConfig, submitted[0]["params"]["config"]).validate()
    job_id = at.session_state["lr_job_id"]
    assert job_id == submitted[0]["id"]
    assert "waiting in the queue" in texts(at)
    store = JobStore()
    job = store.claim(os.getpid(), 5)
    lrs = [1e-5 * 1.2**i for i in range(40)]
    Path(job.run_dir, "lr_find.json").write_text(
        json.dumps(
            {
                "lrs": lrs,
                "losses": [1.0 - 0.01 * i for i in range(40)],
                "suggestions": {"minimum": 1e-2, "steep": 3e-4, "valley": 1.23e-3, "slide": 2e-3},
            }
        )
    )
    store.finish(job.id, "done")
    at.run()
    assert not at.exception and len(at.get("plotly_chart")) == 1
    at.button(key="su_lr_use_valley").click().run()
    assert at.text_input(key="su_lr").value == "0.00123"
    assert at.session_state["run_config"]["train"]["lr"] == pytest.approx(1.23e-3)


# ---------------------------------------------------------------- run page


def test_start_button_submits_train_job(submitted):
    at = app(TRAIN).run()
    assert not at.exception
    at.button(key="tr_start").click().run()
    assert not at.exception
    assert [c["kind"] for c in submitted] == ["train"]
    call = submitted[0]
    from_dict(RunConfig, call["params"]["config"]).validate()
    assert call["owner"] == at.session_state["owner_id"]
    assert at.session_state["train_job_id"] == call["id"] and at.session_state["tr_pick"] == call["id"]
    assert list(at.dataframe[0].value["id"]) == [call["id"]]
    assert "Queued" in texts(at)


def test_setup_config_is_carried_to_run_page_and_back(submitted):
    at = app(str(ROOT / "streamlit_app.py"))
    at.switch_page("pages/2_setup.py").run()
    at.number_input(key="su_epochs").set_value(7).run()
    at.switch_page("pages/3_train.py").run()
    assert not at.exception
    at.button(key="tr_start").click().run()
    assert submitted and submitted[0]["params"]["config"]["train"]["epochs"] == 7
    at.switch_page("pages/2_setup.py").run()  # widget state was dropped on the other page: re-seeded
    assert at.number_input(key="su_epochs").value == 7


def test_run_page_reattaches_and_shows_live_progress():
    job = running_job()
    write_progress(job)
    at = app(TRAIN).run()
    assert not at.exception, at.exception
    assert (
        at.session_state["tr_pick"] == job.id
    )  # a reload (same owner in the URL) re-attaches to its active run
    shown = texts(at)
    assert "Epoch 2 / 4" in shown and "Batch 5 / 10" in shown and "2 min 5 s" in shown
    assert len(at.get("plotly_chart")) == 1  # loss and metric curves from history.csv


def test_cancel_button_cancels_running_job():
    job = running_job()
    at = app(TRAIN).run()
    at.button(key="tr_cancel").click().run()
    assert not at.exception
    assert JobStore().get(job.id).cancel_requested
    assert Path(job.run_dir, jobs.STOP_FILE).exists()


def test_failed_job_shows_its_error():
    job = running_job()
    JobStore().finish(job.id, "failed", error="ValueError: boom in fold 2")
    at = app(TRAIN).run()
    assert not at.exception
    assert any("boom in fold 2" in e.value for e in at.error)


def crashed_job(status: str, error: str, checkpoint: str) -> jobs.Job:
    """A train job that ended badly, its run folder holding a config, items and checkpoints/<checkpoint>."""
    job = running_job()
    JobStore().finish(job.id, status, error=error)
    rdir = Path(job.run_dir)
    for name in ("config.json", "items.csv"):
        (rdir / name).write_text("{}")
    (rdir / "checkpoints").mkdir()
    (rdir / "checkpoints" / checkpoint).write_bytes(b"tensors")
    return job


def test_crashed_run_with_a_checkpoint_offers_finish_from_checkpoint(monkeypatch):
    from core.train import finish

    job = crashed_job("failed", "killed by signal 9 (SIGKILL)", "best.safetensors")
    calls = []

    def fake_finish(run_dir):
        calls.append(run_dir)
        (Path(run_dir) / "metrics.json").write_text(
            json.dumps(
                {
                    "type": "single",
                    "classes": ["a", "b"],
                    "best_epoch": 2,
                    "metrics": {"valid": {"accuracy": 0.75}},
                    "finished_from_checkpoint": {
                        "epoch": 2,
                        "note": "model from epoch 3 of 10 of a run that failed",
                    },
                }
            )
        )

    monkeypatch.setattr(finish, "finish_from_checkpoint", fake_finish)
    at = app(TRAIN).run()
    assert not at.exception and "best checkpoint survived" in texts(at)
    at.button(key="tr_finish").click().run()
    assert not at.exception and calls == [job.run_dir]
    assert any("epoch 3 of 10 of a run that failed" in i.value for i in at.info)
    assert "Final metrics" in texts(at) and not [b for b in at.button if b.key == "tr_finish"]


def test_crashed_run_with_resume_state_offers_resume_and_queues_it(monkeypatch):
    from core.train import resume

    job = crashed_job("interrupted", "the worker stopped", "resume.safetensors")
    rdir = Path(job.run_dir)
    calls = []
    monkeypatch.setattr(resume, "queue_resume", lambda run_dir, store, owner: calls.append((run_dir, owner)))
    at = app(TRAIN).run()
    assert not at.exception and "continue from there" in texts(at)
    at.button(key="tr_resume").click().run()
    assert not at.exception and calls == [(job.run_dir, OWNER)]
    (rdir / "checkpoints" / "resume.safetensors").unlink()  # no state: no offer
    at = app(TRAIN).run()
    assert not at.exception and not [b for b in at.button if b.key == "tr_resume"]


def test_hosted_mode_hides_error_details_and_other_users_runs(monkeypatch):
    from core.web import signin

    monkeypatch.setenv("XRT_HOSTED", "1")
    owner = signin.owner_for("user:alice")
    mine, theirs = running_job(owner=owner), running_job(owner=signin.owner_for("user:bob"))
    for job in (mine, theirs):
        JobStore().finish(job.id, "failed", error="RuntimeError: secret /srv/data/path")
    at = app(TRAIN)
    at.session_state["auth_identity"] = "user:alice"  # hosted ownership follows who signed in
    at.run()
    assert not at.exception
    assert list(at.dataframe[0].value["id"]) == [mine.id]
    assert "secret" not in texts(at)
    assert any(mine.id in e.value for e in at.error)


def test_done_kfold_run_shows_mean_sd_table():
    job = running_job()
    per_fold = [{"fold": i, "best_epoch": 1, "accuracy": a, "roc_auc": a} for i, a in enumerate((0.8, 0.9))]
    Path(job.run_dir, "metrics.json").write_text(
        json.dumps(
            {
                "type": "kfold",
                "k": 2,
                "classes": ["a", "b"],
                "metrics": {
                    "per_fold": per_fold,
                    "pooled_oof": {"accuracy": 0.85, "roc_auc": 0.85},
                    "mean_sd": {
                        "accuracy": {"mean": 0.85, "sd": 0.0707},
                        "roc_auc": {"mean": 0.85, "sd": 0.0707},
                    },
                },
            }
        )
    )
    JobStore().finish(job.id, "done")
    at = app(TRAIN).run()
    assert not at.exception
    table = at.dataframe[1].value
    assert list(table["mean ± sd"]) == ["0.850 ± 0.071", "0.850 ± 0.071"]
    assert "Evaluation" in texts(at)


def test_settings_file_round_trip_and_refusals():
    from core.base.config import ConfigError
    from ui.setup_form import load_config_json

    cfg = RunConfig(name="x")
    cfg.train.epochs = 9
    assert load_config_json(json.dumps(to_dict(cfg)).encode()).train.epochs == 9
    for bad in (b"not json", b'{"train": {"epochs": 0}}', b'{"bogus": 1}', b"[1, 2]", b" " * 2_000_000):
        with pytest.raises(ConfigError):
            load_config_json(bad)


def test_settings_upload_replaces_widgets():
    from ui.setup_form import apply_settings

    cfg = RunConfig()
    cfg.train.arch, cfg.data.img_size, cfg.data.split.method = "densenet121", 64, "random"
    at = app(SETUP).run()
    state: dict = {}
    assert apply_settings(b"{", state) and not state  # refused: nothing changes
    assert apply_settings(json.dumps(to_dict(cfg)).encode(), state) == ""
    for key, value in state.items():  # what the uploader's callback writes into the session
        at.session_state[key] = value
    at.run()
    assert not at.exception
    assert (
        at.selectbox(key="su_arch").value == "densenet121" and at.number_input(key="su_img_size").value == 64
    )
    assert at.session_state["run_config"]["data"]["split"]["method"] == "random"


def test_done_run_that_learned_nothing_says_so_plainly():
    job = running_job()
    rdir = Path(job.run_dir)
    (rdir / "metrics.json").write_text(
        json.dumps(
            {"type": "single", "classes": ["a", "b"], "best_epoch": 0, "metrics": {"valid": {"roc_auc": 0.5}}}
        )
    )
    (rdir / "valid_predictions.csv").write_text(
        "path,label,pred,prob_pred,prob_a,prob_b\n"
        + "".join(f"{i}.png,{'ab'[i % 2]},a,0.9,0.9,0.1\n" for i in range(20))
    )
    JobStore().finish(job.id, "done")
    at = app(TRAIN).run()
    assert not at.exception, at.exception
    warned = [w.value for w in at.warning if "calls 100% of the 20 images 'a'" in w.value]
    assert warned and "about chance" in warned[0] and "more epochs" in warned[0]


def test_fresh_session_never_watches_another_sessions_run():
    theirs = running_job(owner="12" * 16)  # another browser session's (or user's) active run
    at = AppTest.from_file(TRAIN, default_timeout=60).run()  # a new tab: a new owner
    assert not at.exception, at.exception
    assert list(at.dataframe[0].value["id"]) == [theirs.id]  # listed (local mode shows every run) ...
    assert at.selectbox(key="tr_pick").value is None  # ... but not watched unless chosen
    assert "choose one above to watch it" in texts(at) and not [b for b in at.button if b.key == "tr_cancel"]
    at.selectbox(key="tr_pick").select(theirs.id).run()
    assert not at.exception and f"Run {theirs.id} (train)" in texts(at)
    mine = running_job()  # this session's own run (its owner is in the URL) is picked over theirs
    at = app(TRAIN).run()
    assert at.selectbox(key="tr_pick").value == mine.id
