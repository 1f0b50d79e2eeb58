"""Subgroups and sites: DICOM header tags as groups (age bands, pseudonymised sites, never the raw name),
leave-one-site-out folds, and per-site recalibration."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from core.data import dicom_groups, sites
from core.evaluation import evaluate
from tests.test_imaging import dicom, save

SHARED_DICOMS = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "dicom_samples"


@pytest.mark.parametrize(
    ("text", "band"),
    [("065Y", "60-79"), ("039Y", "<40"), ("040Y", "40-59"), ("080Y", "80+"), ("018M", "<40"), ("003W", "<40")]
    + [("010D", "<40"), ("59", "40-59"), ("", ""), ("abc", ""), ("65 Y", "60-79")],
)
def test_dicom_age_strings_become_bands(text, band):
    assert dicom_groups.age_band(text) == band


def test_an_unlisted_tag_is_refused_with_the_allowed_ones():
    with pytest.raises(ValueError, match="dicom:Manufacturer"):
        dicom_groups.tag_of("dicom:PatientName")


def write_dicoms(root: Path, rows: list[dict[str, str]]) -> list[str]:
    """One tiny DICOM per row with the row's header values; returns the paths."""
    root.mkdir(parents=True, exist_ok=True)
    pixels = np.arange(64, dtype=np.uint8).reshape(8, 8)
    return [str(save(dicom(pixels, **r), root / f"im{i}.dcm")) for i, r in enumerate(rows)]


def test_group_table_bands_ages_and_pseudonymises_the_site(tmp_path):
    rows = [
        {
            "Manufacturer": "Acme",
            "PatientAge": "072Y",
            "PatientSex": "F",
            "InstitutionName": "General Hospital",
        },
        {"Manufacturer": "Zeta", "PatientAge": "030Y", "PatientSex": "M", "InstitutionName": "Other Clinic"},
    ]
    paths = write_dicoms(tmp_path / "d", rows) + [str(tmp_path / "missing.dcm")]
    table = dicom_groups.group_table(paths, dicom_groups.columns())
    assert list(table["dicom:Manufacturer"]) == ["Acme", "Zeta", ""]
    assert list(table["dicom:PatientAge"]) == ["60-79", "<40", ""]
    assert list(table["dicom:ViewPosition"][:2]) == ["PA", "PA"]
    sites = list(table["dicom:InstitutionName"])
    assert all(s.startswith("anon-") for s in sites[:2]) and sites[0] != sites[1] and sites[2] == ""
    assert "General Hospital" not in table.to_csv() and "Doe" not in table.to_csv()


def test_shared_dicom_samples_give_group_values_or_blanks():
    if not SHARED_DICOMS.is_dir():
        pytest.skip("../shared/data/dicom_samples is absent")
    paths = sorted(str(p) for p in SHARED_DICOMS.glob("*.dcm"))
    table = dicom_groups.group_table(paths, dicom_groups.columns())
    renamed = table[table["path"].str.endswith("jpeg_renamed_as.dcm")]
    assert (renamed.drop(columns="path") == "").all(axis=None)  # not a DICOM: no values, no error
    assert (table["dicom:BodyPartExamined"] != "").any()
    site = table["dicom:InstitutionName"]
    assert ((site == "") | site.str.startswith("anon-")).all()


def dicom_site_run(tmp_path: Path) -> Path:
    """A finished binary run folder whose test images are DICOMs from two vendors; vendor B's are right less often."""
    rng = np.random.default_rng(3)
    rows, y, right = [], [], []
    for vendor, acc in (("VendorA", 0.95), ("VendorB", 0.55)):
        for i in range(80):
            rows.append(
                {"Manufacturer": vendor, "InstitutionName": f"{vendor} Hospital", "PatientAge": "050Y"}
            )
            y.append(i % 2)
            right.append(rng.random() < acc)
    paths = write_dicoms(tmp_path / "images", rows)
    y_arr = np.array(y)
    p_pos = np.where(np.array(right) == (y_arr == 1), 0.8, 0.2)
    df = evaluate.predictions_frame(paths, y_arr, np.c_[1 - p_pos, p_pos], ["normal", "pneumonia"])
    run = tmp_path / "run"
    run.mkdir()
    df.to_csv(run / "test_predictions.csv", index=False)
    df.to_csv(run / "valid_predictions.csv", index=False)
    (run / "metrics.json").write_text(json.dumps({"type": "single", "classes": ["normal", "pneumonia"]}))
    return run


def test_cli_subgroups_by_dicom_tags_finds_the_vendor_gap_without_a_csv(tmp_path, capsys):
    from core.cli import main

    run = dicom_site_run(tmp_path)
    by = "dicom:Manufacturer,dicom:InstitutionName,dicom:PatientAge"
    assert main(["subgroups", str(run), "--by", by, "--n-boot", "200"]) == 0
    text = capsys.readouterr().out
    out = json.loads(text)
    assert out["gaps"]["dicom:Manufacturer"]["worst"] == "VendorB"
    assert any("excludes 0" in w for w in out["warnings"])
    sites = [g["dicom:InstitutionName"] for g in out["groups"]["dicom:InstitutionName"]]
    assert len(sites) == 2 and all(s.startswith("anon-") for s in sites)
    assert [g["dicom:PatientAge"] for g in out["groups"]["dicom:PatientAge"]] == ["40-59"]
    assert "Hospital" not in text
    assert main(["subgroups", str(run), "--by", "sex"]) == 1  # a CSV column needs --meta
    assert "give a metadata CSV (--meta)" in capsys.readouterr().err


@pytest.mark.slow
def test_evaluation_page_offers_dicom_tags_without_a_csv(tmp_path):
    from core.base.config import RunConfig, to_dict
    from tests.test_app_eval_predict import EVAL, app, register

    run = dicom_site_run(tmp_path)
    register(run, to_dict(RunConfig()))
    at = app(EVAL).run()
    at.multiselect(key="ev_sg_by").select("dicom:Manufacturer").run()
    assert not at.exception, at.exception
    table = next(d.value for d in at.dataframe if "dicom:Manufacturer" in d.value)
    assert list(table["dicom:Manufacturer"]) == ["VendorA", "VendorB"]
    assert any("VendorB has a lower accuracy" in w.value for w in at.warning)


# ---------------------------------------------------------------- leave one site out


def site_table(per_site: dict[str, int], seed: int = 0) -> tuple[pd.DataFrame, np.ndarray]:
    """Items of two classes, two images per patient, patients nested in sites; returns (items, site per row)."""
    rows, site = [], []
    for s, n in per_site.items():
        for i in range(n):
            rows.append(
                {"path": f"/d/{s}/{i}.png", "label": "ab"[i % 2], "group": f"{s}-{i // 2}", "split": ""}
            )
            site.append(s)
    return pd.DataFrame(rows), np.array(site)


def test_site_folds_hold_out_each_site_whole_and_keep_the_test_rows_out():
    items, site = site_table({"north": 24, "south": 30, "east": 40})
    items.loc[items.index[-4:], "split"] = "test"
    folds, names = sites.site_folds(items, site)
    assert names == ["east", "north", "south"]
    for (train, valid), name in zip(folds, names):
        assert set(site[valid]) == {name} and name not in set(site[train])
        assert not set(items["group"].iloc[train]) & set(items["group"].iloc[valid])
        assert "test" not in set(items["split"].iloc[np.r_[train, valid]])
    held = np.sort(np.concatenate([v for _, v in folds]))
    assert list(held) == list(np.flatnonzero(items["split"] != "test"))  # every other row held out once


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (lambda it, s: (it, np.where(s == "south", "north", s)), "at least 2 sites"),
        (
            lambda it, s: (it.iloc[:30], s[:30]),
            "fewer than 20 images cannot be judged held out: south \\(6\\)",
        ),
        (lambda it, s: (it, np.where(np.arange(len(s)) == 3, "", s)), "1 image\\(s\\) have no site"),
        (lambda it, s: (it.assign(group="same"), s), "patient\\(s\\) have images at two sites"),
        (lambda it, s: (it.assign(label=np.where(s == "south", "c", it["label"])), s), "c occur at one site"),
    ],
)
def test_site_folds_are_refused_with_a_plain_reason(change, reason):
    items, site = change(*site_table({"north": 24, "south": 24}))
    with pytest.raises(sites.SplitError, match=reason):
        sites.site_folds(items, site)


def test_site_values_from_a_csv_column_or_a_dicom_tag(tmp_path):
    paths = write_dicoms(
        tmp_path / "d", [{"InstitutionName": "North Hospital"}, {"InstitutionName": "South"}]
    )
    items = pd.DataFrame({"path": paths, "csv_source": ["n", "s"]})
    assert list(sites.site_values(items, "source")) == ["n", "s"]  # renamed csv_ when it clashed
    dicom_sites = sites.site_values(items, "dicom:InstitutionName")
    assert all(s.startswith("anon-") for s in dicom_sites) and dicom_sites[0] != dicom_sites[1]
    with pytest.raises(sites.SplitError, match="no site column 'hospital'"):
        sites.site_values(items, "hospital")


def test_loso_needs_a_site_column():
    from core.base.config import ConfigError, RunConfig

    cfg = RunConfig()
    cfg.data.split.method = "loso"
    with pytest.raises(ConfigError, match="--site-col"):
        cfg.validate()


@pytest.mark.slow
def test_loso_run_trains_one_model_per_site_and_reports_each_with_cis(tmp_path):
    from core.base.config import RunConfig, SourceConfig, to_dict
    from core.evaluation import subgroups
    from core.runs.jobs import run_inline
    from tests.synth import blob_dataset

    root = blob_dataset(tmp_path / "blobs", n_per_class=24)
    table = pd.read_csv(root / "labels.csv")
    table["site"] = np.where(table["patient_id"].str[1:].astype(int) % 2 == 0, "north", "south")
    table.to_csv(root / "labels.csv", index=False)
    cfg = RunConfig(
        source=SourceConfig(kind="csv", csv_path=str(root / "labels.csv"), group_col="patient_id")
    )
    cfg.data.img_size, cfg.data.batch_size, cfg.data.aug.enabled = 32, 16, False
    cfg.data.split.method, cfg.data.split.site_col = "loso", "site"
    cfg.train.pretrained, cfg.train.freeze_epochs, cfg.train.epochs = False, 0, 1
    result = run_inline("train", {"config": to_dict(cfg)}, run_dir=tmp_path / "loso")
    run = tmp_path / "loso"
    assert result["type"] == "kfold" and result["k"] == 2
    rec = result["loso"]
    assert rec["sites"] == ["north", "south"] and rec["patient_level"] is True
    assert [g["n"] for g in rec["per_site"]] == [24, 24]
    assert all(g["accuracy"]["lo"] <= g["accuracy"]["value"] <= g["accuracy"]["hi"] for g in rec["per_site"])
    assert set(rec["spread"]["accuracy"]) == {"min", "max", "sd"}
    oof = pd.read_csv(run / "oof_predictions.csv")
    names = oof["path"].map(lambda p: Path(p).name)
    assert list(oof["site"]) == list(
        names.map(dict(zip(table["path"].map(lambda p: Path(p).name), table["site"])))
    )
    assert json.loads((run / "config.json").read_text())["data"]["split"]["k_folds"] == 2
    from core.evaluation import checklist, report

    page = "\n".join(report._loso_section(rec))
    assert "Leave one site out (2 sites of 'site')" in page and "north" in page and "sd " in page

    part = next(i for i in checklist.checklist(run, 100) if i.topic == "Partitions and patient grouping")
    assert "leave one site out: 2 sites of 'site'" in part.value
    out = subgroups.run_subgroups(run, None, ["site"], n_resamples=100)  # the site column needs no table
    assert out["set"] == "oof" and [g["group"] for g in out["reports"]["site"]["groups"]] == [
        "north",
        "south",
    ]


@pytest.mark.slow
def test_setup_page_asks_for_the_site_column_and_says_why_folds_cannot_be_made():
    from tests.test_app_state import app

    at = app().run()
    at.selectbox(key="src_choice").select("sample").run()
    at.switch_page("pages/2_setup.py").run()
    at.selectbox(key="su_split_method").select("loso").run()
    at.text_input(key="su_site_col").input("hospital").run()
    assert not at.exception, at.exception
    assert any("no site column 'hospital'" in e.value for e in at.error)
    assert any(e.value.startswith("These settings cannot work") for e in at.error)


# ---------------------------------------------------------------- per-site recalibration


def planted_site(n: int, sharpen: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Binary labels drawn from sigmoid(z) and a model that reports sigmoid(sharpen * z) (over-confident if > 1)."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0, 1.5, n)
    y = (rng.random(n) < 1 / (1 + np.exp(-z))).astype(int)
    p = 1 / (1 + np.exp(-sharpen * z))
    return y, np.c_[1 - p, p]


def test_an_over_confident_site_gets_t_above_one_and_lower_ece_on_held_out_rows():
    from core.evaluation import calibration, site_calibration
    from core.models import temperature

    y_a, p_a = planted_site(400, 1.0, seed=1)  # the training site: already calibrated
    y_b, p_b = planted_site(400, 3.0, seed=2)  # a new site where the model is over-confident
    df = evaluate.predictions_frame(
        [f"/x/{i}.png" for i in range(800)], np.r_[y_a, y_b], np.r_[p_a, p_b], ["normal", "pneumonia"]
    )
    sites_of_rows = np.repeat(["north", "south"], 400)
    reports = site_calibration.recalibrate(
        df, ["normal", "pneumonia"], sites_of_rows, base=1.5, n_resamples=200
    )
    south, north = reports["south"], reports["north"]
    assert (
        south["fitted"]
        and south["temperature"] > 2
        and south["divisor"] == pytest.approx(1.5 * south["temperature"])
    )
    assert (
        south["ece"]["after"]["value"] < south["ece"]["before"]["value"] and south["ece"]["change"]["hi"] < 0
    )
    assert north["fitted"] and 0.7 < north["temperature"] < 1.4
    y_new, p_new = planted_site(
        2000, 3.0, seed=9
    )  # fresh rows of the new site: the kept temperature helps there
    fresh = calibration.compare(y_new, p_new, temperature.scale_probs(p_new, south["temperature"]), 200)
    assert fresh["ece"]["after"]["value"] < fresh["ece"]["before"]["value"] / 2
    small = site_calibration.recalibrate(df.head(30), ["normal", "pneumonia"], np.full(30, "tiny"), 1.0)
    assert not small["tiny"]["fitted"] and "fewer than 40" in small["tiny"]["reason"]
    assert "note" in site_calibration.table(small).columns


def test_cross_fitting_never_scores_an_image_with_a_temperature_fitted_on_it(monkeypatch):
    from core.evaluation import site_calibration
    from core.models import temperature

    seen: list[set[int]] = []
    real = temperature.fit_temperature

    def spy(y, probs, fitted_on="valid"):
        seen.append({int(round(v * 1e6)) for v in probs[:, 1]})
        return real(y, probs, fitted_on)

    monkeypatch.setattr(temperature, "fit_temperature", spy)
    y, p = planted_site(200, 3.0, seed=4)
    p[:, 1] += np.arange(200) * 1e-9  # tell rows apart
    p[:, 0] = 1 - p[:, 1]
    out = site_calibration.cross_fitted(y, p)
    changed = ~np.isclose(out[:, 1], p[:, 1])
    assert len(seen) == 5 and changed.all()
    for fitted in seen:  # each fold's fit saw 4/5 of the rows, never all of them
        assert 150 <= len(fitted) <= 170


@pytest.fixture
def site_model(tmp_path):
    """A saved 2-class resnet18 (32 px) with its own temperature 1.5, and a small labelled image folder."""
    from core.models import archs, temperature
    from core.models.savedmodel import Manifest, save_model
    from tests.synth import blob_dataset

    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    t = temperature.Temperature(1.5, "valid", 100, 0.7, 0.6)
    manifest = temperature.with_temperature(
        Manifest(arch="resnet18", classes=["blob", "plain"], img_size=32, mean=[0.5] * 3, std=[0.25] * 3), t
    )
    save_model(archs.create_model("resnet18", 2).eval(), tmp_path / "model", manifest)
    return tmp_path / "model", blob_dataset(tmp_path / "images", n_per_class=8)


def test_evaluate_keeps_a_site_temperature_and_predict_applies_it_by_name_or_pseudonym(
    site_model, monkeypatch, capsys
):
    """Plumbing, not the fit: the site's fit is replaced by a known temperature 2 (a random model cannot decide it)."""
    from core.base.privacy import pseudonym
    from core.cli import main
    from core.evaluation import site_calibration
    from core.evaluation.predict import Predictor
    from core.models import site_temperature
    from core.models.savedmodel import read_manifest

    known = {
        "fitted": True,
        "temperature": 2.0,
        **{
            k: {
                "before": {"value": 0.2, "lo": 0.1, "hi": 0.3},
                "after": {"value": 0.1, "lo": 0.05, "hi": 0.15},
                "change": {"value": -0.1, "lo": -0.2, "hi": -0.01},
            }
            for k in ("ece", "brier")
        },
    }
    monkeypatch.setattr(
        site_calibration, "site_report", lambda y, p, n_resamples=0, seed=0: {"n": len(y), **known}
    )
    model, images = site_model
    args = ["evaluate", "--model", str(model), "--root", str(images), "--no-report"]
    assert main([*args, "--recalibrate-site", "Hospital North"]) == 0
    out = json.loads(capsys.readouterr().out)["site_calibration"]
    assert out["stored"] == ["Hospital North"] and out["sites"][0]["temperature"] == 2.0
    manifest, _ = read_manifest(model)
    assert site_temperature.divisor(manifest, "Hospital North") == pytest.approx(3.0)  # 1.5 (own) x 2 (site)
    paths = sorted(str(p) for p in images.rglob("*.png"))[:6]
    raw = Predictor(model, device="cpu", calibrated=False).predict_paths(paths)[0]
    at_site = Predictor(model, device="cpu", site="Hospital North").predict_paths(paths)[0]
    cols = ["prob_blob", "prob_plain"]
    np.testing.assert_allclose(at_site[cols], temperature_scaled(raw[cols].to_numpy(), 3.0), atol=1e-5)
    site_calibration.store(model, {pseudonym("Dicom Site"): {"n": 50, **known, "divisor": 2.5}})
    assert Predictor(model, device="cpu", site="Dicom Site").temperature == pytest.approx(
        2.5
    )  # found by pseudonym
    with pytest.raises(ValueError, match="no temperature for site 'Elsewhere'"):
        Predictor(model, device="cpu", site="Elsewhere")
    assert main(["predict", "--model", str(model), paths[0], "--site", "Elsewhere"]) == 1
    capsys.readouterr()
    assert main(["predict", "--model", str(model), paths[0], "--site", "Hospital North"]) == 0
    assert json.loads(capsys.readouterr().out)["site"]["temperature"] == pytest.approx(3.0)


def temperature_scaled(probs: np.ndarray, t: float) -> np.ndarray:
    """probs as the model gives them with its logits divided by t."""
    from core.models import temperature

    return temperature.scale_probs(probs, t)


@pytest.mark.slow
def test_a_loso_run_with_one_site_is_refused_before_training(tmp_path):
    from core.base.config import RunConfig, SourceConfig, to_dict
    from core.runs.jobs import run_inline
    from core.train.learner import TrainingError
    from tests.synth import blob_dataset

    root = blob_dataset(tmp_path / "blobs", n_per_class=12, size=16)
    pd.read_csv(root / "labels.csv").assign(site="north").to_csv(root / "labels.csv", index=False)
    cfg = RunConfig(
        source=SourceConfig(kind="csv", csv_path=str(root / "labels.csv"), group_col="patient_id")
    )
    cfg.data.split.method, cfg.data.split.site_col = "loso", "site"
    with pytest.raises(TrainingError, match="leave-one-site-out refused: .*at least 2 sites"):
        run_inline("train", {"config": to_dict(cfg)}, run_dir=tmp_path / "run")
