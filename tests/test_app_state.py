"""AppTest tests of the app's state across pages and reloads: one setup verdict, kept settings, file names."""

from __future__ import annotations

from pathlib import Path

from streamlit.testing.v1 import AppTest

ROOT = Path(__file__).resolve().parents[1]
ENTRY, SETUP, TRAIN = (
    str(ROOT / "streamlit_app.py"),
    str(ROOT / "pages/2_setup.py"),
    str(ROOT / "pages/3_train.py"),
)


def app(script: str = ENTRY) -> AppTest:
    """A fresh session (a new browser tab, or a reload) of a script."""
    return AppTest.from_file(script, default_timeout=60)


def test_setup_gives_one_verdict_and_run_page_disables_start():
    at = app()
    at.switch_page("pages/2_setup.py").run()
    at.selectbox(key="su_split_method").select("column").run()
    at.text_input(key="su_split_col").input("no_such_column").run()
    assert not at.exception
    assert not at.success, [s.value for s in at.success]  # no green "valid" beside a red "cannot be read"
    verdicts = [e.value for e in at.error if e.value.startswith("These settings cannot work")]
    assert len(verdicts) == 1 and "no_such_column" in verdicts[0]
    assert at.button(key="su_lr_find").disabled
    at.switch_page("pages/3_train.py").run()
    assert not at.exception
    assert at.button(key="tr_start").disabled
    assert any("no_such_column" in e.value for e in at.error)
    at.switch_page("pages/2_setup.py").run()
    at.selectbox(key="su_split_method").select("group").run()
    assert at.success and not [e for e in at.error if e.value.startswith("These settings")]
    at.switch_page("pages/3_train.py").run()
    assert not at.button(key="tr_start").disabled


def test_settings_source_and_lr_finder_survive_a_reload(monkeypatch):
    from core.runs import jobs
    from core.runs.jobs import JobStore

    submitted: list[str] = []

    def fake(kind, params, run_dir=None, owner="", store=None, executor=None):
        job = (store or JobStore()).submit(kind, params, owner=owner)
        submitted.append(job.id)
        return job

    monkeypatch.setattr(jobs, "submit_and_start", fake)
    at = app().run()  # the Dataset explorer: choose the sample's folder form
    at.selectbox(key="src_choice").select("sample").run()
    at.switch_page("pages/2_setup.py").run()
    at.toggle(key="su_pretrained").set_value(False).run()
    at.number_input(key="su_epochs").set_value(7).run()
    at.number_input(key="su_img_size").set_value(96).run()
    at.button(key="su_lr_find").click().run()
    assert not at.exception and len(submitted) == 1
    reloaded = app()  # a browser refresh: a new session, nothing in session state
    reloaded.switch_page("pages/2_setup.py").run()
    assert not reloaded.exception
    assert (
        reloaded.number_input(key="su_epochs").value == 7
        and reloaded.number_input(key="su_img_size").value == 96
    )
    assert reloaded.toggle(key="su_pretrained").value is False
    assert "class folders" in reloaded.info[0].value  # the chosen source, not the default CSV sample
    assert reloaded.session_state["lr_job_id"] == submitted[0]
    again = app().run()  # reload on the explorer: it shows the chosen source too
    assert again.selectbox(key="src_choice").value == "sample"
    again.switch_page("pages/3_train.py").run()
    caption = " ".join(c.value for c in again.caption)
    assert "from scratch) on folder" in caption and "96 px" in caption and ", 7 epochs" in caption


def _weights(monkeypatch, ok: bool) -> None:
    """Pretend ImageNet weights can (or cannot) be had on this server; forget the app's cached answer."""
    from core.models import pretrained
    from ui import common

    why = (
        "weights are in the local cache."
        if ok
        else "download.pytorch.org cannot be reached from this server."
    )
    monkeypatch.setattr(pretrained, "weights_obtainable", lambda arch, timeout=1.5: (ok, why))
    common._weights_status.clear()


def test_offline_server_defaults_to_from_scratch_and_says_so(monkeypatch):
    _weights(monkeypatch, ok=False)
    at = app()
    at.switch_page("pages/2_setup.py").run()
    assert not at.exception
    assert at.toggle(key="su_pretrained").value is False
    assert at.number_input(key="su_freeze_epochs").value == 0
    assert any("cannot be reached" in c.value and "from scratch" in c.value for c in at.caption)
    fresh = app()
    fresh.switch_page("pages/3_train.py").run()  # another session's run page agrees
    assert "from scratch" in " ".join(c.value for c in fresh.caption)
    at.toggle(key="su_pretrained").set_value(True).run()  # turned on anyway: a warning, not a silent failure
    assert any("A pretrained run would fail" in w.value for w in at.warning)
    _weights(monkeypatch, ok=True)
    from core.base import paths

    for f in (paths.app_home() / "settings").glob("*.json"):  # no kept settings: the default decides
        f.unlink()
    online = app()
    online.switch_page("pages/2_setup.py").run()
    assert online.toggle(key="su_pretrained").value is True


def test_hosted_failure_shows_the_cause_without_server_paths(monkeypatch):
    from core.base.config import RunConfig, to_dict
    from core.runs.jobs import JobStore
    from core.web import signin

    monkeypatch.setenv("XRT_HOSTED", "1")
    owner = signin.owner_for("user:alice")
    store = JobStore()
    causes = {
        "PretrainedUnavailable: ImageNet weights for resnet18 could not be downloaded (no internet). Options: "
        "train from scratch (turn 'pretrained' off); or copy the file to /root/.cache/torch/hub/r18.pth.": "could not be downloaded",
        "TrainingError: training refused: only one class in /srv/lab/chest/labels.csv": "only one class",
        "RuntimeError: internal /srv/secret/thing": "administrator",
    }
    for error in causes:
        job = store.submit("train", {"config": to_dict(RunConfig())}, owner=owner)
        store.finish(job.id, "failed", error=error, only_if_running=False)
        at = AppTest.from_file(TRAIN, default_timeout=60)
        at.session_state["auth_identity"] = "user:alice"
        at.session_state["tr_pick"] = job.id
        at.run()
        assert not at.exception
        shown = " ".join(e.value for e in at.error)
        assert causes[error] in shown and "/srv" not in shown and "/root" not in shown, shown


def _running(kind: str, progress: dict, params: dict | None = None):
    """A job row marked running by this (live) process, with a progress.json."""
    import json
    import os

    from core.base.config import RunConfig, to_dict
    from core.runs.jobs import JobStore

    store = JobStore()
    store.submit(kind, {"config": to_dict(RunConfig()), **(params or {})})
    job = store.claim(os.getpid(), 5)
    Path(job.run_dir, "progress.json").write_text(json.dumps(progress))
    return job


def test_kfold_and_lr_finder_show_elapsed_and_time_left():
    job = _running(
        "train",  # a k-fold run is a "train" job whose progress names its folds
        {
            "phase": "training",
            "fold": 1,
            "n_folds": 3,
            "epoch": 0,
            "n_epochs": 2,
            "batch": 5,
            "n_batches": 10,
            "eta_s": 60.0,
            "elapsed_s": 20.0,
        },
    )
    at = AppTest.from_file(TRAIN, default_timeout=60)
    at.session_state["tr_pick"] = job.id  # watched (a fresh session watches only its own runs by default)
    at.run()
    assert not at.exception
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Time left (this fold)"] == "1 min 0 s" and metrics["Elapsed (this fold)"] == "20 s"
    whole = [c.value for c in at.caption if c.value.startswith("Whole job")]
    assert whole and "for 3 folds" in whole[0], whole
    lr = _running(
        "lr_find", {"phase": "lr_find", "batch": 6, "n_batches": 30, "elapsed_s": 12.0, "eta_s": 48.0}
    )
    setup = AppTest.from_file(SETUP, default_timeout=60)
    setup.session_state["lr_job_id"] = lr.id
    setup.run()
    assert not setup.exception
    bars = [p.proto.text for p in setup.get("progress")]
    assert any("step 6 / 30" in b and "elapsed 12 s" in b and "about 48 s left" in b for b in bars), bars


def test_flat_dicom_folder_labels_from_csv_or_tag_with_previews_and_real_reasons(tmp_path):
    from tests.test_sources import dcm

    flat = tmp_path / "flat"
    for i in range(6):
        dcm(flat / f"im{i}.dcm", patient=f"P{i}", body_part="CHEST" if i % 2 else "HAND")
    (flat / "broken.dcm").write_bytes(b"DICM" * 3)
    (tmp_path / "labels.csv").write_text(
        "file,finding\n" + "".join(f"im{i}.dcm,{'ab'[i % 2]}\n" for i in range(6))
    )
    at = AppTest.from_file(str(ROOT / "pages/1_dataset.py"), default_timeout=60)
    at.session_state["src_choice"] = "dicom"
    at.run()
    at.text_input(key="src_root").input(str(flat)).run()
    assert not at.exception, at.exception
    assert any(s.value.startswith("Readable files without a label (6)") for s in at.subheader)
    assert len(at.image) == 6  # previews of the unlabelled files
    reasons = dict(
        zip(at.dataframe[-1].value["path"].map(lambda p: Path(p).name), at.dataframe[-1].value["reason"])
    )
    assert reasons["broken.dcm"] != "not inside a class folder", reasons
    at.radio(key="src_dcm_labels").set_value("csv").run()
    at.text_input(key="src_dcm_csv").input(str(tmp_path / "labels.csv"))
    at.text_input(key="src_dcm_pathcol").input("file")
    at.text_input(key="src_dcm_labelcol").input("finding").run()
    assert not at.exception, at.exception
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Usable images"] == "6" and metrics["Classes"] == "2"
    at.radio(key="src_dcm_labels").set_value("tag").run()
    at.text_input(key="src_ltag").input("BodyPartExamined").run()
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Usable images"] == "6" and metrics["Classes"] == "2" and metrics["Unusable files"] == "1"
    assert at.session_state["source_config"].label_tag == "BodyPartExamined"


def test_queue_names_and_cancel_of_a_queued_run():
    import os

    from core.base.config import RunConfig, to_dict
    from core.runs.jobs import JobStore

    store = JobStore()
    cfg = RunConfig(name="first try")
    store.submit("train", {"config": to_dict(cfg)})
    running = store.claim(os.getpid(), 5)
    queued = store.submit("train", {"config": to_dict(RunConfig(name="second"))})
    at = AppTest.from_file(TRAIN, default_timeout=60)
    at.session_state["train_job_id"] = at.session_state["tr_pick"] = queued.id
    at.run()
    assert not at.exception
    table = at.dataframe[0].value
    assert dict(zip(table["id"], table["name"])) == {running.id: "first try", queued.id: "second"}
    assert set(table["dataset"]) == {""}  # no source set in these configs
    assert any("1 run(s) ahead of this one (1 running, 0 queued)" in i.value for i in at.info)
    at.button(key="tr_cancel").click().run()
    assert not at.exception and store.get(queued.id).status == "cancelled"
    shown = " ".join([c.value for c in at.caption] + [w.value for w in at.warning])
    assert "still queued" not in shown and not [b for b in at.button if b.key == "tr_cancel"]
    assert "cancelled" in shown


def test_kfold_fold_table_is_numbered_from_one_as_text():
    from ui.run_view import metrics_tables

    summary = {
        "type": "kfold",
        "metrics": {
            "per_fold": [{"fold": 0, "accuracy": 0.8}, {"fold": 1, "accuracy": 0.9}],
            "pooled_oof": {"accuracy": 0.85},
            "mean_sd": {},
        },
    }
    _, folds = metrics_tables(summary)
    assert list(folds["fold"]) == ["1", "2", "pooled (out-of-fold)"]


def test_explorer_keeps_typed_values_across_source_kinds_and_kfold_disables_valid_pct(tmp_path):
    at = AppTest.from_file(str(ROOT / "pages/1_dataset.py"), default_timeout=60)
    at.session_state["src_choice"] = "csv"
    at.run()
    at.text_input(key="src_csv").input(str(tmp_path / "labels.csv"))
    at.text_input(key="src_labelcol").input("finding").run()
    at.selectbox(key="src_choice").select("folder").run()
    at.selectbox(key="src_choice").select("csv").run()
    assert not at.exception
    assert at.text_input(key="src_csv").value == str(tmp_path / "labels.csv")
    assert at.text_input(key="src_labelcol").value == "finding"
    setup = AppTest.from_file(SETUP, default_timeout=60).run()
    assert not setup.slider(key="su_valid_pct").disabled
    setup.toggle(key="su_kfold").set_value(True).run()
    assert setup.slider(key="su_valid_pct").disabled


def test_kfold_with_folds_as_child_jobs_shows_each_folds_progress():
    import json
    import os

    from core.base.config import RunConfig, to_dict
    from core.runs import rundir
    from core.runs.jobs import JobStore

    store = JobStore()
    cfg = to_dict(RunConfig())
    parent = store.submit("train", {"config": cfg})
    parent = store.claim(os.getpid(), 5)
    folder = rundir.RunFolder(parent.run_dir)
    kids = [
        {
            "kind": "fold",
            "params": {"config": cfg, "parent_run": parent.run_dir, "fold": i},
            "run_dir": str(folder.fold_job_dir(i)),
            "label": f"fold {i + 1}/2",
        }
        for i in range(2)
    ]
    assert store.wait_for_children(parent.id, kids)
    first = store.claim(os.getpid(), 1)  # fold 1 runs, fold 2 waits for a slot
    progress = {"phase": "training", "fold": 0, "n_folds": 2, "epoch": 0, "n_epochs": 2, "elapsed_s": 10.0}
    Path(first.run_dir, "progress.json").write_text(json.dumps({**progress, "eta_s": 30.0}))
    at = app(TRAIN)
    at.session_state["tr_pick"] = parent.id
    at.run()
    assert not at.exception
    bars = [p.proto.text for p in at.get("progress")]
    assert bars == ["fold 1/2: running · epoch 1 / 2 · time left 30 s", "fold 2/2: queued"], bars
    whole = [c.value for c in at.caption if c.value.startswith("Whole job")]
    assert whole and "time left about 1 min 10 s" in whole[0], whole  # 30 s, then fold 2 for about 40 s


def test_explorer_window_is_for_xrays_and_used_for_training(submitted):
    from core.base.config import RunConfig, Window, from_dict

    at = app()
    at.session_state["src_choice"] = "sample_dicom"
    at.run()
    assert not at.exception, at.exception
    options = at.selectbox(key="dicom_preset").options
    assert options[0].startswith("From the file") and any(o.startswith("Automatic") for o in options)
    assert not any("Bone" in o or "Lung" in o for o in options)  # no CT Hounsfield presets for X-rays
    at.selectbox(key="dicom_preset").select("Automatic (1st-99th percentile of each image)").run()
    assert not at.exception, at.exception
    assert any("Training decodes the DICOMs with this window too" in c.value for c in at.caption)
    assert from_dict(RunConfig, at.session_state["run_config"]).data.window == Window(mode="auto")
    at.switch_page("pages/2_setup.py").run()  # the setup page keeps it (no widget of its own)
    at.switch_page("pages/3_train.py").run()
    assert any("DICOM window automatic" in c.value for c in at.caption)
    at.button(key="tr_start").click().run()
    assert submitted[0]["params"]["config"]["data"]["window"] == {"center": 0.0, "width": 1.0, "mode": "auto"}
    again = app()  # a reload: the kept settings bring the window back to the explorer's choice
    again.session_state["src_choice"] = "sample_dicom"
    again.run()
    assert again.selectbox(key="dicom_preset").value.startswith("Automatic")


def test_kfold_setup_shows_the_fold_pool_not_a_train_valid_split():
    setup = app(SETUP)
    setup.session_state["su_kfold"], setup.session_state["su_k"] = True, 3
    setup.run()
    assert not setup.exception
    tables = [d.value for d in setup.dataframe]
    splits = next(t for t in tables if "split" in t)
    assert "train" not in set(splits["split"]) and "valid" not in set(splits["split"]), splits
    assert splits["split"].iloc[0] == "3 folds (train + valid in turn)"
    folds = next(t for t in tables if "fold" in t)
    assert list(folds["fold"]) == [1, 2, 3] and folds["valid items"].sum() == splits["items"].iloc[0]


def test_an_old_lr_finder_error_goes_once_the_settings_change(submitted):
    import os

    from core.runs.jobs import JobStore

    at = app(SETUP).run()
    at.button(key="su_lr_find").click().run()
    store = JobStore()
    store.finish(store.claim(os.getpid(), 5).id, "failed", error="out of memory at 128 px")
    at.run()
    assert [e.value for e in at.error if e.value.startswith("LR finder failed")], [e.value for e in at.error]
    at.text_input(key="su_lr").input("fast").run()  # settings that cannot work: the old error is no cause now
    assert not at.exception
    assert not [e.value for e in at.error if e.value.startswith("LR finder")], [e.value for e in at.error]
    at.text_input(key="su_lr").input("").run()
    at.number_input(key="su_img_size").set_value(
        64
    ).run()  # other settings: the failure was with earlier ones
    assert not [e.value for e in at.error if e.value.startswith("LR finder")]
    assert any("earlier settings" in c.value for c in at.caption)


def test_runs_table_and_sidebar_counts_are_redrawn_with_the_live_progress(monkeypatch):
    import os

    from streamlit.testing.v1 import local_script_runner

    from core.base.config import RunConfig, to_dict
    from core.runs.jobs import JobStore

    sent: list = []
    parse = local_script_runner.parse_tree_from_messages
    monkeypatch.setattr(
        local_script_runner, "parse_tree_from_messages", lambda msgs: parse(sent.extend(msgs) or msgs)
    )

    def fragment_of(kind: str, text: str = "") -> list[str]:
        """The fragment ids of the drawn elements of a kind (whose text starts with `text`)."""
        elements = [m.delta for m in sent if m.HasField("delta") and m.delta.HasField("new_element")]
        return [
            d.fragment_id
            for d in elements
            if d.new_element.WhichOneof("type") == kind
            and (not text or d.new_element.markdown.body.startswith(text))
        ]

    store = JobStore()
    store.submit("train", {"config": to_dict(RunConfig(name="first"))})
    store.claim(os.getpid(), 5)
    store.submit("train", {"config": to_dict(RunConfig(name="second"))})
    at = app().run()  # the sidebar, here on the default page
    assert not at.exception
    assert fragment_of("markdown", "Jobs: running 1 / queued 1") and all(fragment_of("markdown", "Jobs:"))
    sent.clear()
    assert not app(TRAIN).run().exception
    assert fragment_of("dataframe") and all(fragment_of("dataframe"))  # the runs table
