"""AppTest tests of the multi-label and ordinal task types on the explorer, setup, evaluation and predict pages (one
tiny run of each, trained once per module on the synthetic task samples: 32 px, 1 epoch, from scratch)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from streamlit.testing.v1 import AppTest

from core.base import paths
from core.base.config import (
    AugConfig,
    DataConfig,
    RunConfig,
    SourceConfig,
    SplitConfig,
    TaskConfig,
    TrainConfig,
    to_dict,
)
from core.data import labels as lab
from core.data import sample_tasks
from core.evaluation import multilabel, ordinal
from core.runs import jobs
from core.runs.rundir import RunFolder

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
DATASET, SETUP = str(ROOT / "pages/1_dataset.py"), str(ROOT / "pages/2_setup.py")
EVAL, PREDICT = str(ROOT / "pages/4_evaluate.py"), str(ROOT / "pages/5_predict.py")
OWNER = "ab" * 16


def _config(source: SourceConfig, task: str) -> RunConfig:
    return RunConfig(
        source=source,
        data=DataConfig(
            img_size=32,
            batch_size=16,
            aug=AugConfig(enabled=False),
            split=SplitConfig(method="group", test_pct=0.2),
            task=TaskConfig(type=task),
        ),
        train=TrainConfig(pretrained=False, epochs=1, freeze_epochs=0),
    )


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict[str, dict]:
    """A finished multi-label run (finding columns) and a finished ordinal run (grades KL0..KL4)."""
    base = tmp_path_factory.mktemp("tasks")
    threads = torch.get_num_threads()
    ml = sample_tasks.ensure_multilabel_sample(base / "ml", n=40, size=32)
    od = sample_tasks.ensure_ordinal_sample(base / "od", n=40, size=32)
    sources = {
        "multilabel": SourceConfig(
            kind="csv",
            csv_path=str(ml / sample_tasks.FINDINGS_CSV),
            label_col="Finding Labels",
            label_delimiter="|",
            group_col="patient_id",
        ),
        "ordinal": SourceConfig(
            kind="csv", csv_path=str(od / sample_tasks.GRADES_CSV), label_col="grade", group_col="patient_id"
        ),
    }
    out = {}
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("XRT_HOME", str(base / "home"))
        torch.set_num_threads(1)
        try:
            for task, src in sources.items():
                cfg = _config(src, task)
                run = paths.runs_dir() / task
                jobs.run_inline("train", {"config": to_dict(cfg)}, run_dir=run)
                out[task] = {"run": run, "config": to_dict(cfg), "data": ml if task == "multilabel" else od}
        finally:
            torch.set_num_threads(threads)
    return out


def register(run: Path, config: dict) -> str:
    """Record a finished run in this test's job store so the pages list it."""
    store = jobs.JobStore()
    job = store.submit("train", {"config": config}, run_dir=run, owner=OWNER)
    store.finish(job.id, "done", result=json.loads((run / "metrics.json").read_text()), only_if_running=False)
    return job.id


def app(page: str) -> AppTest:
    """A fresh session of one page with a fixed owner id."""
    at = AppTest.from_file(page, default_timeout=120)
    at.query_params["owner"] = OWNER
    return at


def frames_text(at: AppTest) -> str:
    """Every shown table as text."""
    return "\n".join(d.value.to_string() for d in at.dataframe)


def test_evaluation_page_shows_per_finding_metrics(trained):
    register(trained["multilabel"]["run"], trained["multilabel"]["config"])
    at = app(EVAL).run()
    assert not at.exception, at.exception
    text = frames_text(at)
    assert "Macro ROC AUC" in text and "Exact match" in text
    for finding in sample_tasks.FINDINGS:
        assert finding in text
    assert any("Task: multi-label findings" in c.value for c in at.caption)
    assert len(at.tabs) >= 4  # ROC, PR, errors, training curves


def test_evaluation_page_shows_ordinal_metrics_and_cut_points(trained):
    register(trained["ordinal"]["run"], trained["ordinal"]["config"])
    at = app(EVAL).run()
    assert not at.exception, at.exception
    text = frames_text(at)
    assert "Quadratic weighted kappa" in text and "Off-by-one accuracy" in text and ">= KL2" in text


def test_predict_page_gives_grades_with_expected_grade(trained):
    register(trained["ordinal"]["run"], trained["ordinal"]["config"])
    at = app(PREDICT).run()
    at.radio(key="pr_input").set_value("folder").run()
    at.text_input(key="pr_folder").input(str(trained["ordinal"]["data"] / "images")).run()
    at.button(key="pr_go").click().run()
    assert not at.exception, at.exception
    table = at.dataframe[0].value
    assert len(table) == 40 and {"expected_grade", "prob_KL0", "prob_KL4"} <= set(table.columns)
    assert set(table["pred"]) <= set(sample_tasks.GRADES)
    assert not [s for s in at.slider if s.key and s.key.startswith("pr_thr_")]  # no binary threshold here


def test_predict_page_gives_findings_at_their_thresholds(trained):
    register(trained["multilabel"]["run"], trained["multilabel"]["config"])
    at = app(PREDICT).run()
    at.radio(key="pr_input").set_value("folder").run()
    at.text_input(key="pr_folder").input(str(trained["multilabel"]["data"] / "images")).run()
    at.button(key="pr_go").click().run()
    assert not at.exception, at.exception
    table = at.dataframe[0].value
    assert {f"pred_{f}" for f in sample_tasks.FINDINGS} <= set(table.columns)
    at.selectbox(key="tv_pr_class").select("line").run()
    assert not at.exception, at.exception


def test_explorer_shows_findings_and_setup_offers_the_task(trained):
    at = app(DATASET).run()
    at.selectbox(key="src_choice").set_value("csv").run()
    at.text_input(key="src_csv").input(str(trained["multilabel"]["data"] / sample_tasks.FINDINGS_CSV)).run()
    at.text_input(key="src_labelcol").input("Finding Labels").run()
    at.text_input(key="src_delim").input("|").run()
    assert not at.exception, at.exception
    assert any("Findings (multi-label)" in s.value for s in at.subheader)
    assert not [w for w in at.warning if "refused" in w.value]
    setup = app(SETUP).run()
    setup.selectbox(key="su_task_type").set_value("ordinal").run()
    setup.text_input(key="su_grade_order").input("KL0, KL1, KL2, KL3, KL4").run()
    assert not setup.exception, setup.exception
    cfg = setup.session_state["run_config"]
    assert cfg["data"]["task"] == {
        "type": "ordinal",
        "order": list(sample_tasks.GRADES),
        "pos_weight": False,
        "ordinal_head": "corn",
    }


def _with_oof(trained_run: dict, dest: Path, frame) -> str:
    """A copy of a finished run with planted out-of-fold predictions (as a k-fold run has), registered."""
    run = dest / "run"
    shutil.copytree(trained_run["run"], run)
    frame.to_csv(RunFolder(run).predictions("oof"), index=False)
    return register(run, trained_run["config"])


def _planted_findings(data: Path):
    """Out-of-fold multi-label predictions of every sample image: effusion learned (3 labels contradict a sure
    model: planted label errors), line and nodule at chance."""
    table = pd.read_csv(data / sample_tasks.FINDINGS_CSV, keep_default_na=False)
    labels = table["Finding Labels"].map(lambda c: lab.split_cell(c, "|", "")).replace("", lab.EMPTY)
    effusion = lab.target_matrix(labels, ["effusion"])[:, 0] == 1
    p_eff = np.where(effusion, 0.9, 0.1)
    p_eff[:3] = 1 - p_eff[:3]
    rng = np.random.default_rng(0)
    probs = np.stack([p_eff, rng.uniform(0.4, 0.6, len(table)), rng.uniform(0.4, 0.6, len(table))], 1)
    paths = [str(data / p) for p in table["path"]]
    frame = multilabel.predictions_frame(paths, probs, list(sample_tasks.FINDINGS))
    return frame.assign(label=labels, group=table["patient_id"]), set(paths[:3])


def test_multilabel_evaluation_opens_top_losses_cells_and_suspects(trained, tmp_path):
    frame, planted = _planted_findings(trained["multilabel"]["data"])
    _with_oof(trained["multilabel"], tmp_path, frame)
    at = app(EVAL).run()
    assert not at.exception, at.exception
    heads = [s.value for s in at.subheader]
    assert any(h.startswith("Top losses") for h in heads) and "Open a finding's 2x2 table" in heads
    assert "Suspect labels" in heads
    assert at.selectbox(key="tc_finding").options == list(sample_tasks.FINDINGS)
    at.selectbox(key="tc_finding").select("line").run()
    at.selectbox(key="tc_cell").set_value("1,1").run()  # TP of "line" (a chart click sets the same key)
    assert not at.exception, at.exception
    at.selectbox(key="tc_sus_finding").select("effusion").run()
    assert not at.exception, at.exception
    said = [c.value for c in at.caption if "look mislabelled for effusion" in c.value]
    assert said and not said[0].startswith("0 of")
    at.selectbox(key="tc_sus_finding").select("nodule").run()  # at chance: withheld, with the reason
    assert any(w.value.startswith("Suspect labels are withheld: for nodule") for w in at.warning)
    at.button(key="tv_report").click().run()
    assert not at.exception, at.exception
    report = (RunFolder(tmp_path / "run").report_folder() / "report.html").read_text()
    assert "Top losses" in report and "Macro ROC AUC" in report


def test_ordinal_evaluation_opens_grade_cells_and_ranks_suspect_grades(trained, tmp_path):
    data = trained["ordinal"]["data"]
    table = pd.read_csv(data / sample_tasks.GRADES_CSV, keep_default_na=False)
    y = table["grade"].map(sample_tasks.GRADES.index).to_numpy()
    y_model = y.copy()
    y_model[:2] = 4 - y[:2]  # two images the sure model puts far from their given grade (unless it is KL2)
    probs = np.eye(5)[y_model] * 0.9 + 0.02
    paths = [str(data / p) for p in table["path"]]
    frame = ordinal.predictions_frame(paths, probs, list(sample_tasks.GRADES))
    _with_oof(trained["ordinal"], tmp_path, frame.assign(label=table["grade"], group=table["patient_id"]))
    at = app(EVAL).run()
    assert not at.exception, at.exception
    heads = [s.value for s in at.subheader]
    assert "Open a confusion-matrix cell (grades in order)" in heads and "Suspect labels" in heads
    first = at.selectbox(key="tc_cell").options[:2]  # true x predicted, in grade order
    assert first[0].startswith("true KL0 → predicted KL0") and first[1].startswith("true KL0 → predicted KL1")
    at.selectbox(key="tc_cell").set_value("2,2").run()
    assert not at.exception, at.exception
    far = int((np.abs(y_model - y) >= 1).sum())
    assert any(
        c.value.startswith(f"{far} of {len(y)} images have an out-of-fold expected grade") for c in at.caption
    )


def test_the_training_page_counts_findings_not_their_combinations(tmp_path):
    from PIL import Image

    from ui import run_view

    rng = np.random.default_rng(0)
    for i in range(5):
        Image.fromarray(rng.integers(0, 255, (32, 32), dtype=np.uint8)).save(tmp_path / f"i{i}.png")
    table = pd.DataFrame({"path": [f"i{i}.png" for i in range(5)], "findings": ["a", "a", "b", "b", "a|b"]})
    table.to_csv(tmp_path / "t.csv", index=False)
    src = SourceConfig(
        kind="csv", csv_path=str(tmp_path / "t.csv"), label_col="findings", label_delimiter="|"
    )
    assert "'a|b' has only 1 image" in run_view.untrainable(src)  # as one class per combination: refused
    assert run_view.untrainable(src, TaskConfig(type="multilabel")) == ""  # findings a and b: 3 images each


def test_a_findings_threshold_moved_on_evaluation_decides_it_on_predict(trained):
    run = trained["multilabel"]
    job_id = register(run["run"], run["config"])
    saved = json.loads((run["run"] / "model/model.json").read_text())["task"]["thresholds"]
    at = app(EVAL).run()
    assert not at.exception, at.exception
    assert "Decision thresholds per finding" in [s.value for s in at.subheader]
    at.selectbox(key="tv_thr_finding").select("line").run()
    slider = at.slider(key=f"tv_thr_{job_id}_line")
    assert slider.value == pytest.approx(saved["line"])  # starts at the run's own, chosen on validation
    at.button(key="tv_rule_default").click().run()
    assert at.slider(key=f"tv_thr_{job_id}_line").value == 0.5
    at.button(key="tv_rule_chosen").click().run()
    assert at.slider(key=f"tv_thr_{job_id}_line").value == pytest.approx(saved["line"])
    assert job_id not in at.session_state["chosen_thresholds"]  # the run's own: Predict keeps the model's
    at.slider(key=f"tv_thr_{job_id}_line").set_value(0.0).run()  # every image has P(line) >= 0
    assert not at.exception, at.exception
    shown = {m.label: m.value for m in at.metric}
    assert shown["Sensitivity"] == "1.000" and shown["Specificity"] in ("0.000", "n/a")
    chosen = at.session_state["chosen_thresholds"][job_id]
    assert chosen["line"] == 0.0 and {f: chosen[f] for f in chosen if f != "line"} == {
        f: pytest.approx(t) for f, t in saved.items() if f != "line"
    }

    def predicted(carried: dict | None) -> pd.DataFrame:
        page = app(PREDICT)
        if carried is not None:
            page.session_state["chosen_thresholds"] = carried
        page.run()
        page.radio(key="pr_input").set_value("folder").run()
        page.text_input(key="pr_folder").input(str(run["data"] / "images")).run()
        page.button(key="pr_go").click().run()
        assert not page.exception, page.exception
        return page, page.dataframe[0].value

    _, own = predicted(None)
    page, moved = predicted({job_id: chosen})
    assert (moved["pred_line"] == 1).all() and moved["threshold"].iloc[0].startswith("effusion=")
    for f in sample_tasks.FINDINGS:
        if f != "line":
            assert (moved[f"pred_{f}"] == own[f"pred_{f}"]).all()
    assert any("line=0.000" in c.value for c in page.caption)


def test_a_finding_added_from_suspect_labels_is_written_in_the_sources_format(trained, tmp_path):
    frame, planted = _planted_findings(trained["multilabel"]["data"])
    _with_oof(trained["multilabel"], tmp_path, frame)
    at = app(EVAL).run()
    at.selectbox(key="tc_sus_finding").select("effusion").run()
    assert not at.exception, at.exception
    path = sorted(planted)[0]
    given = str(frame.set_index("path").loc[path, "label"])
    action = ("remove finding " if "effusion" in given.split("|") else "add finding ") + "effusion"
    at.multiselect(key="tc_sus_act_effusion_items").select(path).run()
    assert at.selectbox(key="tc_sus_act_effusion_action").value == action  # the fix the model suggests
    at.button(key="tc_sus_act_effusion_add").click().run()
    assert "Corrections (1)" in [s.value for s in at.subheader]
    at.button(key="chk_corr_write").click().run()
    assert not at.exception, at.exception
    src = at.session_state["source_config"]
    assert src.label_delimiter == "|" and src.multilabel()
    table = pd.read_csv(src.csv_path, keep_default_na=False).set_index("path")
    name = str(Path(path).relative_to(Path(src.root)).as_posix())
    from core.evaluation import relabel

    expected = relabel.apply(action, given)
    assert table.loc[name, "label"] == (src.no_finding if expected == lab.EMPTY else expected)
    # the run's settings carried
    assert at.session_state["run_config"]["data"]["task"]["type"] == "multilabel"


def test_a_grade_changed_from_suspect_grades_keeps_the_grades_and_the_runs_order(trained, tmp_path):
    data = trained["ordinal"]["data"]
    table = pd.read_csv(data / sample_tasks.GRADES_CSV, keep_default_na=False)
    y = table["grade"].map(sample_tasks.GRADES.index).to_numpy()
    y_model = y.copy()
    y_model[0] = 4 if y[0] < 2 else 0  # image 0: a sure model puts it 2 grades or more from its given grade
    frame = ordinal.predictions_frame(
        [str(data / p) for p in table["path"]], np.eye(5)[y_model] * 0.9 + 0.02, list(sample_tasks.GRADES)
    )
    config = {**trained["ordinal"]["config"]}
    config["data"] = {
        **config["data"],
        "task": {**config["data"]["task"], "order": list(sample_tasks.GRADES)},
    }
    _with_oof({**trained["ordinal"], "config": config}, tmp_path, frame.assign(label=table["grade"]))
    (tmp_path / "run/config.json").write_text(json.dumps(config))
    at = app(EVAL).run()
    assert not at.exception, at.exception
    path, given, to = str(data / table["path"][0]), sample_tasks.GRADES[y[0]], sample_tasks.GRADES[y_model[0]]
    at.multiselect(key="tc_sus_grades_act_items").select(path).run()
    assert at.selectbox(key="tc_sus_grades_act_action").value == f"grade as {to}"  # the model's grade first
    at.button(key="tc_sus_grades_act_add").click().run()
    at.button(key="chk_corr_write").click().run()
    assert not at.exception, at.exception
    src = at.session_state["source_config"]
    written = pd.read_csv(src.csv_path, keep_default_na=False).set_index("path")
    name = Path(path).relative_to(Path(src.root)).as_posix()
    assert written.loc[name, ["label", "old_label"]].tolist() == [to, given] and not src.multilabel()
    task = at.session_state["run_config"]["data"]["task"]
    assert task["type"] == "ordinal" and task["order"] == list(sample_tasks.GRADES)
