"""The command line: scan prints JSON, bad input exits non-zero with a clear message."""

import json
import subprocess
import sys
from pathlib import Path

from core.cli import main
from core.data.sample import ensure_sample

ROOT = Path(__file__).resolve().parents[1]


def test_scan_sample_csv(tmp_path, capsys):
    root = ensure_sample(tmp_path / "s", n_patients=8)
    assert (
        main(
            [
                "scan",
                "--csv",
                str(root / "labels.csv"),
                "--group-col",
                "patient_id",
                "--problems-out",
                str(tmp_path / "p.csv"),
            ]
        )
        == 0
    )
    out = json.loads(capsys.readouterr().out)
    assert out["n_problems"] == 0 and out["n_classes"] == 2 and out["n_groups"] == 8
    assert (tmp_path / "p.csv").exists()


def test_scan_reports_bad_files(tmp_path, capsys):
    root = ensure_sample(tmp_path / "s", n_patients=4)
    (root / "folder" / "clear" / "broken.png").write_bytes(b"<html>not an image</html>")
    assert main(["scan", "--root", str(root / "folder")]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["n_problems"] == 1 and "broken.png" in out["problems"][0]["path"]


def test_scan_judges_a_multilabel_table_by_its_findings_not_their_combinations(tmp_path, capsys):
    """One image with the pair 'a|b' is no class of its own in a multi-label table: each finding has 6 images."""
    import numpy as np
    import pandas as pd
    from PIL import Image

    rows, rng = [], np.random.default_rng(0)
    for i, label in enumerate(["a"] * 5 + ["b"] * 5 + ["a|b", "No Finding"]):
        Image.fromarray(rng.integers(0, 255, (16, 16), dtype=np.uint8)).save(tmp_path / f"{i}.png")
        rows.append({"path": f"{i}.png", "label": label})
    pd.DataFrame(rows).to_csv(tmp_path / "t.csv", index=False)
    args = ["scan", "--csv", str(tmp_path / "t.csv"), "--root", str(tmp_path)]
    assert main(args) == 0
    assert any("a|b" in r for r in json.loads(capsys.readouterr().out)["refused"])  # one label a row: refused
    assert main([*args, "--label-delimiter", "|"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["refused"] == [] and out["suggested_task"]["task"] == "multilabel"


def test_bad_input_exits_non_zero_without_traceback(tmp_path):
    res = subprocess.run(
        [sys.executable, "-m", "core", "scan", "--root", str(tmp_path / "missing")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 1
    assert res.stderr.startswith("error:") and "Traceback" not in res.stderr


def test_train_refuses_bad_config(tmp_path, capsys):
    root = ensure_sample(tmp_path / "s", n_patients=4)
    assert main(["train", "--csv", str(root / "labels.csv"), "--valid-pct", "1.5"]) == 1
    assert "valid_pct" in capsys.readouterr().err


def _cfg(*args: str):
    """The RunConfig the train command would submit for these options."""
    from core.cli import build_parser, run_config

    return run_config(build_parser().parse_args(["train", "--root", "x", *args]))


def test_every_training_flag_reaches_the_run_config():
    cfg = _cfg(
        "--arch",
        "resnet34",
        "--no-pretrained",
        "--epochs",
        "7",
        "--lr",
        "1e-3",
        "--wd",
        "0.05",
        "--resize",
        "pad",
        "--normalize",
        "dataset",
        "--aug-preset",
        "fastai",
        "--no-flip",
        "--rotate",
        "5",
        "--zoom",
        "1.2",
        "--brightness",
        "0.1",
        "--contrast",
        "0.3",
        "--vflip",
        "--workers",
        "2",
        "--threads",
        "3",
        "--mixed-precision",
        "off",
        "--channels-last",
        "on",
        "--final-weights",
        "best",
        "--patience",
        "2",
        "--bs",
        "16",
        "--img-size",
        "96",
    )
    d, t, a = cfg.data, cfg.train, cfg.data.aug
    assert (t.arch, t.pretrained, t.epochs, t.lr, t.weight_decay) == ("resnet34", False, 7, 1e-3, 0.05)
    assert (d.resize, d.normalize, d.num_workers, d.batch_size, d.img_size) == ("pad", "dataset", 2, 16, 96)
    assert (a.enabled, a.flip, a.vertical_flip, a.rotate, a.zoom, a.warp) == (
        True,
        False,
        True,
        5.0,
        1.2,
        0.2,
    )
    assert (a.brightness, a.contrast) == (0.1, 0.3)
    assert (t.torch_threads, t.mixed_precision, t.channels_last, t.final_weights) == (3, "off", "on", "best")
    assert t.early_stop_patience == 2
    assert _cfg("--aug-preset", "none").data.aug.enabled is False
    assert (
        _cfg().data.aug == _cfg("--aug-preset", "default").data.aug
    )  # the preset named default = the defaults


def test_training_help_states_choices_and_real_defaults(capsys):
    import pytest

    from core.cli import build_parser

    for cmd in ("train", "kfold"):
        with pytest.raises(SystemExit):
            build_parser().parse_args([cmd, "--help"])
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
    train_help, kfold_help = text.split("usage: python -m core kfold")
    assert "resnet18, resnet34" in train_help and "3e-3 from scratch" in train_help
    assert "exactly this many" in train_help and "default 0 = one train/valid split" in train_help
    assert "k-fold cross-validation: k models" in kfold_help and "number of folds (default 5)" in kfold_help
    assert "default 0 = one train/valid split" not in kfold_help
    for flag in ("--resize", "--normalize", "--wd", "--workers", "--threads", "--channels-last", "--warp"):
        assert flag in train_help
