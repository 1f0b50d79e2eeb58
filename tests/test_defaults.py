"""Defaults that fit the data: the user's split folders, the 'did not learn' warning, the LR finder's flat-curve rule."""

from __future__ import annotations

from pathlib import Path

import pytest

from core import cli
from core.data.sources import load_source
from core.data.splits import assign_splits
from tests.test_sources import two_classes


def cli_config(*args: str):
    """The RunConfig the CLI's train command would run."""
    return cli.run_config(cli.build_parser().parse_args(["train", *args]))


@pytest.mark.parametrize("val_name", ["val", "valid", "Val"])
def test_split_folders_are_the_default_split(tmp_path: Path, val_name: str):
    two_classes(tmp_path / "train", n=4)
    two_classes(tmp_path / val_name, n=2)
    two_classes(tmp_path / "test", n=1)
    cfg = cli_config("--root", str(tmp_path), "--no-pretrained")
    assert cfg.data.split.method == "folder"
    items = assign_splits(load_source(cfg.source).items, cfg.data.split)
    from_folder = items["relpath"].str.split("/").str[0].str.lower().replace({"val": "valid"})
    assert (items["split"] == from_folder).all()
    assert items["split"].value_counts().to_dict() == {"train": 8, "valid": 4, "test": 2}


def test_without_a_val_folder_or_when_chosen_the_split_is_stratified(tmp_path: Path):
    two_classes(tmp_path / "train", n=5)
    two_classes(tmp_path / "test", n=1)
    assert cli_config("--root", str(tmp_path)).data.split.method == "stratified"
    (tmp_path / "val").mkdir()
    two_classes(tmp_path / "val", n=2)
    assert cli_config("--root", str(tmp_path), "--split", "stratified").data.split.method == "stratified"
    assert cli_config("--root", str(tmp_path / "train")).data.split.method == "stratified"  # class folders


def planted_run(run_dir: Path, probs_b: list[float], labels: list[str]) -> None:
    """A run folder whose validation predictions are planted: P(B) per item with its true label."""
    import numpy as np

    from core.evaluation.evaluate import predictions_frame
    from core.runs import rundir

    y = np.array([["A", "B"].index(x) for x in labels])
    probs = np.column_stack([1 - np.array(probs_b), probs_b])
    run_dir.mkdir(parents=True, exist_ok=True)
    predictions_frame([f"{i}.png" for i in range(len(y))], y, probs, ["A", "B"]).to_csv(
        rundir.RunFolder(run_dir).predictions("valid"), index=False
    )


def finish(run_dir: Path) -> dict:
    """What training writes last (metrics.json, log.txt) for a planted run; the summary it returns."""
    from core.runs.progress import Progress
    from core.train.outputs import _finish

    summary = {"type": "single", "classes": ["A", "B"]}
    _finish(run_dir, summary, Progress(run_dir))
    return summary


def test_a_one_class_model_is_flagged_in_metrics_log_and_cli(tmp_path: Path, monkeypatch, capsys):
    from core.evaluation import evaluate
    from core.runs import rundir

    labels = ["A"] * 10 + ["B"] * 10
    planted_run(tmp_path / "run", [0.2] * 20, labels)  # everything called A, scores all equal
    summary = finish(tmp_path / "run")
    run = rundir.RunFolder(tmp_path / "run")
    warned = run.read_metrics()["warnings"]
    assert warned == summary["warnings"] == evaluate.run_warnings(run.path)  # the browser's rule and words
    assert "calls 100% of the 20 images 'A'" in warned[0] and "about chance" in warned[1]
    assert warned[-1] == evaluate.ADVICE
    log = run.log.read_text()
    assert all(f"warning: {w}" in log for w in warned)
    monkeypatch.setattr(cli, "_run_job", lambda *a, **k: {"status": "done", "result": summary})
    out = cli.cmd_train(cli.build_parser().parse_args(["train", "--root", str(tmp_path), "--no-pretrained"]))
    assert out["result"]["warnings"] == warned
    assert capsys.readouterr().err.count("warning: ") == len(warned)


def test_a_model_that_learned_has_no_warning(tmp_path: Path):
    from core.runs import rundir

    labels = ["A"] * 10 + ["B"] * 10
    planted_run(
        tmp_path / "run", [0.1 + 0.01 * i for i in range(10)] + [0.6 + 0.01 * i for i in range(10)], labels
    )
    assert finish(tmp_path / "run")["warnings"] == []
    run = rundir.RunFolder(tmp_path / "run")
    assert run.read_metrics()["warnings"] == []
    assert not run.log.is_file() or "warning:" not in run.log.read_text()


# ---------------------------------------------------------------- the LR finder's flat / noisy curve rule

LRS = [1e-7 * 10 ** (8 * i / 39) for i in range(40)]  # 1e-7 .. 10, as the finder steps
FLAT = [1.39 + 0.02 * ((i * 7) % 5 - 2) / 2 for i in range(34)] + [
    1.6,
    2.1,
    3.0,
    4.4,
    6.0,
    9.0,
]  # never falls
FALLS = (
    [0.70] * 18
    + [0.70 - 0.03 * k for k in range(1, 12)]
    + [0.40, 0.42, 0.5, 0.7, 1.0, 1.6, 2.5, 3.0, 4.0, 5.0, 6.0]
)


def test_a_flat_curve_keeps_the_default_learning_rate():
    from core.train.lr_find import curve_verdict

    v = curve_verdict(LRS, FLAT, suggestion=LRS[5], default=3e-3)
    assert not v["usable"] and "too flat" in v["reason"] and v["default_lr"] == 3e-3


def test_a_curve_that_falls_gives_its_suggestion_and_the_start_is_refused():
    from core.train.lr_find import curve_verdict, lr_suggestions

    valley = lr_suggestions(LRS, FALLS, 40)["valley"]
    assert LRS[18] <= valley <= LRS[29]  # fastai's valley lies inside the fall
    assert curve_verdict(LRS, FALLS, suggestion=valley, default=3e-3) == {
        "usable": True,
        "reason": "",
        "default_lr": 3e-3,
    }
    noisy = curve_verdict(LRS, FALLS, suggestion=LRS[3], default=3e-3)  # a point before the loss falls
    assert not noisy["usable"] and "too noisy" in noisy["reason"]
    short = curve_verdict(LRS[:4], FALLS[:4], suggestion=None, default=2e-3)
    assert not short["usable"] and "too few" in short["reason"]
    nan_tail = curve_verdict(LRS, [*FALLS[:30], float("nan")] + FALLS[31:], suggestion=valley, default=3e-3)
    assert nan_tail["usable"]  # the points after the loss became NaN are not read


def test_the_setup_page_offers_no_button_for_a_flat_curve(submitted):
    import json
    import os

    from core.runs.jobs import JobStore
    from tests.test_app_pages import SETUP, app, texts

    at = app(SETUP).run()
    at.button(key="su_lr_find").click().run()
    store = JobStore()
    job = store.claim(os.getpid(), 5)
    verdict = {
        "usable": False,
        "reason": "the curve is too flat: the loss falls only 2% below",
        "default_lr": 3e-3,
    }
    data = {"lrs": LRS, "losses": FLAT, "suggestions": {"valley": 8.6e-5, "steep": 2e-4}, "verdict": verdict}
    (Path(job.run_dir) / "lr_find.json").write_text(json.dumps(data))
    store.finish(job.id, "done")
    at.run()
    assert not at.exception and len(at.get("plotly_chart")) == 1
    assert not [b for b in at.button if b.key and b.key.startswith("su_lr_use_")]
    assert "No learning rate suggested: the curve is too flat" in texts(at) and "default (3e-03)" in texts(at)


# ---------------------------------------------------------------- the schedule planned from the data


def test_the_plan_fits_size_batch_and_epochs_to_the_data():
    from core.base.choices import CPU_DEFAULTS, GPU_DEFAULTS
    from core.base.plan import DataFacts, alternatives, fit_batch, fit_size, plan_schedule

    assert [fit_size(s, 128) for s in (28, 100, 224, 3000, None)] == [32, 96, 128, 128, 128]
    assert [fit_batch(n, 32) for n in (2428, 360, 192, 191, 150, 40)] == [32, 32, 32, 16, 16, 8]
    mnist = plan_schedule(DataFacts(2428, 270, side=28), False, CPU_DEFAULTS, gpu=False)
    assert (mnist.img_size, mnist.batch_size, mnist.epochs, mnist.steps) == (
        32,
        32,
        5,
        5 * 75,
    )  # 375 >= 300 steps
    chest = plan_schedule(DataFacts(360, 120, side=224), False, CPU_DEFAULTS, gpu=False)
    assert (chest.img_size, chest.batch_size, chest.epochs, chest.steps) == (128, 32, 10, 110)  # capped at 10
    assert plan_schedule(DataFacts(360, 120, side=224), False, GPU_DEFAULTS, gpu=True).img_size == 224
    tuned = plan_schedule(DataFacts(2428, 270, side=28), True, CPU_DEFAULTS, gpu=False)  # fine-tuning
    assert (tuned.img_size, tuned.batch_size, tuned.epochs) == (128, 32, 3)
    alt = alternatives(DataFacts(360, 120, side=224), chest, CPU_DEFAULTS, gpu=False)
    assert (alt["quicker"].epochs, alt["quicker"].img_size, alt["better"].epochs) == (5, 128, 20)
    assert alt["better"].img_size == 192 and alt["quicker"].seconds < chest.seconds < alt["better"].seconds
    small = alternatives(DataFacts(2428, 270, side=28), mnist, CPU_DEFAULTS, gpu=False)
    assert small["better"].img_size == 32  # never larger than the sources


def test_default_runs_from_scratch_follow_the_plan_and_choices_override_it(tmp_path: Path):
    from core.base import choices
    from core.base.config import SourceConfig
    from core.base.plan import DataFacts

    src, facts = SourceConfig(kind="folder", root=str(tmp_path)), DataFacts(2428, 270, side=28)
    cfg = choices.build_config({"pretrained": False}, source=src, gpu=False, facts=facts)
    assert (cfg.data.img_size, cfg.data.batch_size, cfg.train.epochs) == (32, 32, 5)
    cfg = choices.build_config({"pretrained": False, "epochs": 2}, source=src, gpu=False, facts=facts)
    assert (cfg.data.img_size, cfg.train.epochs) == (32, 2)
    tuned = choices.build_config({}, source=src, gpu=False, facts=facts)  # fine-tuning keeps its defaults
    assert (tuned.data.img_size, tuned.data.batch_size, tuned.train.epochs) == (128, 32, 3)


def test_cli_plans_from_the_folder_and_shows_the_plan(tmp_path: Path):
    from tests.test_sources import png

    for split, n in (("train", 40), ("val", 8)):
        for c in "AB":
            for i in range(n // 2):
                png(tmp_path / split / c / f"{c}{i}.png", size=(28, 28), value=10 * i)
    cfg = cli_config("--root", str(tmp_path), "--no-pretrained")
    assert (cfg.data.split.method, cfg.data.img_size, cfg.data.batch_size, cfg.train.epochs) == (
        "folder",
        32,
        8,
        10,
    )
    assert cli_config("--root", str(tmp_path), "--no-pretrained", "--img-size", "64").data.img_size == 64
    ns = cli.build_parser().parse_args(["train", "--root", str(tmp_path), "--no-pretrained", "--plan"])
    out = ns.func(ns)
    assert out["data"] == {
        "train_items": 40,
        "valid_items": 8,
        "typical_side_px": 28,
        "classes": 2,
        "folds": 1,
    }
    assert (
        out["schedule"]["epochs"] == 10
        and out["schedule"]["steps"] == 50
        and "from scratch" in out["schedule"]["why"]
    )
    assert out["quicker"]["epochs"] == 5 and out["better"]["epochs"] == 20
    assert (
        out["quicker"]["about_seconds"] <= out["schedule"]["about_seconds"] <= out["better"]["about_seconds"]
    )


def test_the_setup_page_shows_the_schedule_and_applies_an_alternative(submitted):
    from tests.test_app_pages import SETUP, app, texts

    at = app(SETUP).run()
    assert not at.exception and "This schedule:" in texts(at) and "optimiser steps" in texts(at)
    epochs = at.session_state["su_epochs"]
    quicker = at.button(key="su_plan_quicker")
    assert "about" in quicker.help or "epochs" in quicker.label
    quicker.click().run()
    assert not at.exception and at.session_state["su_epochs"] == max(2, epochs // 2)
    assert at.session_state["run_config"]["train"]["epochs"] == max(2, epochs // 2)
    at.button(key="su_plan_planned").click().run()
    assert at.session_state["su_epochs"] == epochs


# ---------------------------------------------------------------- predict scores a folder of class sub-folders


@pytest.mark.slow
def test_predict_scores_a_folder_of_class_subfolders(tmp_path_factory, tmp_path: Path, capsys):
    import json
    import shutil

    import pandas as pd

    from core.cli import main
    from tests.test_predict import trained_run

    run = trained_run(tmp_path_factory.getbasetemp())
    valid = pd.read_csv(run / "valid_predictions.csv").head(12)
    for i, (p, label) in enumerate(zip(valid["path"], valid["label"])):
        shutil.copy(p, _dest(tmp_path, label, i))
    assert main(["predict", "--model", str(run), str(tmp_path / "data")]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["predicted"] == 12 and result["scored"]["n"] == 12 and result["scored_note"] is None
    assert {r["label"] for r in result["rows"]} <= set(valid["label"].astype(str))
    (tmp_path / "data" / "test" / "other").mkdir()
    shutil.copy(valid["path"][0], tmp_path / "data" / "test" / "other" / "y.png")  # not a class: no labels
    assert main(["predict", "--model", str(run), str(tmp_path / "data")]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["scored"] is None and "sub-folders are the model's classes" in result["scored_note"]


def _dest(root: Path, label: str, i: int) -> Path:
    """root/data/test/<label>/x<i>.png, its folder made."""
    dest = root / "data" / "test" / str(label) / f"x{i}.png"
    dest.parent.mkdir(parents=True, exist_ok=True)
    return dest
