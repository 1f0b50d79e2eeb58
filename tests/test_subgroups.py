"""Subgroups and sites: a planted performance gap is found with a CI that excludes 0; an absent one is not
flagged; small groups are named; patients, not images, are resampled; metadata joins by path."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from core.evaluation import evaluate, subgroups


def planted_sites(
    acc: dict[str, float], n_patients: int = 120, per_patient: int = 2, seed: int = 0
) -> pd.DataFrame:
    """Binary predictions per site whose decisions are right with the given probability (per patient)."""
    rng = np.random.default_rng(seed)
    frames = []
    for site, a in acc.items():
        y = np.repeat(rng.integers(0, 2, n_patients), per_patient)
        right = np.repeat(rng.random(n_patients) < a, per_patient)
        p_pos = np.where(right == (y == 1), 0.8, 0.2)  # right -> the true side of 0.5
        df = evaluate.predictions_frame(
            [f"/d/{site}/{i}.png" for i in range(len(y))], y, np.c_[1 - p_pos, p_pos], ["normal", "pneumonia"]
        )
        frames.append(
            df.assign(site=site, patient=np.repeat([f"{site}-{i}" for i in range(n_patients)], per_patient))
        )
    return pd.concat(frames, ignore_index=True)


def test_a_planted_gap_is_found_with_a_ci_that_excludes_zero():
    df = planted_sites({"anon-a": 0.92, "anon-b": 0.62, "anon-c": 0.9})
    rep = subgroups.subgroup_report(df, ["normal", "pneumonia"], "site", "patient", n_resamples=300)
    gap = rep["gap"]
    assert gap["worst"] == "anon-b" and gap["best"] in ("anon-a", "anon-c")
    assert 0.15 < gap["value"] < 0.45 and gap["lo"] > 0
    assert any("anon-b has a lower accuracy" in w and "excludes 0" in w for w in rep["warnings"])
    table = subgroups.table(rep)
    assert list(table["site"]) == ["anon-a", "anon-b", "anon-c"] and (table["n"] == 240).all()
    assert (table["patients"] == 120).all() and set(table["judged"]) == {"yes"}


def test_no_gap_is_not_flagged_and_a_small_group_is_named():
    df = planted_sites({"F": 0.85, "M": 0.85}, seed=1)
    small = planted_sites({"X": 0.85}, n_patients=5, seed=2)
    rep = subgroups.subgroup_report(
        pd.concat([df, small]), ["normal", "pneumonia"], "site", "patient", n_resamples=300
    )
    assert rep["gap"]["lo"] <= 0 <= rep["gap"]["hi"]
    assert not any("excludes 0" in w for w in rep["warnings"])
    assert [w for w in rep["warnings"] if w.startswith("site = X: 10 images")]
    assert "X" not in (rep["gap"]["best"], rep["gap"]["worst"])


def test_patient_level_resampling_widens_the_interval_of_correlated_images():
    df = planted_sites({"a": 0.8}, n_patients=40, per_patient=10, seed=3)
    by_patient = subgroups.subgroup_report(df, ["normal", "pneumonia"], "site", "patient", n_resamples=400)
    by_image = subgroups.subgroup_report(df, ["normal", "pneumonia"], "site", None, n_resamples=400)
    width = lambda r: r["groups"][0]["accuracy"]["hi"] - r["groups"][0]["accuracy"]["lo"]  # noqa: E731
    assert width(by_patient) > 1.8 * width(by_image)  # 10 identical images per patient are one observation


def test_metadata_joins_by_path_then_by_unique_file_name():
    df = pd.DataFrame({"path": ["/data/x/a.png", "/data/x/b.png", "/other/c.png"], "label": ["n", "p", "n"]})
    meta = pd.DataFrame({"file": ["/data/x/a.png", "b.png", "sub/c.png"], "sex": ["F", "M", "F"]})
    out = subgroups.attach(df, meta, path_col="file")
    assert out["sex"].tolist() == ["F", "M", "F"] and out["path"].tolist() == df["path"].tolist()


def test_the_report_refuses_an_unknown_column():
    df = planted_sites({"a": 0.8}, n_patients=10)
    with pytest.raises(KeyError):
        subgroups.subgroup_report(df, ["normal", "pneumonia"], "sex", n_resamples=10)


def test_weighted_metrics_agree_with_the_plain_ones_on_a_resample():
    y, p = np.array([0, 0, 1, 1, 1, 0, 1, 0]), np.array([0.1, 0.6, 0.7, 0.4, 0.9, 0.3, 0.6, 0.2])
    probs = np.c_[1 - p, p]
    counts = np.array([[2, 0, 1, 1, 3, 0, 1, 1]], float)  # a resample as how often each image was drawn
    rows = np.repeat(np.arange(8), counts[0].astype(int))
    got = subgroups._weighted_auc(y == 1, p, counts)[0]
    assert got == pytest.approx(evaluate.roc_auc(y[rows], probs[rows]))
    pred = (p >= 0.5).astype(int)
    acc = subgroups._weighted(y, probs, pred, counts, "accuracy")[0]
    assert acc == pytest.approx((pred[rows] == y[rows]).mean())


def fake_site_run(tmp_path):
    """A finished binary run folder (no model) whose test set has a planted site gap, its items.csv with patient
    pseudonyms, and a metadata CSV (file, site); returns (run, metadata CSV)."""
    import json

    df = planted_sites({"anon-a": 0.92, "anon-b": 0.6}, n_patients=60, seed=4)
    run = tmp_path / "run"
    run.mkdir()
    df.drop(columns=["site", "patient"]).to_csv(run / "test_predictions.csv", index=False)
    df.drop(columns=["site", "patient"]).to_csv(run / "valid_predictions.csv", index=False)
    (run / "metrics.json").write_text(json.dumps({"type": "single", "classes": ["normal", "pneumonia"]}))
    items = pd.DataFrame({"relpath": [p.removeprefix("/d/") for p in df["path"]], "group": df["patient"]})
    items.assign(label=df["label"], split="test", kind="image").to_csv(run / "items.csv", index=False)
    meta = tmp_path / "meta.csv"
    df[["path", "site"]].rename(columns={"path": "file"}).to_csv(meta, index=False)
    return run, meta


def test_cli_subgroups_joins_metadata_and_resamples_the_runs_patients(tmp_path, capsys):
    import json

    from core.cli import main

    run, meta = fake_site_run(tmp_path)
    assert (
        main(
            [
                "subgroups",
                str(run),
                "--meta",
                str(meta),
                "--by",
                "site",
                "--path-col",
                "file",
                "--n-boot",
                "200",
            ]
        )
        == 0
    )
    out = json.loads(capsys.readouterr().out)
    assert out["set"] == "test" and out["patient_level"] is True
    assert [g["patients"] for g in out["groups"]["site"]] == [60, 60]
    assert out["gaps"]["site"]["worst"] == "anon-b" and any("excludes 0" in w for w in out["warnings"])
    assert main(["subgroups", str(run), "--meta", str(meta), "--by", "sex", "--path-col", "file"]) == 1


@pytest.mark.slow
def test_evaluation_page_shows_groups_and_the_gap_warning(tmp_path):
    from core.base.config import RunConfig, to_dict
    from tests.test_app_eval_predict import EVAL, app, register

    run, meta = fake_site_run(tmp_path)
    register(run, to_dict(RunConfig()))
    at = app(EVAL).run()
    at.text_input(key="ev_sg_csv").input(str(meta)).run()
    at.selectbox(key="ev_sg_path").set_value("file").run()
    at.multiselect(key="ev_sg_by").select("site").run()
    assert not at.exception, at.exception
    table = next(d.value for d in at.dataframe if "site" in d.value)
    assert list(table["site"]) == ["anon-a", "anon-b"] and list(table["patients"]) == [60, 60]
    assert any("anon-b has a lower accuracy" in w.value for w in at.warning)
    assert any("bootstrap over patients" in c.value for c in at.caption)
