"""AppTest tests of the Evaluation and Predict pages on one tiny real run (trained once per module)."""

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
from core.base.config import AugConfig, DataConfig, RunConfig, SourceConfig, SplitConfig, TrainConfig, to_dict
from core.evaluation import evaluate
from core.runs import jobs

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
EVAL, PREDICT = str(ROOT / "pages/4_evaluate.py"), str(ROOT / "pages/5_predict.py")
OWNER = "cd" * 16


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict[str, Path]:
    """A tiny finished run on the synthetic sample (32 px, 1 epoch, from scratch, no augmentation)."""
    from core.data.sample import ensure_sample

    base = tmp_path_factory.mktemp("evpred")
    threads = torch.get_num_threads()
    with pytest.MonkeyPatch.context() as mp:  # module fixtures run before the autouse XRT_HOME fixture
        mp.setenv("XRT_HOME", str(base / "home"))
        torch.set_num_threads(1)
        sample = ensure_sample(base / "sample", n_patients=10)
        cfg = RunConfig(
            source=SourceConfig(kind="folder", root=str(sample / "folder")),
            data=DataConfig(img_size=32, aug=AugConfig(enabled=False), split=SplitConfig()),
            train=TrainConfig(pretrained=False, epochs=1, freeze_epochs=0),
        )
        run = paths.runs_dir() / "tiny"
        try:
            jobs.run_inline("train", {"config": to_dict(cfg)}, run_dir=run)
        finally:
            torch.set_num_threads(threads)
    return {"run": run, "sample": sample, "config": to_dict(cfg)}


def register(run: Path, config: dict) -> str:
    """Record a finished run in this test's job store (as the worker would) so the pages list it."""
    store = jobs.JobStore()
    job = store.submit("train", {"config": config}, run_dir=run, owner=OWNER)
    store.finish(job.id, "done", result=json.loads((run / "metrics.json").read_text()), only_if_running=False)
    return job.id


@pytest.fixture
def run_id(trained) -> str:
    """The tiny run, registered in this test's (isolated) job store."""
    return register(trained["run"], trained["config"])


def app(page: str) -> AppTest:
    """A fresh session of one page with a fixed owner id."""
    at = AppTest.from_file(page, default_timeout=120)
    at.query_params["owner"] = OWNER
    return at


def metric(at: AppTest, label: str) -> str:
    """The value of the st.metric with this label."""
    return next(m.value for m in at.metric if m.label == label)


def fake_kfold_run(root: Path) -> Path:
    """A finished 3-class 3-fold run folder without models (no training)."""
    root.mkdir(parents=True)
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 60)
    logits = rng.normal(size=(60, 3))
    logits[np.arange(60), y] += 1.5
    p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    evaluate.predictions_frame(
        [f"/nowhere/{i}.png" for i in range(60)], y, p, ["a", "b", "c"], fold=np.arange(60) % 3
    ).to_csv(root / "oof_predictions.csv", index=False)
    pd.DataFrame(
        [
            {"fold": f, "epoch": e, "train_loss": 1 - e / 5, "valid_loss": 1.1 - e / 6, "accuracy": 0.5}
            for f in range(3)
            for e in range(2)
        ]
    ).to_csv(root / "history.csv", index=False)
    (root / "metrics.json").write_text(
        json.dumps(
            {
                "type": "kfold",
                "k": 3,
                "classes": ["a", "b", "c"],
                "metrics": {"per_fold": [{"fold": f, "best_epoch": 1} for f in range(3)]},
            }
        )
    )
    return root


def test_pages_without_runs_point_to_the_training_page():
    for page in (EVAL, PREDICT):
        at = app(page).run()
        assert not at.exception, at.exception
        assert len(at.title) == 1
        assert any("Training run" in i.value for i in at.info)


def test_evaluate_page_metrics_figures_threshold_and_report(trained, run_id):
    at = app(EVAL).run()
    assert not at.exception, at.exception
    assert at.selectbox(key="ev_run").value == run_id
    table = at.dataframe[0].value
    assert {"roc_auc", "sensitivity", "specificity"} <= set(table["metric"]) and "validation" in table
    assert len(at.get("plotly_chart")) >= 5  # confusion, ROC, PR, calibration, training curves, threshold
    slider = at.slider(key=f"ev_thr_{run_id}")
    slider.set_value(0.0).run()
    assert metric(at, "Sensitivity") == "1.000" and metric(at, "Specificity") == "0.000"
    at.slider(key=f"ev_thr_{run_id}").set_value(1.0).run()
    assert metric(at, "Sensitivity") == "0.000"
    at.button(key="ev_youden").click().run()
    assert not at.exception and 0.0 < at.slider(key=f"ev_thr_{run_id}").value < 1.0
    assert len(at.image) >= 2  # top-losses gallery (+ Grad-CAM pair)
    at.button(key="ev_report").click().run()
    assert not at.exception
    labels = [d.label for d in at.get("download_button")]
    assert "Download report (HTML)" in labels and "Download predictions (CSV)" in labels
    assert (trained["run"] / "report" / "report.html").is_file()


def test_evaluate_external_test_set_side_by_side(trained, run_id):
    at = app(EVAL).run()
    at.text_input(key="ev_ext_root").input(str(trained["sample"] / "folder")).run()
    at.button(key="ev_ext_go").click().run()
    assert not at.exception, at.exception
    assert {"validation", "external test"} <= set(at.dataframe[0].value.columns)


def test_evaluate_kfold_run_shows_folds_and_compares_runs(tmp_path, run_id):
    kfold_id = register(fake_kfold_run(tmp_path / "kf"), to_dict(RunConfig()))
    at = app(EVAL).run()
    assert not at.exception, at.exception
    assert at.selectbox(key="ev_run").value == kfold_id  # the newest run
    assert not at.slider  # multi-class: no threshold
    folds = next(d.value for d in at.dataframe if "fold" in d.value)
    assert {"mean ± sd", "pooled out-of-fold"} <= set(folds["fold"])
    assert "out-of-fold (k-fold)" in at.dataframe[0].value
    at.checkbox(key="ev_compare_on").check().run()
    assert not at.exception, at.exception
    assert any({kfold_id, run_id} <= set(d.value.columns) for d in at.dataframe)
    assert any("different classes" in w.value for w in at.warning)


def test_evaluate_page_warns_when_the_model_predicts_one_class(tmp_path):
    root = tmp_path / "flat"
    root.mkdir()
    y = np.arange(40) % 2
    probs = np.tile([0.8, 0.2], (40, 1))  # "a" for everything: AUC 0.5
    evaluate.predictions_frame([f"/nowhere/{i}.png" for i in range(40)], y, probs, ["a", "b"]).to_csv(
        root / "valid_predictions.csv", index=False
    )
    (root / "metrics.json").write_text(json.dumps({"type": "single", "classes": ["a", "b"], "metrics": {}}))
    register(root, to_dict(RunConfig()))
    at = app(EVAL).run()
    assert not at.exception, at.exception
    warned = [w.value for w in at.warning if "calls 100% of the 40 images 'a' at threshold 0.50" in w.value]
    assert warned and "about chance" in warned[0] and "more epochs" in warned[0]
    assert warned[0].startswith("**Validation:**")


def test_predict_folder_with_a_broken_file(trained, run_id, tmp_path):
    folder = tmp_path / "images"
    shutil.copytree(trained["sample"] / "folder", folder)
    (folder / "clear" / "broken.png").write_bytes(b"<html>not an image</html>")
    at = app(PREDICT).run()
    at.radio(key="pr_input").set_value("folder").run()
    at.text_input(key="pr_folder").input(str(folder)).run()
    at.button(key="pr_go").click().run()
    assert not at.exception, at.exception
    preds, problems = at.dataframe[0].value, at.dataframe[1].value
    assert {"path", "pred", "prob_clear", "prob_opacity", "threshold"} <= set(preds.columns)
    assert len(preds) >= 20 and set(preds["threshold"]) == {0.5}
    assert [Path(p).name for p in problems["path"]] == ["broken.png"]
    assert [d.label for d in at.get("download_button")] == ["Download CSV"]
    assert [  # byte-for-byte copies of the run's own images are its images (an upload has another path too)
        w for w in at.warning if "used by this model's run" in w.value
    ]
    assert len(at.image) == 2  # the image and its Grad-CAM
    at.slider(key=f"pr_thr_{run_id}").set_value(0.0).run()
    assert set(at.dataframe[0].value["pred"]) == {"opacity"}
    assert f"Predicted per class: clear 0, opacity {len(preds)}" in [c.value for c in at.caption]


def test_hosted_mode_has_no_free_text_paths(trained, monkeypatch):
    from core.web import signin

    monkeypatch.setenv("XRT_HOSTED", "1")
    monkeypatch.setenv("XRT_DATA_ROOTS", str(trained["sample"]))
    store = jobs.JobStore()  # hosted: the run belongs to who signed in (not to an owner id in the URL)
    job = store.submit(
        "train", {"config": trained["config"]}, run_dir=trained["run"], owner=signin.owner_for("user:carol")
    )
    store.finish(job.id, "done", only_if_running=False)
    at = app(PREDICT)
    at.session_state["auth_identity"] = "user:carol"
    at.run()
    at.radio(key="pr_input").set_value("folder").run()
    assert not at.exception, at.exception
    assert not [t for t in at.text_input if t.key in ("pr_folder", "pr_root")]
    assert str(trained["sample"] / "folder") in at.selectbox(key="pr_folder_pick").options
    at = app(EVAL)
    at.session_state["auth_identity"] = "user:carol"
    at.run()
    assert not at.exception, at.exception
    assert not [t for t in at.text_input if t.key == "ev_ext_root"]
    assert at.selectbox(key="ev_ext_root_pick").options


def test_predict_names_files_and_grad_cam_picker_follows_the_result(trained, run_id, tmp_path):
    folders = {"a": tmp_path / "srv" / "deep" / "a", "b": tmp_path / "srv" / "deep" / "b"}
    for name, dst in folders.items():
        dst.mkdir(parents=True)
        for src in sorted((trained["sample"] / "folder" / "clear").glob("*.png"))[:3]:
            shutil.copy(src, dst / f"{name}_{src.name}")
    at = app(PREDICT).run()
    at.radio(key="pr_input").set_value("folder").run()
    at.text_input(key="pr_folder").input(str(folders["a"])).run()
    at.button(key="pr_go").click().run()
    assert not at.exception, at.exception
    assert all(
        p.startswith("a_") and "/" not in p for p in at.dataframe[0].value["path"]
    )  # names, no server path
    at.selectbox(key="pr_pick_1").select(2).run()
    at.text_input(key="pr_folder").input(str(folders["b"])).run()
    at.button(key="pr_go").click().run()
    assert not at.exception, at.exception
    pick = at.selectbox(
        key="pr_pick_2"
    )  # a new result: a new picker, at its first row, naming this result's files
    assert pick.value == 0 and all(o.startswith("b_") for o in pick.options)
    first = at.dataframe[0].value["path"].iloc[0]
    assert pick.options[0].startswith(first) and at.image[0].proto.imgs[0].caption == first


def test_predict_preselects_the_run_chosen_on_evaluation(trained, run_id):
    newer = register(trained["run"], trained["config"])  # a newer finished run: the default elsewhere
    at = AppTest.from_file(str(ROOT / "streamlit_app.py"), default_timeout=120)
    at.switch_page("pages/4_evaluate.py").run()
    assert at.selectbox(key="ev_run").value == newer
    at.selectbox(key="ev_run").select(run_id).run()
    at.switch_page("pages/5_predict.py").run()  # the Evaluation page's widget state is dropped here
    assert not at.exception, at.exception
    assert at.selectbox(key="pr_run").value == run_id


def test_predict_follows_the_run_last_evaluated_and_its_threshold(trained, run_id):
    newer = register(trained["run"], trained["config"])
    at = AppTest.from_file(str(ROOT / "streamlit_app.py"), default_timeout=120)
    at.switch_page("pages/5_predict.py").run()
    assert at.selectbox(key="pr_run").value == newer  # nothing evaluated yet: the newest
    at.switch_page("pages/4_evaluate.py").run()
    at.selectbox(key="ev_run").select(run_id).run()
    at.slider(key=f"ev_thr_{run_id}").set_value(0.3).run()
    at.switch_page("pages/5_predict.py").run()
    assert not at.exception, at.exception
    assert at.selectbox(key="pr_run").value == run_id  # the run just evaluated, not the one shown before
    assert at.slider(key=f"pr_thr_{run_id}").value == pytest.approx(0.3)  # with the threshold chosen there


def test_predict_warns_on_the_models_own_training_images(trained, run_id):
    at = app(PREDICT).run()
    at.radio(key="pr_input").set_value("folder").run()
    at.text_input(key="pr_folder").input(str(trained["sample"] / "folder" / "clear")).run()
    at.button(key="pr_go").click().run()
    assert not at.exception, at.exception
    warned = [w.value for w in at.warning if "used by this model's run" in w.value]
    assert warned and "in its train set" in warned[0], [w.value for w in at.warning]


def model_buttons(at: AppTest) -> list:
    """The "Download the model (.zip)" buttons on the page."""
    return [b for b in at.get("download_button") if "Download the model" in str(b.proto.label)]


def test_model_download_on_evaluation_and_training_run_pages(trained, run_id):
    at = app(EVAL).run()
    assert not at.exception, at.exception
    assert len(model_buttons(at)) == 1
    train = app(str(ROOT / "pages/3_train.py"))
    train.session_state["tr_pick"] = run_id
    train.run()
    assert not train.exception, train.exception
    assert len(model_buttons(train)) == 1


def test_kfold_run_without_a_final_model_says_what_is_missing(tmp_path):
    run = fake_kfold_run(tmp_path / "kf")
    (run / "folds" / "fold0").mkdir(parents=True)
    register(run, to_dict(RunConfig()))
    at = app(EVAL).run()
    assert not at.exception, at.exception
    assert not model_buttons(at)
    assert any("k-fold run has one model per fold" in c.value for c in at.caption)


def test_hosted_another_owners_run_offers_no_model_download(trained, monkeypatch):
    from core.web import signin
    from ui import common

    monkeypatch.setenv("XRT_HOSTED", "1")
    monkeypatch.setenv("XRT_DATA_ROOTS", str(trained["sample"]))
    store = jobs.JobStore()
    job = store.submit(
        "train", {"config": trained["config"]}, run_dir=trained["run"], owner=signin.owner_for("user:carol")
    )
    store.finish(job.id, "done", only_if_running=False)
    for who, offered in (("user:carol", 1), ("user:dave", 0)):
        for page in (EVAL, str(ROOT / "pages/3_train.py")):
            at = app(page)
            at.session_state["auth_identity"] = who
            at.session_state["tr_pick"] = job.id  # dave asks for carol's run: it is not his to watch or take
            at.run()
            assert not at.exception, at.exception
            assert len(model_buttons(at)) == offered, (who, page)
    monkeypatch.setattr(common, "owner_id", lambda: signin.owner_for("user:dave"))
    assert not common.own_run(job)  # even handed the job directly, the button is not drawn for another owner


def test_predict_adds_prediction_sets_and_referral_when_asked(trained, run_id):
    at = app(PREDICT).run()
    at.radio(key="pr_input").set_value("folder").run()
    at.text_input(key="pr_folder").input(str(trained["sample"] / "folder")).run()
    at.button(key="pr_go").click().run()
    assert "set" not in at.dataframe[0].value  # off by default
    at.toggle(key="pr_sets").set_value(True).run()
    assert not at.exception, at.exception
    preds = at.dataframe[0].value
    assert {"set", "refer"} <= set(preds.columns) and preds["refer"].dtype == bool
    assert (preds["refer"] == (preds["set"].str.count(r"\|") > 0) | (preds["set"] == "")).all()
    assert any("refer" in c.value and "held-out images" in c.value for c in at.caption)


def test_a_site_temperature_fitted_on_evaluation_is_offered_on_predict(trained, run_id, monkeypatch):
    """Plumbing, not the fit: the site's fit is replaced by a known temperature 2 (a 1-epoch model cannot decide it)."""
    from core.evaluation import site_calibration
    from core.models import savedmodel, site_temperature, temperature

    ci = {"value": 0.1, "lo": 0.05, "hi": 0.15}
    known = {
        "fitted": True,
        "temperature": 2.0,
        **{m: dict.fromkeys(("before", "after", "change"), ci) for m in ("ece", "brier")},
    }
    monkeypatch.setattr(
        site_calibration, "site_report", lambda y, p, n_resamples=0, seed=0: {"n": len(y), **known}
    )
    model = trained["run"] / "model"
    try:
        at = app(EVAL).run()
        at.text_input(key="ev_ext_root").input(str(trained["sample"] / "folder")).run()
        at.button(key="ev_ext_go").click().run()
        at.text_input(key="ev_site_name").input("SITE-7").run()
        at.button(key="ev_site_go").click().run()
        assert not at.exception, at.exception
        assert any("Kept in the model for: SITE-7" in s.value for s in at.success)
        own = temperature.divisor(savedmodel.read_manifest(model)[0])
        assert site_temperature.divisor(savedmodel.read_manifest(model)[0], "SITE-7") == pytest.approx(
            2 * own
        )
        at = app(PREDICT).run()
        at.radio(key="pr_input").set_value("folder").run()
        at.text_input(key="pr_folder").input(str(trained["sample"] / "folder")).run()
        at.button(key="pr_go").click().run()
        plain = at.dataframe[0].value
        assert at.selectbox(key="pr_site").options == ["(the model's own calibration)", "SITE-7"]
        at.selectbox(key="pr_site").set_value("SITE-7").run()
        at.button(key="pr_go").click().run()
        assert not at.exception, at.exception
        cols = [c for c in plain.columns if c.startswith("prob_") and c != "prob_pred"]
        at_site = at.dataframe[0].value
        np.testing.assert_allclose(
            at_site[cols], temperature.scale_probs(plain[cols].to_numpy(), 2.0), atol=1e-4
        )
    finally:
        savedmodel.record(model, site_temperature.KEY, None)


def test_predict_uses_a_kfold_runs_folds_as_one_model(trained, tmp_path):
    from core.evaluation.ensemble import ensemble_ref
    from core.evaluation.predict import Predictor, predict_folder
    from core.models import archs, savedmodel

    run = tmp_path / "kf"
    shutil.copytree(trained["run"], run)
    shutil.copytree(run / "model", run / "folds" / "fold0")
    manifest = savedmodel.read_manifest(run / "model")[0]
    torch.manual_seed(3)  # a second, different member
    model = archs.create_model(manifest.arch, len(manifest.classes), n_in=manifest.n_in)
    savedmodel.save_model(model.eval(), run / "folds" / "fold1", manifest)
    register(run, trained["config"])
    at = app(PREDICT).run()
    label = "all 2 folds as one model (average)"
    assert label in at.selectbox(key="pr_model").options
    at.selectbox(key="pr_model").set_value(label).run()
    assert any("mean of the fold models" in c.value for c in at.caption)
    at.radio(key="pr_input").set_value("folder").run()
    at.text_input(key="pr_folder").input(str(trained["sample"] / "folder")).run()
    at.button(key="pr_go").click().run()
    assert not at.exception, at.exception
    assert at.session_state["pr_result"]["model"] == ensemble_ref(run)
    got = at.session_state["pr_result"]["df"].set_index("path")
    folds = [
        predict_folder(Predictor(run / "folds" / f"fold{i}"), trained["sample"] / "folder")[0] for i in (0, 1)
    ]
    cols = [c for c in got.columns if c.startswith("prob_") and c != "prob_pred"]
    mean = np.mean([f.set_index("path").loc[got.index, cols].to_numpy() for f in folds], axis=0)
    np.testing.assert_allclose(got[cols].to_numpy(), mean, atol=1e-5)
    assert not [t for t in at.toggle if t.key == "pr_sets"]  # sets are calibrated for one model, not offered
