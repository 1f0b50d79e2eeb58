"""AppTest tests of the multi-label and ordinal task types on the explorer, setup, evaluation and predict pages (one
tiny run of each, trained once per module on the synthetic task samples: 32 px, 1 epoch, from scratch)."""

from __future__ import annotations

import json
from pathlib import Path

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
from core.data import sample_tasks
from core.runs import jobs

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
    assert cfg["data"]["task"] == {"type": "ordinal", "order": list(sample_tasks.GRADES), "pos_weight": False}
