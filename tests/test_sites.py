"""Subgroups and sites: DICOM header tags as groups (age bands, pseudonymised sites, never the raw name),
leave-one-site-out folds, and per-site recalibration."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from core.data import dicom_groups
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
