"""AppTest tests of what the browser walk on real data found (issue 28, bench/browser_walk.py)."""

from __future__ import annotations

import os
from pathlib import Path

from streamlit.testing.v1 import AppTest

ROOT = Path(__file__).resolve().parents[1]


def test_hosted_upload_caption_says_the_uploads_belong_to_the_signed_in_user(monkeypatch, tmp_path):
    monkeypatch.setenv("XRT_HOSTED", "1")
    monkeypatch.setenv("XRT_PASSWORD", "pw")
    monkeypatch.setenv("XRT_DATA_ROOTS", str(tmp_path / "lab"))
    (tmp_path / "lab").mkdir()
    at = AppTest.from_file(str(ROOT / "streamlit_app.py"), default_timeout=60)
    at.session_state["auth_identity"] = "user:alice"  # signed in as alice
    at.session_state["auth_ok"] = True
    at.session_state["src_choice"] = "upload"
    at.run()
    assert not at.exception, at.exception
    said = " ".join(c.value for c in at.main.caption)
    assert "only alice can see these uploads" in said and "this session" not in said


def test_the_lr_finder_writes_nothing_into_the_working_directory(tmp_path, monkeypatch):
    from core.base.config import RunConfig, SourceConfig
    from core.runs.progress import Progress
    from core.train.lr_find import lr_find_run
    from tests.synth import smooth_dataset

    csv = smooth_dataset(tmp_path / "data", n=24, size=32)
    cwd = tmp_path / "app"
    cwd.mkdir()
    monkeypatch.chdir(cwd)  # the server's working directory is the app's own folder
    cfg = RunConfig(source=SourceConfig(kind="csv", csv_path=str(csv), group_col="patient_id"))
    cfg.train.pretrained, cfg.train.freeze_epochs, cfg.data.img_size, cfg.data.batch_size = False, 0, 32, 8
    out = lr_find_run(cfg.validate(), tmp_path / "lr", Progress(tmp_path / "lr"), num_it=5)
    assert out["points"] > 0
    assert (
        list(cwd.iterdir()) == []
    )  # fastai's lr_find used to leave models/ (and its _tmp.pth while running)
    assert not (tmp_path / "lr" / "models").exists()


def test_a_new_phase_does_not_keep_the_last_phase_s_message(tmp_path):
    from core.runs.progress import Progress
    from ui.common import phase_text

    progress = Progress(tmp_path)
    progress.update(force=True, phase="scanning", message="reading the dataset")
    progress.update(force=True, phase="scanning", batch=0)  # the same phase keeps its message
    assert progress.snapshot().message == "reading the dataset"
    progress.update(force=True, phase="lr_find", batch=9, n_batches=20)  # the walk saw this one
    assert phase_text(progress.snapshot()) == "Finding a learning rate"
    progress.update(force=True, phase="combining", message="combining the folds")
    assert progress.snapshot().message == "combining the folds"


def test_one_epoch_is_said_in_the_singular():
    from core.base import fmt
    from core.base.config import RunConfig
    from ui.common import schedule_text

    cfg = RunConfig()
    cfg.train.pretrained, cfg.train.epochs = False, 1  # the walk's hosted run: "batch 32, 1 epochs"
    assert schedule_text(cfg) == "1 epoch"
    cfg.train.epochs = 3
    assert schedule_text(cfg) == "3 epochs"
    assert fmt.count(0, "trial") == "0 trials"


def test_hosted_explorer_scans_no_data_folder_before_one_is_chosen(monkeypatch, tmp_path):
    from tests.synth import smooth_dataset

    for name in ("chest", "knee"):
        smooth_dataset(tmp_path / "lab" / name, n=8, size=32)
    monkeypatch.setenv("XRT_HOSTED", "1")
    monkeypatch.setenv(
        "XRT_DATA_ROOTS", f"{tmp_path / 'lab' / 'chest'}{os.pathsep}{tmp_path / 'lab' / 'knee'}"
    )
    monkeypatch.setenv("XRT_ALLOW_ANONYMOUS", "1")
    at = AppTest.from_file(str(ROOT / "pages/1_dataset.py"), default_timeout=60)
    at.session_state["src_choice"] = "folder"
    at.run()
    assert not at.exception, at.exception
    pick = at.selectbox(key="src_root_pick")
    assert pick.value is None and not at.metric  # the walk saw the first data root scanned unasked
    pick.select(str(tmp_path / "lab" / "knee")).run()
    assert {m.label: m.value for m in at.metric}["Classes"] == "2"
    at.selectbox(key="src_choice").select("csv").run()
    assert at.selectbox(key="src_csv_pick").value is None and not at.metric


def test_a_k_fold_run_can_ask_for_one_model_on_all_the_data_from_the_setup_page(tmp_path):
    from core.base.config import SourceConfig
    from tests.synth import smooth_dataset

    csv = smooth_dataset(tmp_path / "data", n=24, size=32)
    at = AppTest.from_file(str(ROOT / "pages/2_setup.py"), default_timeout=60)
    at.session_state["source_config"] = SourceConfig(kind="csv", csv_path=str(csv), group_col="patient_id")
    at.run()
    assert not at.exception, at.exception
    final = at.toggle(key="su_final_model_on_all")
    assert final.label.startswith("Also train one model on all the data") and final.disabled
    at.toggle(key="su_kfold").set_value(True).run()
    at.toggle(key="su_final_model_on_all").set_value(True).run()
    assert not at.exception, at.exception
    assert at.session_state["run_config"]["train"][
        "final_model_on_all"
    ]  # the walk found no way to ask for it


def test_a_k_fold_run_without_a_final_model_says_so_in_the_app_s_words(tmp_path):
    from core.runs import jobs

    run = tmp_path / "run"
    (run / "folds" / "fold0").mkdir(parents=True)
    job = jobs.JobStore().submit("train", {"config": {}}, run_dir=run)

    def page(job_id: str) -> None:
        from core.runs import jobs
        from ui import common

        common.model_download(jobs.JobStore().get(job_id), key="dl")

    at = AppTest.from_function(page, args=(job.id,), default_timeout=60).run()
    assert not at.exception, at.exception
    said = " ".join(c.value for c in at.caption)
    assert "turn on 'Also train one model on all the data' beside k-fold" in said
    assert "--final-model" not in said and "folds/fold0" not in said


def test_the_run_picker_names_an_ordinal_run_s_task_not_single(tmp_path):
    import json

    from core.runs import jobs
    from ui.common import run_label

    store = jobs.JobStore()
    labels = {}
    for name, summary in (
        (
            "knee",
            {
                "type": "single",
                "classes": ["0", "1", "2"],
                "task": {"type": "ordinal", "order": ["0", "1", "2"]},
            },
        ),
        ("chest", {"type": "kfold", "k": 3, "classes": ["NORMAL", "PNEUMONIA"]}),
        ("plain", {"type": "single", "classes": ["a", "b"]}),
    ):
        (tmp_path / name).mkdir()
        (tmp_path / name / "metrics.json").write_text(json.dumps(summary))
        labels[name] = run_label(store.submit("train", {"config": {}}, run_dir=tmp_path / name))
    assert "· one split · ordinal · 0, 1, 2" in labels["knee"] and "single" not in labels["knee"]
    assert "· 3-fold · NORMAL, PNEUMONIA" in labels["chest"]
    assert "· one split · a, b" in labels["plain"]


def test_an_uploaded_copy_of_a_training_image_is_said_to_be_one(tmp_path):
    import json

    import pandas as pd

    from core.data.same_files import copies_of
    from ui import predict_view

    data, run, upload = tmp_path / "data", tmp_path / "run", tmp_path / "uploads"
    for folder in (data, run / "model", upload):
        folder.mkdir(parents=True)
    for i in range(2):
        (data / f"im{i}.png").write_bytes(bytes([i]) * (100 + i))
    (upload / "im0.png").write_bytes((data / "im0.png").read_bytes())  # the walk's upload of a training image
    (upload / "new.png").write_bytes(bytes([7]) * 100)  # the same size, other bytes: not a copy
    (run / "config.json").write_text(json.dumps({"source": {"root": str(data)}}))
    (run / "items.csv").write_text("relpath,label,split\nim0.png,a,train\nim1.png,b,valid\n")
    (run / "metrics.json").write_text("{}")
    df = pd.DataFrame({"path": [str(upload / "im0.png"), str(upload / "new.png"), str(data / "im1.png")]})
    assert predict_view.seen_in_training(df, str(run / "model")).tolist() == ["train", "", "valid"]
    assert copies_of([str(upload / "new.png")], [str(data / "im0.png")]) == {}
