"""Checks of the data: planted shortcuts caught, clean sets not flagged, duplicates found, label flips ranked."""

from __future__ import annotations

import json
import time

import numpy as np
import pandas as pd
import pytest

from core import cli
from core.base import paths
from core.base.config import SourceConfig, SplitConfig
from core.data.sources import load_source
from core.data.splits import assign_splits, kfold_splits
from core.data.tables import from_csv
from core.evaluation import checks
from tests.synth import smooth_dataset


def _noise_set(root, n=60, size=32, big_class_size=None, seed=0, copies=False):
    """The scanned smooth_dataset (see tests.synth)."""
    return from_csv(smooth_dataset(root, n, size, big_class_size, seed, copies), group_col="patient_id")


def test_planted_size_shortcut_is_caught(tmp_path):
    ds = _noise_set(tmp_path, big_class_size=40)
    res = checks.shortcut_check(ds.items, checks.image_features(ds.items), n_boot=200)
    assert res["flagged"] and res["auc"]["value"] > 0.95
    assert res["features"][0]["feature"] in ("width", "height", "aspect", "file_size")
    assert "alone separates the classes" in res["warning"] and "scanner, not the disease" in res["warning"]
    assert res["cv"].endswith("grouped by patient")


def test_set_without_shortcut_is_not_flagged(tmp_path):
    ds = _noise_set(tmp_path)
    res = checks.shortcut_check(ds.items, checks.image_features(ds.items), n_boot=300)
    assert not res["flagged"] and res["warning"] == ""
    assert res["auc"]["lo"] <= 0.5 <= res["auc"]["hi"]
    assert {"width", "height", "format", "bits"} <= set(res["constant"])


def test_dicom_tag_matching_the_label_is_caught():
    from core.data.sample import ensure_sample

    ds = load_source(SourceConfig(kind="dicom", root=str(ensure_sample() / "dicom"), group_tag="PatientID"))
    res = checks.shortcut_check(ds.items, checks.image_features(ds.items), n_boot=100)
    assert res["flagged"]
    assert res["features"][0]["feature"] == "StudyDescription"  # the sample writes the class there
    assert res["warning"].startswith("The DICOM tag StudyDescription alone separates the classes")
    text = json.dumps(res, default=str)
    assert "SYN-" not in text and "Synthetic^" not in text  # no patient id or name in what is reported


def _with_copies(tmp_path):
    """Smooth pictures plus planted copies: a JPEG re-save (other class, other patient) and an identical file."""
    return _noise_set(tmp_path, n=40, size=48, copies=True)


def test_planted_duplicates_found_and_flagged(tmp_path):
    ds = _with_copies(tmp_path)
    items = ds.items.assign(
        split=["valid" if r.startswith("b/copy") else "train" for r in ds.items["relpath"]]
    )
    dups = checks.find_duplicates(items, checks.image_features(items))
    found = {frozenset((a, b)) for a, b in zip(dups["a"], dups["b"])}
    assert frozenset((items["relpath"][3], "b/copy_resaved.jpg")) in found
    assert frozenset((items["relpath"][10], "a/copy_same.png")) in found
    assert len(dups) == 2  # noise images are never confused with each other
    resaved = dups[dups["b"] == "b/copy_resaved.jpg"].iloc[0]
    assert resaved["kind"] == "near" and resaved["cross_label"] and resaved["cross_split"] and resaved["leak"]
    assert (dups[dups["b"] == "a/copy_same.png"]["kind"] == "identical file").all()
    summary = checks.duplicate_summary(dups, len(items))
    assert summary["pairs"] == 2 and summary["cross_patient"] == 2 and summary["identical_files"] == 1


def test_keep_duplicates_together_puts_copies_on_one_side(tmp_path):
    ds = _with_copies(tmp_path)
    dups = checks.find_duplicates(ds.items, checks.image_features(ds.items))
    together = checks.keep_duplicates_together(ds.items, dups)
    pairs = [(int(i), int(j)) for i, j in zip(dups["i"], dups["j"])]
    for seed in range(6):
        split = assign_splits(
            together, SplitConfig(method="stratified", valid_pct=0.5, seed=seed, keep_duplicates=True)
        )
        assert all(split["split"][i] == split["split"][j] for i, j in pairs)
        folds = kfold_splits(split, 4, seed=seed)
        fold_of = np.empty(len(split), int)
        for f, (_, va) in enumerate(folds):
            fold_of[va] = f
        assert all(fold_of[i] == fold_of[j] for i, j in pairs)
    plain = [
        assign_splits(ds.items, SplitConfig(method="stratified", valid_pct=0.5, seed=s)) for s in range(6)
    ]
    assert any(p["split"][i] != p["split"][j] for p in plain for i, j in pairs)  # without it they do separate


def test_hash_index_scales_and_finds_every_planted_pair():
    rng = np.random.default_rng(0)
    n = 100_000
    h = rng.integers(0, 2**63, size=n, dtype=np.int64).astype(np.uint64) * np.uint64(2) + np.uint64(1)
    planted = rng.choice(n, size=(50, 2), replace=False)
    for k, (a, b) in enumerate(planted):
        flips = rng.choice(64, size=k % 5, replace=False)
        h[b] = h[a] ^ np.uint64(sum(1 << int(f) for f in flips))
    t0 = time.perf_counter()
    pairs = checks.hash_pairs(h, max_distance=4)
    seconds = time.perf_counter() - t0
    found = {(min(i, j), max(i, j)) for i, j in zip(pairs["i"], pairs["j"])}
    assert {(min(a, b), max(a, b)) for a, b in planted} <= found
    assert (pairs["distance"] <= 4).all() and seconds < 20


def _flipped_oof(n_flip=12, seed=0):
    """Out-of-fold probabilities of a simple model on generated blob images, with some labels flipped."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_val_predict

    rng = np.random.default_rng(seed)
    n, size = 160, 16
    yy, xx = np.mgrid[:size, :size]
    y = np.repeat([0, 1], n // 2)
    imgs = rng.normal(0, 1, (n, size, size))
    imgs[y == 1] += 3 * np.exp(-((yy - 8) ** 2 + (xx - 8) ** 2) / 8)
    flipped = rng.choice(n, n_flip, replace=False)
    given = y.copy()
    given[flipped] = 1 - given[flipped]
    probs = cross_val_predict(
        LogisticRegression(max_iter=500), imgs.reshape(n, -1), given, cv=5, method="predict_proba"
    )
    classes = ["clear", "opacity"]
    df = pd.DataFrame(
        {
            "path": [f"img{i}.png" for i in range(n)],
            "label": np.array(classes)[given],
            "prob_clear": probs[:, 0],
            "prob_opacity": probs[:, 1],
        }
    )
    return df, classes, {f"img{i}.png" for i in flipped}


@pytest.mark.parametrize("use_cleanlab", [True, False])
def test_planted_label_flips_ranked_near_the_top(monkeypatch, use_cleanlab):
    df, classes, flipped = _flipped_oof()
    if not use_cleanlab:
        monkeypatch.setattr(checks, "label_issues", checks._confident_issues)
    ranked = checks.suspect_labels(df, classes)
    k = len(flipped)
    p_at_k = checks.precision_at_k(ranked["path"].tolist(), flipped, k)
    assert p_at_k >= 0.75, p_at_k
    top = ranked.iloc[0]
    assert top["suggested"] != top["label"] and top["issue"]
    assert ranked["rank"].tolist() == list(range(1, len(df) + 1))


def test_corrections_make_a_new_source_and_leave_user_files_alone(tmp_path):
    ds = _noise_set(tmp_path, n=10)
    before = (tmp_path / "labels.csv").read_bytes()
    first, second = ds.items["path"][0], ds.items["path"][1]
    folder, src = checks.write_corrections(
        ds.items,
        [
            checks.Correction(first, checks.EXCLUDED, "duplicate of a/a001.png"),
            checks.Correction(second, "b", "suspect label: model says b (0.93)"),
        ],
        name="fix one",
    )
    assert folder.parent == paths.corrections_dir() and folder.name == "fix-one"
    assert (tmp_path / "labels.csv").read_bytes() == before
    new = load_source(SourceConfig(**src))
    assert len(new.items) == len(ds.items) - 1 and first not in set(new.items["path"])
    assert new.items.set_index("path").loc[second, "label"] == "b"
    assert new.items["group"].str.startswith("anon-").all()  # patient ids are pseudonymised in the copy
    log = pd.read_csv(folder / "changes.csv")
    assert log.to_dict("records")[1] == {
        "path": second,
        "old_label": "a",
        "new_label": "b",
        "why": "suspect label: model says b (0.93)",
    }
    with pytest.raises(ValueError, match="not in this data source"):
        checks.write_corrections(ds.items, [checks.Correction("/elsewhere.png", "a", "x")])


def test_cli_check(tmp_path, capsys):
    _noise_set(tmp_path, n=20, big_class_size=40)
    out = tmp_path / "pairs.csv"
    assert (
        cli.main(
            [
                "check",
                "--csv",
                str(tmp_path / "labels.csv"),
                "--group-col",
                "patient_id",
                "--n-boot",
                "100",
                "--pairs-out",
                str(out),
            ]
        )
        == 0
    )
    res = json.loads(capsys.readouterr().out)
    assert res["shortcut"]["flagged"] and res["duplicates"]["pairs"] == 0 and out.is_file()
    assert res["n_items"] == 40 and "seconds" in res


def test_training_prepare_keeps_duplicates_together(tmp_path):
    from core.base.config import DataConfig, RunConfig
    from core.runs.progress import Progress
    from core.train.prepare import prepare

    csv = smooth_dataset(tmp_path / "data", n=40, size=48, copies=True)
    ns = cli.build_parser().parse_args(
        [
            "train",
            "--csv",
            str(csv),
            "--group-col",
            "patient_id",
            "--keep-duplicates",
            "--split",
            "stratified",
            "--valid-pct",
            "0.5",
        ]
    )
    cfg = cli.run_config(ns)
    assert cfg.data.split.keep_duplicates and isinstance(cfg, RunConfig) and isinstance(cfg.data, DataConfig)
    for seed in range(2):
        cfg.data.split.seed = seed
        run = tmp_path / f"run{seed}"
        items = prepare(cfg, run, Progress(run)).set_index("relpath")
        assert items.loc["b/copy_resaved.jpg", "split"] == items.loc["a/a003.png", "split"]
        assert items.loc["a/copy_same.png", "split"] == items.loc["a/a010.png", "split"]
        assert "near-duplicate pair(s) grouped" in (run / "log.txt").read_text()
