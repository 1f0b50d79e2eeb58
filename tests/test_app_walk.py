"""AppTest tests of the browser-app walk's findings (issue 28): imbalance hints, per-class table, pickers, wording."""

from __future__ import annotations

import json
import re
import sqlite3
from pathlib import Path

import numpy as np
import pandas as pd
from streamlit.testing.v1 import AppTest

from core.base.config import RunConfig, SourceConfig, to_dict
from core.data import balance
from core.evaluation import evaluate
from core.runs import jobs
from tests.synth import smooth_dataset

ROOT = Path(__file__).resolve().parents[1]
DATASET, SETUP, TRAIN, EVAL = (
    str(ROOT / f"pages/{p}.py") for p in ("1_dataset", "2_setup", "3_train", "4_evaluate")
)
OWNER = "ef" * 16


def app(page: str) -> AppTest:
    """A fresh session of one page with a fixed owner id."""
    at = AppTest.from_file(page, default_timeout=60)
    at.query_params["owner"] = OWNER
    return at


def imbalanced_csv(root: Path, small: int = 6) -> Path:
    """A labels CSV with 40 images of 'b' and `small` of 'a'."""
    csv = smooth_dataset(root, n=40, size=32)
    table = pd.read_csv(csv)
    keep = (table["label"] == "b") | (table.groupby("label").cumcount() < small)
    table[keep].to_csv(csv, index=False)
    return csv


def register(run: Path, config: dict | None = None) -> str:
    """Record a finished run folder in the job store so the pages list it."""
    store = jobs.JobStore()
    job = store.submit("train", {"config": config or to_dict(RunConfig())}, run_dir=run, owner=OWNER)
    store.finish(job.id, "done", result={}, only_if_running=False)
    return job.id


# ---------------------------------------------------------------- item 9: imbalance


def test_imbalance_rule_and_missed_class_sentences():
    assert balance.imbalance({"a": 10, "b": 29}) is None
    assert balance.imbalance({"a": 51, "b": 400})[:2] == ("b", "a")
    assert "7.8 : 1" in balance.imbalance_note({"a": 51, "b": 400})
    assert balance.weighting_hint({"a": 51, "b": 400}, "weighted_loss") is None
    assert "Weighted loss" in balance.weighting_hint({"a": 51, "b": 400}, "none")
    y = np.array([0] * 10 + [1] * 10 + [2] * 5)
    probs = np.eye(3)[np.r_[y[:20], [0, 1, 0, 1, 0]]] * 0.8 + 0.2 / 3  # 'c' is never predicted
    said = evaluate.model_warnings(y, probs, ["a", "b", "c"])
    assert (
        any("none of the 5 'c' images (recall 0 for 'c')" in w for w in said) and said[-1] == evaluate.ADVICE
    )
    assert evaluate.model_warnings(y, np.eye(3)[y] * 0.8 + 0.2 / 3, ["a", "b", "c"]) == []


def test_explorer_counts_on_the_bars_and_an_imbalance_note(tmp_path):
    csv = imbalanced_csv(tmp_path / "data")
    at = app(DATASET).run()
    at.selectbox(key="src_choice").set_value("csv").run()
    at.text_input(key="src_csv").input(str(csv)).run()
    assert not at.exception, at.exception
    counts = next(
        json.loads(c.proto.spec) for c in at.get("plotly_chart") if "Images per class" in c.proto.spec
    )
    assert [str(t) for t in counts["data"][0]["text"]] == ["6", "40"]
    assert any("classes are imbalanced" in i.value and "6.7 : 1" in i.value for i in at.info)


def test_setup_hints_class_weighting_for_imbalanced_training_data(tmp_path):
    csv = imbalanced_csv(tmp_path / "data")
    at = app(SETUP)
    at.session_state["source_config"] = SourceConfig(kind="csv", csv_path=str(csv), group_col="patient_id")
    at.run()
    assert not at.exception, at.exception
    assert any("Class imbalance is None" in i.value for i in at.info)
    at.selectbox(key="su_imbalance").set_value("weighted_loss").run()
    assert not any("Class imbalance is None" in i.value for i in at.info)


def missed_class_run(root: Path) -> Path:
    """A finished 3-class run whose validation predictions never say 'c'."""
    root.mkdir(parents=True)
    y = np.arange(60) % 3
    pred = np.where(y == 2, np.arange(60) % 2, y)
    probs = np.eye(3)[pred] * 0.7 + 0.1
    evaluate.predictions_frame([f"/nowhere/{i}.png" for i in range(60)], y, probs, ["a", "b", "c"]).to_csv(
        root / "valid_predictions.csv", index=False
    )
    (root / "metrics.json").write_text(
        json.dumps({"type": "single", "classes": ["a", "b", "c"], "metrics": {}})
    )
    return root


def test_evaluation_warns_of_a_class_with_recall_0_and_shows_the_per_class_table(tmp_path):
    register(missed_class_run(tmp_path / "run"))
    at = app(EVAL).run()
    assert not at.exception, at.exception
    assert any("recall 0 for 'c'" in w.value for w in at.warning)
    table = next(d.value for d in at.dataframe if "support" in d.value).set_index("class")
    assert table.loc["c", "precision"] == "never predicted" and table.loc["c", "predicted"] == 0
    assert table.loc["a", "precision"] == "0.667" and table.loc["c", "recall"] == "0.000"
    assert not at.expander or all("Per-class" not in e.label for e in at.expander)


# ---------------------------------------------------------------- item 4: sidebar job counts


def test_idle_sidebar_job_counts_are_redrawn_so_a_run_started_later_shows(monkeypatch):
    from streamlit.testing.v1 import local_script_runner

    sent: list = []
    parse = local_script_runner.parse_tree_from_messages
    monkeypatch.setattr(
        local_script_runner, "parse_tree_from_messages", lambda msgs: parse(sent.extend(msgs) or msgs)
    )
    at = app(str(ROOT / "streamlit_app.py")).run()  # no job at all: an idle session
    assert not at.exception, at.exception
    drawn = [
        m.delta
        for m in sent
        if m.HasField("delta")
        and m.delta.HasField("new_element")
        and m.delta.new_element.markdown.body.startswith("Jobs: running 0 / queued 0")
    ]
    assert drawn and all(d.fragment_id for d in drawn)  # a polled fragment, not drawn once per page run


# ---------------------------------------------------------------- item 5: the first seconds of a run


def running(kind: str, progress: dict):
    """A job row marked running by this (live) process, started 7 s ago, with a progress.json."""
    import os

    store = jobs.JobStore()
    store.submit(kind, {"config": to_dict(RunConfig())})
    job = store.claim(os.getpid(), 5)
    with sqlite3.connect(store.db_path) as db:  # the worker started it a few seconds ago
        db.execute("UPDATE jobs SET started = started - 7 WHERE id = ?", (job.id,))
    Path(job.run_dir, "progress.json").write_text(json.dumps(progress))
    return job


def test_the_first_seconds_of_a_run_and_of_the_lr_finder_say_what_happens():
    scanning = {"phase": "scanning", "message": "reading the dataset"}
    job = running("train", scanning)
    at = AppTest.from_file(TRAIN, default_timeout=60)
    at.session_state["tr_pick"] = job.id
    at.run()
    assert not at.exception, at.exception
    status = next(m.value for m in at.markdown if m.value.startswith("**Status:** running"))
    assert status.endswith("Reading the dataset") and status.lower().count("reading the dataset") == 1
    metrics = {m.label: m.value for m in at.metric}
    assert re.fullmatch(r"(\d+ min )?\d+ s", metrics["Elapsed"]) and metrics["Elapsed"] not in {"0 s", "1 s"}
    assert metrics["Time left"] == "estimating"
    lr = running("lr_find", scanning)
    setup = AppTest.from_file(SETUP, default_timeout=60)
    setup.session_state["lr_job_id"] = lr.id
    setup.run()
    assert not setup.exception, setup.exception
    bars = [p.proto.text for p in setup.get("progress") if "LR finder" in p.proto.text]
    assert bars and bars[0].startswith("LR finder: Reading the dataset · elapsed "), bars
    assert not any("step 0" in b or "lr_find" in b or "scanning" in b or "unknown" in b for b in bars), bars


# ---------------------------------------------------------------- item 7: an LR-finder result of another dataset


def test_an_lr_finder_result_is_offered_only_for_the_dataset_it_ran_on(tmp_path):
    first, second = (imbalanced_csv(tmp_path / name, small=40) for name in ("first", "second"))
    ran_on = SourceConfig(kind="csv", csv_path=str(first), group_col="patient_id")
    store = jobs.JobStore()
    job = store.submit("lr_find", {"config": to_dict(RunConfig(source=ran_on)), "num_it": 30}, owner=OWNER)
    lrs = np.logspace(-6, 0, 30)
    Path(job.run_dir).mkdir(parents=True, exist_ok=True)
    Path(job.run_dir, "lr_find.json").write_text(
        json.dumps(
            {
                "lrs": lrs.tolist(),
                "losses": (1 + (np.log10(lrs) + 3) ** 2).tolist(),
                "suggestions": {"valley": 1e-3},
            }
        )
    )
    store.finish(job.id, "done", result={}, only_if_running=False)

    def setup_on(src: SourceConfig) -> AppTest:
        at = app(SETUP)
        at.session_state["source_config"] = src
        at.session_state["lr_job_id"] = job.id
        return at.run()

    same = setup_on(ran_on)
    assert not same.exception, same.exception
    assert [b for b in same.button if b.key == "su_lr_use_valley"]
    other = setup_on(SourceConfig(kind="csv", csv_path=str(second), group_col="patient_id"))
    assert not other.exception, other.exception
    assert not [b for b in other.button if (b.key or "").startswith("su_lr_use_")]
    assert any("was on another dataset" in c.value for c in other.caption)


# ---------------------------------------------------------------- item 10: pickers, run name, dataset


def test_pickers_name_the_run_and_its_dataset_and_a_new_source_drops_the_run_name(tmp_path):
    from ui import common
    from ui import working_settings as ws

    first, second = (imbalanced_csv(tmp_path / name, small=40) for name in ("chest", "knee"))
    cfg = RunConfig(name="chest baseline", source=SourceConfig(kind="csv", csv_path=str(first)))
    store = jobs.JobStore()
    job = store.submit("train", {"config": to_dict(cfg)}, owner=OWNER)
    other = store.submit(
        "train", {"config": to_dict(RunConfig(source=SourceConfig(kind="csv", csv_path=str(second))))}
    )
    assert common.run_name(job) == ("chest baseline", "chest/labels.csv")
    assert common.run_name(other)[1] == "knee/labels.csv"  # two CSVs of the same name told apart
    assert common.job_label(job, "train") == f"{job.id} · chest baseline · chest/labels.csv · train"
    at = AppTest.from_file(TRAIN, default_timeout=60)
    at.session_state["tr_pick"] = job.id
    at.run()
    assert not at.exception, at.exception
    assert "chest baseline · chest/labels.csv" in at.selectbox(key="tr_pick").format_func(job.id)
    state = {"source_config": cfg.source, "run_config": to_dict(cfg), "su_name": "chest baseline"}
    ws.set_source(SourceConfig(kind="csv", csv_path=str(first), group_col="patient_id"), state)
    assert state["su_name"] == "chest baseline"  # the same images: the name stays
    ws.set_source(SourceConfig(kind="csv", csv_path=str(second)), state)
    assert state["su_name"] == "" and state["run_config"]["name"] == ""


# ---------------------------------------------------------------- item 11: by patient on a source without patient ids


def test_a_source_without_patient_ids_falls_back_from_by_patient_visibly(tmp_path):
    csv = imbalanced_csv(tmp_path / "data", small=40)
    with_ids = SourceConfig(kind="csv", csv_path=str(csv), group_col="patient_id")
    at = app(SETUP)
    at.session_state["source_config"] = with_ids
    at.run()
    assert not at.exception, at.exception
    assert at.selectbox(key="su_split_method").value == "group"
    from ui import working_settings as ws

    ws.set_source(SourceConfig(kind="folder", root=str(tmp_path / "data")), at.session_state)
    at.run()
    assert not at.exception, at.exception
    assert at.selectbox(key="su_split_method").value == "stratified"
    assert any("has no patient ids" in i.value and "now stratified" in i.value for i in at.info)
    assert at.session_state["run_config"]["data"]["split"]["method"] == "stratified"


# ---------------------------------------------------------------- item 13: Start on data that cannot train


def test_start_is_disabled_on_a_source_without_usable_images_when_setup_was_not_opened(tmp_path):
    for label in ("a", "b"):
        (tmp_path / "empty" / label).mkdir(parents=True)
        (tmp_path / "empty" / label / "broken.png").write_bytes(b"not an image")
    at = AppTest.from_file(TRAIN, default_timeout=60)
    at.session_state["source_config"] = SourceConfig(kind="folder", root=str(tmp_path / "empty"))
    at.run()
    assert not at.exception, at.exception
    assert at.button(key="tr_start").disabled
    assert any("no usable images were found" in e.value for e in at.error)


# ---------------------------------------------------------------- item 14: hosted wording


def test_hosted_names_who_signed_in_and_hides_prediction_uploads(monkeypatch, tmp_path):
    from core.models.pretrained import PretrainedUnavailable
    from core.web import hosting, signin, uploads

    monkeypatch.setenv("XRT_HOSTED", "1")
    monkeypatch.setenv("XRT_PASSWORD", "pw")
    monkeypatch.setenv("XRT_DATA_ROOTS", str(tmp_path / "lab"))
    (tmp_path / "lab").mkdir()
    owner = signin.owner_for("user:alice")
    for name in ("chest", uploads.prediction_dataset("8bf0e6e2d227")):
        (uploads.upload_dir(owner) / name).mkdir()
    assert [p.name for p in uploads.list_datasets(owner)] == ["chest"]
    assert all(not p.name.startswith("predict-") for p in hosting.allowed_folders(owner))
    at = AppTest.from_file(str(ROOT / "streamlit_app.py"), default_timeout=60)
    at.session_state["auth_identity"] = "user:alice"  # signed in with the shared password as alice
    at.session_state["auth_ok"] = True
    at.session_state["src_choice"] = "upload"
    at.run()
    assert not at.exception, at.exception
    assert any(c.value == "Signed in as **alice**" for c in at.sidebar.caption)
    assert "Upload images or a zip (private to alice)" in at.selectbox(key="src_choice").options
    assert at.selectbox(key="up_dataset").options == ["chest"]
    told = hosting.public_error(f"PretrainedUnavailable: {PretrainedUnavailable('resnet18', 'offline')}")
    assert told and "upload a weights file on the Training setup page" in told and "local weights" not in told


# ---------------------------------------------------------------- item 15: a refused settings file


def test_a_refused_settings_file_is_said_once_not_under_every_later_verdict(tmp_path):
    from ui import setup_form

    csv = imbalanced_csv(tmp_path / "data", small=40)
    at = app(SETUP)
    at.session_state["source_config"] = SourceConfig(kind="csv", csv_path=str(csv), group_col="patient_id")
    at.session_state["su_upload_error"] = setup_form.apply_settings(b'{"train": {"epochs": "many"}}', {})
    at.run()
    assert not at.exception, at.exception
    refused = [e.value for e in at.error if e.value.startswith("Settings file not loaded")]
    assert len(refused) == 1 and "unchanged" in refused[0]
    at.number_input(key="su_epochs").set_value(
        4
    ).run()  # the next interaction: the uploader still holds the file
    assert not [e for e in at.error if e.value.startswith("Settings file not loaded")]
    assert at.success  # the verdict is about the settings in use, alone


# ---------------------------------------------------------------- item 16: small wording


def test_wording_of_ended_runs_metric_intervals_and_report_pngs(tmp_path):
    from core.evaluation import report

    store = jobs.JobStore()
    job = store.submit("train", {"config": to_dict(RunConfig())}, owner=OWNER)
    store.cancel(job.id)
    at = AppTest.from_file(TRAIN, default_timeout=60)
    at.session_state["tr_pick"] = job.id
    at.run()
    assert not at.exception, at.exception
    assert [w.value for w in at.warning if w.value.startswith("The run was")] == [
        "The run was cancelled before it started."
    ]
    captions = [c.value for c in at.caption]
    assert "No training curves: the run ended (cancelled) before its first epoch." in captions
    assert not any("Curves appear after the first epoch" in c for c in captions)
    register(missed_class_run(tmp_path / "run"))
    ev = app(EVAL).run()
    assert not ev.exception, ev.exception
    assert "Metrics" in [s.value for s in ev.subheader]
    said = next(
        c.value for c in ev.caption if c.value.startswith("In brackets: 95 % confidence intervals of")
    )
    assert "accuracy" in said and "the other rows are point estimates" in said
    assert "not asked" not in report.PNG_SKIPPED and "HTML figures only" in report.PNG_SKIPPED


def test_an_uploaded_dataset_is_named_without_the_owner_folder():
    from core.base import paths
    from ui import common

    root = paths.uploads_dir() / OWNER / "knee" / "labels.csv"
    cfg = RunConfig(source=SourceConfig(kind="csv", csv_path=str(root)))
    job = jobs.JobStore().submit("train", {"config": to_dict(cfg)}, owner=OWNER)
    assert common.run_name(job) == ("", "knee/labels.csv")
    folder = RunConfig(source=SourceConfig(kind="folder", root=str(paths.uploads_dir() / OWNER / "knee")))
    assert common.run_name(jobs.JobStore().submit("train", {"config": to_dict(folder)}))[1] == "knee"
    assert common.run_name(jobs.JobStore().submit("train", {"config": {}}))[1] == ""
