"""The built-in SYNTHETIC sample: deterministic, fast, valid in all three forms, and learnable."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
import pytest
from PIL import Image

from core.base import paths
from core.data import imaging, sample
from core.data.folders import scan_dicom_folder, scan_folder
from core.data.sample import SAMPLE_CLASSES, ensure_sample
from core.data.tables import from_csv


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> tuple[Path, float]:
    """One generated sample shared by the read-only tests, with its generation time."""
    root = tmp_path_factory.mktemp("sample")
    start = time.perf_counter()
    ensure_sample(root)
    return root, time.perf_counter() - start


@pytest.fixture(scope="module")
def root(built) -> Path:
    """The shared sample folder."""
    return built[0]


def files(root: Path) -> dict[str, bytes]:
    """Every generated file (marker included) as {relative path: bytes}."""
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def as_float(path: Path) -> np.ndarray:
    """A sample PNG as floats in [0, 1] (8- or 16-bit)."""
    im = Image.open(path)
    return np.asarray(im, dtype=np.float32) / (4095 if im.mode.startswith("I") else 255)


def test_generation_is_fast_and_deterministic(built, tmp_path):
    root, seconds = built
    assert seconds < 10
    again = ensure_sample(tmp_path / "other")
    a, b = files(root), files(again)
    assert a.keys() == b.keys() and all(a[k] == b[k] for k in a)
    assert sum(k.endswith(".png") for k in a) > 200 and sum(k.endswith(".dcm") for k in a) == 80
    other_seed = files(ensure_sample(tmp_path / "seed1", n_patients=4, seed=1))
    assert other_seed["folder/clear/img0000.png"] != a["folder/clear/img0000.png"]


def test_idempotent_and_regenerates_when_changed(tmp_path):
    root = ensure_sample(tmp_path, n_patients=6)
    png = next((root / "folder" / "opacity").glob("*.png"))
    stamp = png.stat().st_mtime_ns
    assert ensure_sample(tmp_path, n_patients=6) == root and png.stat().st_mtime_ns == stamp
    png.unlink()
    (root / "labels.csv").write_text("garbage")
    (root / sample.MARKER).write_text(json.dumps({"generator": -1}))
    ensure_sample(tmp_path, n_patients=6)
    assert png.is_file() and (root / "labels.csv").read_text().startswith("path,label,patient_id")
    assert json.loads((root / sample.MARKER).read_text())["generator"] == sample.GENERATOR_VERSION
    assert not list(root.glob(".build-*"))


def test_default_root_is_the_app_sample_dir():
    root = ensure_sample(n_patients=4)
    assert root == paths.sample_dir() and (root / "folder" / "clear").is_dir()
    assert "SYNTHETIC" in (root / "README.txt").read_text() and "SYNTHETIC" in sample.__doc__


def test_tables_counts_and_balance(root):
    df = pd.read_csv(root / "labels.csv")
    assert list(df.columns) == ["path", "label", "patient_id"]
    assert len(df) == len(list((root / "folder").rglob("*.png"))) and 200 <= len(df) <= 400
    assert df["label"].value_counts().to_dict() == {c: len(df) // 2 for c in SAMPLE_CLASSES}
    per_patient = df.groupby("patient_id")
    assert per_patient.ngroups == 60 and per_patient.size().between(2, 8).all()
    assert (per_patient["label"].nunique() == 1).all() and df["patient_id"].str.match(r"^SYN-\d{4}$").all()
    assert all((root / p).is_file() for p in df["path"])
    dl = pd.read_csv(root / "dicom_labels.csv")
    assert len(dl) == 80 and all((root / "dicom" / p).is_file() for p in dl["path"])
    assert dl["label"].value_counts().to_dict() == {"clear": 40, "opacity": 40}


def test_some_pngs_are_really_16_bit(root):
    modes = {p.name: Image.open(p).mode for p in (root / "folder").rglob("*.png")}
    wide = [n for n, m in modes.items() if m == "I;16"]
    assert 0.15 < len(wide) / len(modes) < 0.4 and set(modes.values()) == {"L", "I;16"}
    arr = np.asarray(Image.open(next((root / "folder").rglob(wide[0]))))
    assert 255 < arr.max() <= 4095


def test_dicoms_are_valid_and_varied(root):
    dss = [pydicom.dcmread(p) for p in sorted((root / "dicom").rglob("*.dcm"))]
    assert {d.PhotometricInterpretation for d in dss} == {"MONOCHROME1", "MONOCHROME2"}
    assert {int(d.BitsStored) for d in dss} == {8, 12} and {d.Modality for d in dss} == {"DX", "CR"}
    assert {d.SOPClassUID for d in dss} == set(sample.SOP_CLASSES.values())
    twelve = [d for d in dss if d.BitsStored == 12]
    assert all(d.BitsAllocated == 16 and "RescaleSlope" in d and "WindowCenter" in d for d in twelve)
    assert all(d.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian for d in dss)
    assert all(d.PatientID.startswith("SYN-") and str(d.PatientName).startswith("Synthetic^") for d in dss)
    assert all(d.pixel_array.shape == (sample.SIZE, sample.SIZE) for d in dss[:8])
    assert (root / "dicom" / "clear" / "img0000.dcm").read_bytes()[128:132] == b"DICM"


def test_all_three_forms_load_through_sources(root):
    folder = scan_folder(root / "folder")
    table = from_csv(root / "labels.csv", group_col="patient_id")
    dicom = scan_dicom_folder(root / "dicom")
    tagged = scan_dicom_folder(root / "dicom", group_tag="PatientID")
    listed = scan_dicom_folder(root / "dicom", labels_csv=root / "dicom_labels.csv", group_col="patient_id")
    for ds in (folder, table, dicom, tagged, listed):
        assert len(ds.problems) == 0 and ds.classes == list(SAMPLE_CLASSES) and ds.check_trainable() == []
    assert len(folder.items) == len(table.items) and table.summary()["n_groups"] == 60
    assert len(dicom.items) == len(tagged.items) == len(listed.items) == 80
    assert set(dicom.items["kind"]) == {"dicom"} and set(folder.items["width"]) == {sample.SIZE}
    assert tagged.items["group"].str.startswith("anon-").all() and tagged.summary()["n_groups"] == 60
    assert not tagged.items.astype(str).apply(lambda c: c.str.contains("SYN-")).any().any()


def test_monochrome1_and_16_bit_decode_like_the_png(root):
    for path in sorted((root / "dicom").rglob("*.dcm")):
        if pydicom.dcmread(path, stop_before_pixels=True).PhotometricInterpretation != "MONOCHROME1":
            continue
        png = root / "folder" / path.parent.name / f"{path.stem}.png"
        a, b = (np.asarray(imaging.read_image(p), dtype=np.float32).ravel() for p in (path, png))
        assert np.corrcoef(a, b)[0, 1] > 0.9, path.name
    wide = next(p for p in (root / "folder").rglob("*.png") if Image.open(p).mode == "I;16")
    decoded = np.asarray(imaging.read_image(wide), dtype=np.float32)
    assert decoded.mean() < 200 and np.corrcoef(decoded.ravel(), as_float(wide).ravel())[0, 1] > 0.95


def test_learnable_but_not_by_mean_brightness(root):
    linear = pytest.importorskip("sklearn.linear_model")
    df = pd.read_csv(root / "labels.csv")
    raw = np.stack([as_float(root / p).reshape(16, 8, 16, 8).mean((1, 3)).ravel() for p in df["path"]])
    y = (df["label"] == "opacity").to_numpy()
    train = df["patient_id"].str[-4:].astype(int).to_numpy() < 40  # held out by patient
    x = (raw - raw[train].mean(0)) / (raw[train].std(0) + 1e-6)
    model = linear.LogisticRegression(C=0.1, max_iter=2000).fit(x[train], y[train])
    assert model.score(x[~train], y[~train]) > 0.7
    mean = raw.mean(1)
    assert max(((mean > t) == y).mean() for t in np.unique(mean)) < 0.75


def test_the_layout_is_named_once_and_each_form_is_a_source(root):
    assert sorted(p.name for p in root.iterdir() if not p.name.startswith(".")) == sorted(sample.PARTS)
    csv = sample.source(root)
    assert (
        csv.kind == "csv" and Path(csv.csv_path) == sample.labels_csv(root) and csv.group_col == "patient_id"
    )
    assert pd.read_csv(csv.csv_path).columns.tolist() == ["path", "label", sample.GROUP_COLUMN]
    folder, dicom = sample.source(root, "folder"), sample.source(root, "dicom")
    assert Path(folder.root) == sample.folder_root(root) and sorted(
        p.name for p in Path(folder.root).iterdir()
    ) == [*SAMPLE_CLASSES]
    assert Path(dicom.root) == sample.dicom_root(root) and dicom.group_tag == "PatientID"
    with pytest.raises(ValueError, match="unknown sample form"):
        sample.source(root, "zip")


def test_the_app_home_layout_is_named_in_paths(tmp_path, monkeypatch):
    monkeypatch.setenv("XRT_HOME", str(tmp_path))
    assert paths.uploads_dir() == tmp_path / "uploads" and paths.settings_dir() == tmp_path / "settings"
    assert (
        paths.corrections_dir() == tmp_path / "corrections"
        and paths.secret_key_file() == tmp_path / "secret.key"
    )
    assert paths.workers_log() == tmp_path / "logs" / "workers.log" == paths.workers_log(tmp_path)
    assert paths.jobs_db() == tmp_path / "jobs.sqlite3" and paths.runs_dir() == tmp_path / "runs"
