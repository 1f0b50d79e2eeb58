"""AppTest tests of the checks of the data: explorer checks and corrections, setup warning, openable confusion matrix."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
from streamlit.testing.v1 import AppTest

from core.base import paths
from core.base.config import RunConfig, SourceConfig, to_dict
from core.evaluation import checks, evaluate
from core.runs import jobs
from tests.synth import smooth_dataset
from ui.common import cell_of_point

ROOT = Path(__file__).resolve().parents[1]
DATASET, SETUP, EVAL = (str(ROOT / f"pages/{p}.py") for p in ("1_dataset", "2_setup", "4_evaluate"))
OWNER = "ab" * 16


def app(page: str) -> AppTest:
    """A fresh session of one page with a fixed owner id."""
    at = AppTest.from_file(page, default_timeout=60)
    at.query_params["owner"] = OWNER
    return at


def alerts(at: AppTest) -> str:
    """Text of every warning, success and info box."""
    return "\n".join(a.value for a in [*at.warning, *at.success, *at.info])


def test_explorer_checks_find_duplicates_and_write_a_corrected_source(tmp_path):
    csv = smooth_dataset(tmp_path / "data", n=20, size=48, copies=True)
    before = csv.read_bytes()
    at = app(DATASET).run()
    at.selectbox(key="src_choice").set_value("csv").run()
    at.text_input(key="src_csv").input(str(csv)).run()
    at.text_input(key="src_groupcol").input("patient_id").run()
    at.button(key="chk_run").click().run()
    assert not at.exception, at.exception
    assert "No shortcut found" in alerts(at) and "different patients, labels or splits" in alerts(at)
    assert next(m.value for m in at.metric if m.label == "Duplicate pairs") == "2"
    resaved = str((tmp_path / "data" / "b" / "copy_resaved.jpg").resolve())
    at.multiselect(key="chk_dup_items").select(resaved).run()
    at.button(key="chk_dup_add").click().run()
    assert any("Corrections (1)" in s.value for s in at.subheader)
    at.text_input(key="chk_corr_name").input("no copies").run()
    at.button(key="chk_corr_write").click().run()
    assert not at.exception, at.exception
    out = paths.corrections_dir() / "no-copies"
    table = pd.read_csv(out / "labels.csv")
    assert "b/copy_resaved.jpg" not in set(table["path"]) and len(table) == 41
    assert pd.read_csv(out / "changes.csv")["new_label"].tolist() == [checks.EXCLUDED]
    assert csv.read_bytes() == before  # the user's table is untouched
    assert at.session_state["source_config"].csv_path == str(out / "labels.csv")


def test_setup_page_warns_of_a_shortcut_also_after_a_reload_and_keeps_duplicates_together(tmp_path):
    csv = smooth_dataset(tmp_path / "data", n=30, big_class_size=40)
    at = app(SETUP)
    at.session_state["source_config"] = SourceConfig(kind="csv", csv_path=str(csv), group_col="patient_id")
    at.run()
    at.button(key="chk_setup_run").click().run()
    assert not at.exception, at.exception
    assert any("alone separates the classes" in w.value for w in at.warning)
    at.checkbox(key="su_keep_dups").check().run()
    assert at.session_state["run_config"]["data"]["split"]["keep_duplicates"] is True
    reloaded = app(SETUP).run()  # a browser refresh: the checks that ran still show their warning
    assert not reloaded.exception, reloaded.exception
    assert any("alone separates the classes" in w.value for w in reloaded.warning)


def kfold_run_with_images(root: Path, flipped: int = 3, one_class: bool = False) -> Path:
    """A finished 2-class 3-fold run folder (no models) whose predictions point at real images; some flipped.

    one_class: the out-of-fold model calls every image "b" (a model that learned nothing).
    """
    csv = smooth_dataset(root / "data", n=15)
    items = pd.read_csv(csv)
    paths = [str((root / "data" / p).resolve()) for p in items["path"]]
    y = (items["label"] == "b").to_numpy().astype(int)
    rng = np.random.default_rng(0)
    p1 = np.clip(np.where(y == 1, 0.85, 0.15) + rng.normal(0, 0.08, len(y)), 0.01, 0.99)
    given = y.copy()
    given[:flipped] = 1  # a000..a002 are filed as "b"; the model is confident they are "a"
    p1[:flipped] = 0.03
    if one_class:
        p1 = rng.uniform(0.6, 0.99, len(y))
    items.assign(label=np.array(["a", "b"])[given]).to_csv(csv, index=False)  # the source says so too
    run = root / "kf"
    run.mkdir()
    evaluate.predictions_frame(
        paths, given, np.stack([1 - p1, p1], 1), ["a", "b"], fold=np.arange(len(y)) % 3
    ).to_csv(run / "oof_predictions.csv", index=False)
    (run / "metrics.json").write_text(
        json.dumps(
            {
                "type": "kfold",
                "k": 3,
                "classes": ["a", "b"],
                "metrics": {"per_fold": [{"fold": f, "best_epoch": 1} for f in range(3)]},
            }
        )
    )
    cfg = RunConfig(source=SourceConfig(kind="csv", csv_path=str(csv), group_col="patient_id"))
    (run / "config.json").write_text(json.dumps(to_dict(cfg)))
    return run


def register(run: Path) -> None:
    """Record a finished run folder in the job store (as the worker would) so the Evaluation page lists it."""
    store = jobs.JobStore()
    job = store.submit(
        "train", {"config": json.loads((run / "config.json").read_text())}, run_dir=run, owner=OWNER
    )
    store.finish(job.id, "done", result={}, only_if_running=False)


def test_evaluation_opens_a_confusion_cell_and_ranks_suspect_labels(tmp_path):
    register(kfold_run_with_images(tmp_path))
    at = app(EVAL).run()
    assert not at.exception, at.exception
    cell = at.selectbox(key="chk_cell")
    assert cell.value == "1,0"  # the only error cell: given b, predicted a (the flipped labels)
    assert any("true b → predicted a (3)" in c.value for c in at.caption)
    assert len(at.image) >= 3
    n_images = len(at.image)
    at.selectbox(key="chk_cell").set_value("0,0").run()
    assert not at.exception and len(at.image) >= n_images
    assert any("3 of 30 images look mislabelled" in c.value for c in at.caption)
    first = str((tmp_path / "data" / "a" / "a000.png").resolve())
    at.multiselect(key="chk_suspect_act_items").select(first).run()
    at.selectbox(key="chk_suspect_act_action").set_value("label as a").run()
    at.button(key="chk_suspect_act_add").click().run()
    at.button(key="chk_corr_write").click().run()
    assert not at.exception, at.exception
    written = at.session_state["source_config"]
    table = pd.read_csv(written.csv_path).set_index("path")
    assert table.loc["a/a000.png", "label"] == "a" and table.loc["a/a000.png", "old_label"] == "b"


def test_suspect_labels_of_a_one_class_model_are_withheld_without_actions(tmp_path):
    register(kfold_run_with_images(tmp_path, one_class=True))
    at = app(EVAL).run()
    assert not at.exception, at.exception
    assert any("Suspect labels are withheld" in w.value and "one class" in w.value for w in at.warning)
    assert not any("images look mislabelled (confident learning" in c.value for c in at.caption)
    assert not [w for w in at.multiselect if w.key == "chk_suspect_act_items"]
    flagged = [w.value for w in at.warning if w.value.startswith("Look before you act on these images")]
    assert flagged and "the out-of-fold model calls" in flagged[0]  # top-loss actions come with a plain flag


def test_a_clicked_chart_point_picks_its_cell():
    classes = ["a", "b", "c"]
    assert cell_of_point({"customdata": [2, 0]}, classes) == "2,0"
    assert cell_of_point({"x": "b", "y": "c"}, classes) == "2,1"  # x = predicted, y = true
    assert cell_of_point({"x": 0.3}, classes) is None
