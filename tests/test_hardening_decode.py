"""Decode hardening: every failure class through every decode entry point, memory budget, windowing, reasons.

The hostile files come from bench/fault_inject.py (one list of failure classes for the tests and the probe).
"""

from __future__ import annotations

import errno
import logging
import re
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from bench import fault_inject as fi
from core.data import imaging
from core.data.decode_cache import DecodeCache
from core.data.folders import scan_folder
from core.data.imaging import ImageError, apply_window, inspect_image, read_image
from core.runs import jobs
from core.web import uploads

CLASSES = sorted(fi.FAILURE_CLASSES)


@pytest.fixture(scope="module")
def hostile(tmp_path_factory) -> dict[str, Path]:
    """Every failure class, written once for this module (one folder: the scan treats it as one class)."""
    return fi.make_all(tmp_path_factory.mktemp("hostile") / "cls")


def plain(reason: str) -> str:
    """The reason, after checking it is one plain sentence (no reprs, library chains, exception names)."""
    assert not fi.unclear(reason), reason
    return reason


def fake_predictor():
    """A Predictor with a tiny untrained model (no training, no files): exercises the per-file handling only."""
    from core.data.loaders import ImageReader
    from core.evaluation.predict import Predictor
    from core.models.savedmodel import Manifest

    pred = Predictor.__new__(Predictor)
    pred.model = torch.nn.Sequential(
        torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(3, 2)
    ).eval()
    pred.manifest = Manifest.from_dict({"resize": "squish"})
    pred.classes, pred.device = ["a", "b"], torch.device("cpu")
    pred.reader = ImageReader(16, "rgb", None, 0, use_cache=False)
    pred.mean = pred.std = None
    pred.temperature, pred.conformal, pred.set_rule, pred.task = 1.0, None, None, "single"
    return pred


# ---------------------------------------------------------------- item 1: every class x every entry point


@pytest.mark.parametrize("name", CLASSES)
def test_every_failure_class_is_one_plain_image_error_in_every_decode_entry_point(hostile, name, tmp_path):
    path, expected = hostile[name], fi.FAILURE_CLASSES[name][1]
    cache = DecodeCache(tmp_path / "cache")
    calls = {
        "read_image": lambda: read_image(path),
        "inspect_image": lambda: inspect_image(path),
        "read_dicom_array": lambda: (
            imaging.read_dicom_array(path) if path.suffix == ".dcm" else read_image(path)
        ),
        "DecodeCache.get": lambda: cache.get(path, 32),
        "DecodeCache.warm": lambda: cache.warm(path, 32),
        "Predictor.predict_one": lambda: fake_predictor().predict_one(path),
    }
    for where, call in calls.items():
        with pytest.raises(ImageError) as info:
            call()
        assert re.search(expected, str(info.value)), (where, str(info.value))
        plain(str(info.value))
    assert re.search(expected, uploads.check_content(path)), uploads.check_content(path)
    for call in (lambda: inspect_image(path, verify=False), lambda: imaging.dicom_metadata(path)):
        try:  # header-only calls may accept a file whose pixels are broken, but never raise anything else
            call()
        except ImageError as e:
            plain(str(e))


def test_thumbnails_refuse_every_class_with_an_image_error(hostile):
    common = pytest.importorskip("ui.common")
    for path in hostile.values():
        with pytest.raises(ImageError):
            common.thumbnail(str(path), 64)


def test_batch_prediction_and_scan_never_stop_for_one_file(hostile, tmp_path):
    good = tmp_path / "good"
    good.mkdir()
    for i in range(3):
        Image.fromarray(np.roll(fi.gradient(), i * 5)).save(good / f"g{i}.png")
    paths = [str(p) for p in sorted(good.iterdir())] + [str(p) for p in hostile.values()]
    preds, problems = fake_predictor().predict_paths(paths, batch_size=4, workers=2)
    assert len(preds) == 3 and set(problems["path"]) == {str(p) for p in hostile.values()}
    for reason in problems["reason"]:
        plain(reason)
    ds = scan_folder(Path(next(iter(hostile.values()))).parent.parent, workers=2)
    assert len(ds.items) == 0 and len(ds.problems) == len(hostile)
    for reason in ds.problems["reason"]:
        plain(reason)


def test_cli_predict_reports_the_bad_file_and_predicts_the_rest(hostile, tmp_path, monkeypatch, capsys):
    import json

    from core.cli import main
    from core.evaluation import predict

    folder = tmp_path / "in"
    folder.mkdir()
    Image.fromarray(fi.gradient()).save(folder / "ok.png")
    (folder / "jxl.dcm").write_bytes(hostile["jpeg_xl_lossless_dcm"].read_bytes())
    fake = fake_predictor()

    class Loaded(predict.Predictor):
        def __new__(cls, *a, **k):  # "loads" the fake model for any path
            return fake

    monkeypatch.setattr(predict, "Predictor", Loaded)
    model = tmp_path / "model"
    model.mkdir()
    (model / "model.json").write_text("{}")  # only found; the fake Predictor never reads it
    assert main(["predict", "--model", str(model), str(folder)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["predicted"] == 1 and len(out["problems"]) == 1
    assert out["problems"][0]["reason"].startswith("compressed with a method this app cannot decode: JPEG XL")


@pytest.mark.parametrize(
    "uid, name",
    [
        ("1.2.840.10008.1.2.8.1", "Deflated Image Frame Compression (1.2.840.10008.1.2.8.1)"),
        ("1.2.840.10008.1.2.4.110", "JPEG XL Lossless (1.2.840.10008.1.2.4.110)"),
        ("1.2.840.10008.1.2.4.111", "JPEG XL JPEG Recompression (1.2.840.10008.1.2.4.111)"),
        ("1.2.840.10008.1.2.4.112", "JPEG XL (1.2.840.10008.1.2.4.112)"),
        ("1.2.826.0.1.99999.1", "an unknown transfer syntax (1.2.826.0.1.99999.1)"),
    ],
)
def test_unknown_transfer_syntaxes_are_named(tmp_path, uid, name):
    path = fi.write_dicom(fi.dicom_dataset(fi.gradient()), tmp_path / "x.dcm", uid)
    for fn in (read_image, inspect_image, lambda p: inspect_image(p, verify=False)):
        with pytest.raises(
            ImageError, match="^" + re.escape(f"compressed with a method this app cannot decode: {name}")
        ):
            fn(path)
    assert imaging.dicom_metadata(path)["Modality"] == "DX"  # the header itself is still readable


def test_a_library_panic_is_an_image_error(tmp_path, monkeypatch):
    """Rust decoders (pylibjpeg-rle) panic with pyo3's PanicException, which is not an Exception."""

    class PanicException(BaseException):
        pass

    Image.fromarray(fi.gradient()).save(tmp_path / "a.png")

    def panic(*a, **k):
        raise PanicException("index out of bounds: the len is 8192 but the index is 8192")

    monkeypatch.setattr(imaging, "to_8bit", panic)
    with pytest.raises(ImageError, match="its decoder failed on it unexpectedly"):
        read_image(tmp_path / "a.png")


def test_gdcm_only_sees_well_formed_jpeg_streams():
    """A malformed JPEG stream can abort the process inside GDCM: the structure check keeps those away from it."""
    import io

    buf = io.BytesIO()
    Image.fromarray(fi.gradient(40)).save(buf, format="JPEG")
    good = buf.getvalue()
    assert imaging._jpeg_stream_ok(good, 40, 40, 1)
    assert not imaging._jpeg_stream_ok(good, 40, 41, 1)  # size does not match the DICOM header
    assert not imaging._jpeg_stream_ok(good, 40, 40, 3)
    assert not imaging._jpeg_stream_ok(good[:2] + np.random.default_rng(0).bytes(400), 40, 40, 1)
    assert not imaging._jpeg_stream_ok(good[:200], 40, 40, 1)
    assert not imaging._jpeg_stream_ok(b"\xff\xd8\xff\xd9", 40, 40, 1)


# ---------------------------------------------------------------- item 2: memory budget


def test_hostile_9400_rgba_png_is_refused_from_its_header(tmp_path, monkeypatch):
    path = fi.real_png(tmp_path / "rgba.png", 9400, 9400, 8, 6)  # a complete, valid ~350 KB file
    assert path.stat().st_size < 1_000_000
    monkeypatch.setattr(
        Image.Image, "load", lambda self: pytest.fail("decoded pixels of an over-budget image")
    )
    for fn in (read_image, inspect_image, lambda p: inspect_image(p, verify=False)):
        with pytest.raises(
            ImageError,
            match=r"too large to decode safely: it needs about 2,651 MB .* limit of "
            r"1,024 MB \(set XRT_DECODE_MEMORY_MB",
        ):
            fn(path)
    assert "too large to decode safely" in uploads.check_content(path)


def test_budget_comes_from_the_environment(tmp_path, monkeypatch):
    Image.fromarray(np.tile(fi.gradient(), (22, 22))).save(tmp_path / "a.png")  # 704x704 L: ~1.5 MB estimated
    monkeypatch.setenv(imaging.DECODE_MEMORY_ENV, "0.1")
    with pytest.raises(ImageError, match="decode limit of 1 MB"):
        read_image(tmp_path / "a.png")
    ds = fi.dicom_dataset(np.zeros((400, 400), np.uint16))
    with pytest.raises(ImageError, match="too large to decode safely"):
        read_image(fi.write_dicom(ds, tmp_path / "a.dcm"))
    monkeypatch.setenv(imaging.DECODE_MEMORY_ENV, "50")
    assert read_image(tmp_path / "a.png").size == (704, 704)
    monkeypatch.setenv(imaging.DECODE_MEMORY_ENV, "nonsense")
    assert imaging.decode_budget_bytes() == imaging.DEFAULT_DECODE_MEMORY_MB * 1_000_000


def test_concurrent_decodes_share_one_budget(monkeypatch):
    monkeypatch.setenv(imaging.DECODE_MEMORY_ENV, "10")
    budget = imaging._DecodeBudget()
    held, order = threading.Event(), []

    def first():
        with budget.hold(7_000_000):
            held.set()
            time.sleep(0.2)
            order.append("first done")

    def second():
        held.wait()
        with budget.hold(7_000_000):  # 7 + 7 > 10: waits for the first
            order.append("second started")

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(5)
    assert order == ["first done", "second started"] and budget.used == 0
    with budget.hold(3_000_000), budget.hold(9_000_000):  # a nested hold in the same thread is free
        assert budget.used == 3_000_000
    with pytest.raises(ImageError, match="too large to decode safely"):
        with budget.hold(11_000_000):
            pass


def test_upload_checks_four_at_a_time_stay_inside_one_budget(tmp_path, monkeypatch):
    """The web server checks uploads 4 at a time: together they never hold more than the budget."""
    monkeypatch.setenv(
        imaging.DECODE_MEMORY_ENV, "70"
    )  # room for two 1000x1000 RGBA decodes (30 MB each), not 4
    monkeypatch.setattr(imaging, "_BUDGET", imaging._DecodeBudget())
    staged = []
    for i in range(6):
        arr = np.dstack([np.roll(fi.gradient(1000), i)] * 3 + [np.full((1000, 1000), 200, np.uint8)])
        Image.fromarray(arr, "RGBA").save(tmp_path / f"{i}.png", compress_level=1)
        staged.append((tmp_path / f"{i}.png", f"{i}.png"))
    peak, real = [], imaging._over_black

    def watched(im, mode):
        peak.append(imaging._BUDGET.used)
        time.sleep(0.05)  # overlap the decodes
        return real(im, mode)

    monkeypatch.setattr(imaging, "_over_black", watched)
    problems: list[dict] = []
    assert len(uploads._verify(staged, problems)) == 6 and problems == []
    assert len(peak) == 6 and max(peak) <= 70_000_000 and imaging._BUDGET.used == 0


def test_alpha_compositing_in_integers_matches_the_float_formula():
    rng = np.random.default_rng(0)
    rgba = rng.integers(0, 256, (50, 60, 4), dtype=np.uint8)
    out = np.asarray(imaging.to_8bit(Image.fromarray(rgba, "RGBA")))
    ref = np.rint(rgba[..., :3].astype(np.float64) * rgba[..., 3:] / 255.0)
    assert np.array_equal(out, ref.astype(np.uint8))


# ---------------------------------------------------------------- item 4: windowing


@pytest.mark.parametrize("function", ["LINEAR", "LINEAR_EXACT", "SIGMOID"])
def test_apply_window_matches_pydicom_on_a_grid(function):
    from pydicom.dataset import Dataset
    from pydicom.pixels import apply_windowing

    x = np.arange(-60.0, 320.0, 0.25)
    widths = [1, 1.5, 2, 3, 10, 100.5, 255, 1000] + ([0.25, 0.5] if function != "LINEAR" else [])
    for w in widths:
        for c in (0, 0.5, 1, 63.7, 128, 300):
            ds = Dataset()
            ds.BitsStored, ds.PixelRepresentation, ds.PhotometricInterpretation = 8, 0, "MONOCHROME2"
            ds.WindowCenter, ds.WindowWidth, ds.VOILUTFunction = c, w, function
            ref = apply_windowing(x.copy(), ds)
            ours = apply_window(x, c, w, function).astype(np.float64)
            assert np.abs(ours - ref).max() <= 0.5 + 1e-3, (function, w, c)


def test_width_one_linear_window_is_a_threshold_at_centre_minus_half():
    x = np.array([99.0, 99.5, 99.51, 100.0, 101.0])
    assert list(apply_window(x, 100, 1)) == [0, 0, 255, 255, 255]  # the old code gave 128 at 99.5


def test_unusable_file_window_falls_back_to_min_max_with_a_warning(tmp_path, caplog):
    raw = (np.arange(32 * 32) % 200).reshape(32, 32).astype(np.uint16)
    ds = fi.dicom_dataset(raw)
    ds.WindowCenter, ds.WindowWidth = 100, 0.5  # LINEAR needs a width >= 1
    path = fi.write_dicom(ds, tmp_path / "w.dcm")
    with caplog.at_level(logging.WARNING, logger="core.data.imaging"):
        out = np.asarray(read_image(path))
    assert np.array_equal(out, imaging.stretch(raw.astype(np.float32)))  # not constant white
    assert out.min() == 0 and out.max() == 255
    assert any("not usable" in r.getMessage() for r in caplog.records)


def test_user_window_must_be_at_least_one_wide():
    from core.base.config import ConfigError, Window

    Window(40, 1).validate()
    with pytest.raises(ConfigError, match="at least 1"):
        Window(40, 0.5).validate()


def test_blank_images_are_problems_in_scans_and_refused_by_the_training_cache(tmp_path):
    for c in "AB":
        (tmp_path / c).mkdir()
        for i in range(2):
            Image.fromarray(np.roll(fi.gradient(), i + 3 * (c == "B"))).save(tmp_path / c / f"{c}{i}.png")
    Image.new("L", (32, 32), 77).save(tmp_path / "A" / "blank.png")
    ds = fi.dicom_dataset(np.full((16, 16), 900, np.uint16))
    fi.write_dicom(ds, tmp_path / "B" / "flat.dcm")
    scan = scan_folder(tmp_path, workers=1)
    reasons = dict(zip(scan.problems["path"].map(lambda p: Path(p).name), scan.problems["reason"]))
    assert set(reasons) == {"blank.png", "flat.dcm"} and len(scan.items) == 4
    assert all("every pixel of the decoded image has the same value" in r for r in reasons.values())
    with pytest.raises(ImageError, match="same value"):
        DecodeCache(tmp_path / "cache").warm(tmp_path / "A" / "blank.png", 16)
    assert read_image(tmp_path / "A" / "blank.png").getextrema() == (77, 77)  # prediction still sees it


# ---------------------------------------------------------------- item 6: plain reasons


def test_damaged_dicom_is_not_called_not_a_dicom_that_looks_like_dicom(hostile):
    with pytest.raises(ImageError) as info:
        inspect_image(hostile["damaged_meta_dcm"])
    assert "looks like DICOM" not in str(info.value) and "damaged" in str(info.value)


def test_corrupt_compressed_dicom_reason_has_no_library_chain(hostile):
    with pytest.raises(ImageError) as info:
        read_image(hostile["corrupt_jpeg_in_dcm"])
    text = str(info.value)
    assert (
        text
        == "truncated or corrupt pixel data: the JPEG Baseline (Process 1) compressed image cannot be decoded"
    )


def test_unexpected_library_errors_in_batch_paths_are_plain(tmp_path, monkeypatch):
    Image.fromarray(fi.gradient()).save(tmp_path / "a.png")

    def boom(*a, **k):
        raise ValueError("UID is not a transfer syntax.")

    pred = fake_predictor()
    monkeypatch.setattr(
        "core.data.decode_cache.downscale", boom
    )  # fails after the decode, inside the predictor
    preds, problems = pred.predict_paths([str(tmp_path / "a.png")])
    assert len(preds) == 0 and plain(problems["reason"][0]) == UNEXPECTED
    with pytest.raises(ImageError, match=re.escape(UNEXPECTED)):
        pred.predict_one(tmp_path / "a.png")
    monkeypatch.setattr(imaging, "_inspect_raster", boom)  # fails inside a decode entry point
    assert uploads.check_content(tmp_path / "a.png") == UNEXPECTED
    with pytest.raises(ImageError, match=re.escape(UNEXPECTED)):
        inspect_image(tmp_path / "a.png")


UNEXPECTED = "the file could not be read as an image (its decoder failed on it unexpectedly)"


SAFETENSORS_FULL = (
    'Error while serializing: IoError(Os { code: 28, kind: StorageFull, message: "No space left on device" })'
)


def _after_epoch_failure(tmp_path: Path, monkeypatch, error: BaseException) -> BaseException:
    """What a fit's after_epoch raises when the checkpoint write (callbacks.save_state_atomic) fails with `error`."""
    import safetensors.torch
    from fastai.callback.core import Callback

    from core.train import callbacks

    def full(*a, **k):
        raise error

    monkeypatch.setattr(safetensors.torch, "save_file", full)

    class TrainMonitor(Callback):
        def after_epoch(self):
            callbacks.save_state_atomic(torch.nn.Linear(2, 2), tmp_path / "run" / "best.safetensors")

    with pytest.raises(BaseException) as info:
        TrainMonitor()(
            "after_epoch"
        )  # fastai rewords it: "Exception occured in `TrainMonitor` when calling ..."
    assert "Exception occured in `TrainMonitor`" in str(info.value)
    return info.value


def test_full_disk_during_training_is_reported_plainly(tmp_path, monkeypatch):
    from safetensors import SafetensorError

    exc = _after_epoch_failure(tmp_path, monkeypatch, SafetensorError(SAFETENSORS_FULL))
    assert (
        jobs.describe_error(exc)
        == "the disk holding the run folder is full; free some space and start the run again"
    )
    exc = _after_epoch_failure(tmp_path, monkeypatch, OSError(errno.ENOSPC, "No space left on device"))
    assert jobs.describe_error(exc).startswith("the disk holding the run folder is full")
    assert not list((tmp_path / "run").glob("*.tmp*"))  # the half-written checkpoint is gone
    assert jobs.describe_error(ValueError("x")) == "ValueError: x"  # other failures unchanged


# ---------------------------------------------------------------- the probe itself


def test_fault_injection_smoke_has_no_crashes(tmp_path):
    tally = fi.Tally()
    fi.decode_paths(fi.mutants(tmp_path / "m", 30), tally, tmp_path / "cache")
    fi.csv_paths(fi.hostile_csvs(tmp_path / "csv"), tally)
    assert tally.crashed == 0, tally.examples
    assert tally.tried > 150 and tally.refused > 0 and tally.accepted > 0
