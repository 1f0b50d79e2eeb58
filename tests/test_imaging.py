"""core.data.imaging: raster modes, bad files, bombs, DICOM pipeline, PHI, decode cache (all offline, small)."""

from __future__ import annotations

import collections
import hashlib
import logging
import os
import struct
import warnings
import zlib
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image, ImageFile
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

from core.base.config import ConfigError, Window
from core.data import imaging
from core.data.decode_cache import DecodeCache
from core.data.imaging import ImageError, apply_window, inspect_image, read_dicom_array, read_image

PHI = ("Doe^Jane", "Doe", "Jane", "MRN123", "19800101")


# ---------------------------------------------------------------- helpers


def arr_of(im: Image.Image) -> np.ndarray:
    """Pixels of a PIL image as an int array."""
    return np.asarray(im).astype(np.int64)


def forged_png(path: Path, width: int, height: int) -> Path:
    """A tiny PNG whose header claims width x height pixels."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    body = chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + body)
    return path


def noise_image(path: Path, size: int = 96, fmt: str | None = None) -> Path:
    """A noisy RGB image (compresses badly, so a cut file is really truncated)."""
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(path, format=fmt)
    return path


def dicom(
    arr: np.ndarray, photometric: str = "MONOCHROME2", bits_stored: int | None = None, **attrs
) -> Dataset:
    """An uncompressed Secondary Capture dataset around `arr` (HxW, FxHxW or HxWx3), with PHI in it."""
    ds = Dataset()
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = generate_uid()
    ds.Modality, ds.BodyPartExamined, ds.ViewPosition = "DX", "CHEST", "PA"
    ds.PatientName, ds.PatientID, ds.PatientBirthDate = "Doe^Jane", "MRN123", "19800101"
    ds.InstitutionName, ds.AccessionNumber = "General Hospital", "ACC999"
    colour = arr.ndim == 3 and arr.shape[-1] == 3
    ds.SamplesPerPixel = 3 if colour else 1
    if colour:
        ds.PlanarConfiguration = 0
    ds.PhotometricInterpretation = photometric
    ds.Rows, ds.Columns = arr.shape[-3:-1] if colour else arr.shape[-2:]
    if arr.ndim == 3 and not colour:
        ds.NumberOfFrames = arr.shape[0]
    bits = arr.dtype.itemsize * 8
    ds.BitsAllocated, ds.BitsStored = bits, bits_stored or bits
    ds.HighBit, ds.PixelRepresentation = ds.BitsStored - 1, int(arr.dtype.kind == "i")
    ds.PixelData = np.ascontiguousarray(arr).tobytes()
    for k, v in attrs.items():
        setattr(ds, k, v)
    return ds


def save(ds: Dataset, path: Path, meta: bool = True, implicit: bool = False) -> Path:
    """Write with file meta (DICOM file format) or as a bare dataset without preamble/meta."""
    if meta:
        ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.save_as(path, enforce_file_format=True)
    else:
        ds.save_as(path, implicit_vr=implicit, little_endian=True, enforce_file_format=False)
    return path


def bundled(name: str) -> Path:
    """A file bundled with pydicom (skip when this pydicom lacks it)."""
    path = get_testdata_file(name)
    if path is None:
        pytest.skip(f"pydicom has no bundled {name}")
    return Path(path)


# ---------------------------------------------------------------- raster modes


def test_exif_orientation_is_applied(tmp_path):
    img = Image.new("L", (40, 20), 0)
    img.paste(255, (0, 0, 20, 20))  # left half white
    exif = Image.Exif()
    exif[0x0112] = 6  # display rotated 90 degrees clockwise
    img.save(tmp_path / "o.png", exif=exif)
    out = arr_of(read_image(tmp_path / "o.png"))
    assert out.shape == (40, 20)  # height 40, width 20 after rotation
    assert out[:20].mean() == 255 and out[20:].mean() == 0  # the left half is now on top


def _gradient16(lo: int = 1000, hi: int = 3000) -> np.ndarray:
    """A 12-bit-range ramp stored in 16 bits."""
    return np.linspace(lo, hi, 32 * 64).reshape(32, 64).astype(np.uint16)


@pytest.mark.parametrize("kind", ["png_I;16", "tiff_I;16B", "tiff_I", "tiff_F"])
def test_high_bit_depth_grey_is_stretched_min_max(tmp_path, kind):
    a = _gradient16()
    if kind == "png_I;16":
        im, path = Image.fromarray(a), tmp_path / "g.png"
    elif kind == "tiff_I;16B":
        im, path = Image.frombytes("I;16B", (64, 32), a.astype(">u2").tobytes()), tmp_path / "g.tif"
    elif kind == "tiff_I":
        im, path = Image.fromarray(a.astype(np.int32) - 2000), tmp_path / "g.tif"
    else:
        im, path = Image.fromarray(a.astype(np.float32) / 1000), tmp_path / "g.tif"
    im.save(path)
    assert Image.open(path).mode == kind.split("_")[1]
    out = read_image(path)
    assert out.mode == "L"
    expected = np.rint((a.astype(np.float64) - a.min()) / (a.max() - a.min()) * 255)
    assert np.abs(arr_of(out) - expected).max() <= 1  # full 0..255 range, not clamped, not >> 8
    assert arr_of(out).min() == 0 and arr_of(out).max() == 255
    assert (arr_of(out) == 255).mean() < 0.01


@pytest.mark.filterwarnings("error")
def test_constant_16bit_and_float_images_map_to_zero(tmp_path):
    Image.fromarray(np.full((8, 8), 3000, np.uint16)).save(tmp_path / "c.png")
    f = np.full((8, 8), np.nan, np.float32)
    Image.fromarray(f).save(tmp_path / "nan.tif")
    assert arr_of(read_image(tmp_path / "c.png")).max() == 0
    assert arr_of(read_image(tmp_path / "nan.tif")).max() == 0


def test_float_image_ignores_nan_and_inf(tmp_path):
    f = np.linspace(-1, 1, 64, dtype=np.float32).reshape(8, 8)
    f[0, 0], f[0, 1] = np.nan, np.inf
    Image.fromarray(f).save(tmp_path / "f.tif")
    out = arr_of(read_image(tmp_path / "f.tif"))
    assert out[0, 0] == 0 and out.max() == 255 and out[-1, -1] == 255


def test_cmyk_becomes_rgb(tmp_path):
    Image.new("CMYK", (8, 8), (255, 0, 0, 0)).save(tmp_path / "c.tif")
    Image.new("CMYK", (8, 8), (0, 0, 0, 0)).save(tmp_path / "w.jpg")
    cyan, white = read_image(tmp_path / "c.tif"), read_image(tmp_path / "w.jpg")
    assert cyan.mode == white.mode == "RGB"
    assert tuple(cyan.getpixel((3, 3))) == (0, 255, 255)
    assert min(white.getpixel((3, 3))) > 240


def test_palette_grey_stays_l_and_colour_becomes_rgb(tmp_path):
    idx = np.arange(16, dtype=np.uint8).reshape(4, 4)
    grey = Image.fromarray(idx, "P")
    grey.putpalette([v for i in range(256) for v in (i * 16 % 256,) * 3])
    grey.save(tmp_path / "g.png")
    colour = Image.fromarray(idx, "P")
    colour.putpalette([v for i in range(256) for v in (255, i, 0)])
    colour.save(tmp_path / "c.png")
    g, c = read_image(tmp_path / "g.png"), read_image(tmp_path / "c.png")
    assert g.mode == "L" and arr_of(g)[0, 1] == 16
    assert c.mode == "RGB" and tuple(c.getpixel((1, 0))) == (255, 1, 0)


def test_alpha_is_composited_over_black(tmp_path):
    la = np.stack([np.full((1, 3), 200, np.uint8), np.array([[0, 128, 255]], np.uint8)], -1)
    Image.fromarray(la, "LA").save(tmp_path / "la.png")
    rgba = np.zeros((1, 2, 4), np.uint8)
    rgba[0, 0], rgba[0, 1] = (255, 100, 0, 255), (255, 100, 0, 0)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    g, c = read_image(tmp_path / "la.png"), read_image(tmp_path / "rgba.png")
    assert g.mode == "L" and list(arr_of(g)[0]) == [0, 100, 200]
    assert (
        c.mode == "RGB"
        and tuple(c.getpixel((0, 0))) == (255, 100, 0)
        and tuple(c.getpixel((1, 0))) == (0, 0, 0)
    )


def test_one_bit_becomes_l_and_grey_rgb_stays_rgb(tmp_path):
    bw = Image.new("1", (8, 8), 0)
    bw.paste(1, (0, 0, 4, 8))
    bw.save(tmp_path / "bw.png")
    Image.new("RGB", (8, 8), (90, 90, 90)).save(tmp_path / "rgb.png")
    out = read_image(tmp_path / "bw.png")
    assert out.mode == "L" and set(np.unique(arr_of(out))) == {0, 255}
    assert read_image(tmp_path / "rgb.png").mode == "RGB"


def test_multipage_tiff_frame_choice(tmp_path):
    pages = [Image.new("L", (8, 8), v) for v in (10, 20, 30)]
    pages[0].save(tmp_path / "m.tif", save_all=True, append_images=pages[1:])
    info = inspect_image(tmp_path / "m.tif")
    assert (info.frames, info.kind, info.mode, info.bits) == (3, "image", "L", 8)
    assert arr_of(read_image(tmp_path / "m.tif"))[0, 0] == 10
    assert arr_of(read_image(tmp_path / "m.tif", frame=2))[0, 0] == 30
    with pytest.raises(ImageError, match="frame 3 out of range"):
        read_image(tmp_path / "m.tif", frame=3)


def test_inspect_raster_reports_header_fields(tmp_path):
    Image.fromarray(_gradient16()).save(tmp_path / "g.png")
    info = inspect_image(tmp_path / "g.png")
    assert (info.width, info.height, info.kind, info.mode, info.frames, info.bits) == (
        64,
        32,
        "image",
        "I;16",
        1,
        16,
    )


# ---------------------------------------------------------------- bad raster files and bombs


@pytest.mark.parametrize(
    "content, reason",
    [
        (b"", "empty file"),
        (b"<!DOCTYPE html><html><body>404 Not Found</body></html>", r"not an image \(looks like HTML\)"),
        (b"MZ\x90\x00\x03\x00\x00\x00" + b"\x00" * 200, r"not an image \(looks like a Windows executable\)"),
        (bytes(np.random.default_rng(1).integers(0, 256, 4096, dtype=np.uint8)), "not an image"),
        (b"%PDF-1.7\n...", r"looks like PDF"),
    ],
)
def test_non_images_are_refused_with_a_reason(tmp_path, content, reason):
    path = tmp_path / "x.png"
    path.write_bytes(content)
    for fn in (read_image, inspect_image):
        with pytest.raises(ImageError, match=reason):
            fn(path)


@pytest.mark.parametrize("fmt, name", [("JPEG", "t.jpg"), ("PNG", "t.png")])
def test_truncated_images_are_refused(tmp_path, fmt, name):
    path = noise_image(tmp_path / name, fmt=fmt)
    path.write_bytes(path.read_bytes()[: path.stat().st_size * 6 // 10])
    assert inspect_image(path, verify=False).width == 96  # the header alone is fine
    with pytest.raises(ImageError, match="truncated or corrupt image data"):
        inspect_image(path, verify=True)
    with pytest.raises(ImageError, match="truncated or corrupt image data"):
        read_image(path)
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


def test_missing_file_and_folder(tmp_path):
    with pytest.raises(ImageError, match="file not found"):
        read_image(tmp_path / "nope.png")
    with pytest.raises(ImageError, match="folder"):
        read_image(tmp_path)


def test_decompression_bomb_warning_is_an_error_without_changing_global_filters(tmp_path):
    before = list(warnings.filters)
    path = forged_png(tmp_path / "bomb.png", 10000, 9000)  # > Pillow's 89.5 Mpx warning limit
    with pytest.raises(ImageError, match="too large"):
        read_image(path)
    with pytest.raises(ImageError, match="too large"):
        inspect_image(path, verify=False)
    assert list(warnings.filters) == before


def test_max_pixels_is_checked_before_decoding(tmp_path, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)  # Pillow's own guard off: ours must still hold
    with pytest.raises(ImageError, match="too large: 13000x13000"):
        read_image(forged_png(tmp_path / "big.png", 13000, 13000))
    Image.new("L", (20, 20)).save(tmp_path / "small.png")
    monkeypatch.setattr(imaging, "MAX_PIXELS", 100)
    with pytest.raises(ImageError, match="too large: 20x20"):
        read_image(tmp_path / "small.png")


# ---------------------------------------------------------------- window formula


def test_apply_window_follows_dicom_linear_formula():
    c, w = 40.0, 400.0
    lo, hi = c - 0.5 - (w - 1) / 2, c - 0.5 + (w - 1) / 2
    x = np.array([lo - 100, lo, hi + 0.01, hi + 100, c - 0.5, (lo + hi) / 2 + 50])
    out = apply_window(x, c, w)
    assert out.dtype == np.uint8
    assert list(out[:4]) == [0, 0, 255, 255]
    assert out[4] == 128  # the centre maps to mid-grey
    assert out[5] == round(((x[5] - (c - 0.5)) / (w - 1) + 0.5) * 255)
    with pytest.raises(ValueError):
        apply_window(x, c, 0)


def test_apply_window_sigmoid_and_linear_exact():
    x = np.array([0.0, 100.0, 200.0])
    assert list(apply_window(x, 100, 200, "SIGMOID")) == [30, 128, 225]  # 255 / (1 + exp(-4 (x - c) / w))
    assert list(apply_window(x, 100, 200, "LINEAR_EXACT")) == [0, 128, 255]


# ---------------------------------------------------------------- DICOM pipeline (synthetic files)


def _mono1(tmp_path: Path, **attrs) -> tuple[Path, np.ndarray]:
    """MONOCHROME1 16-bit (12 stored) with rescale slope/intercept and a window."""
    raw = (np.arange(32 * 48).reshape(32, 48) * 2 % 4096).astype(np.uint16)
    attrs = {"RescaleSlope": 2, "RescaleIntercept": -1024, "WindowCenter": 1000, "WindowWidth": 4000} | attrs
    return save(dicom(raw, "MONOCHROME1", 12, **attrs), tmp_path / "m1.dcm"), raw


def test_dicom_rescale_window_and_monochrome1_inversion(tmp_path):
    path, raw = _mono1(tmp_path)
    arr, ds = read_dicom_array(path)
    modality = raw.astype(np.float32) * 2 - 1024
    assert arr.dtype == np.float32 and np.array_equal(arr, modality)
    out = arr_of(read_image(path))
    assert np.array_equal(out, 255 - apply_window(modality, 1000, 4000).astype(np.int64))
    hi, lo = np.unravel_index(raw.argmax(), raw.shape), np.unravel_index(raw.argmin(), raw.shape)
    assert out[hi] < out[lo]  # MONOCHROME1: high values display dark
    assert ds.PhotometricInterpretation == "MONOCHROME1"


def test_user_window_overrides_file_window(tmp_path):
    path, raw = _mono1(tmp_path)
    modality = raw.astype(np.float32) * 2 - 1024
    out = arr_of(read_image(path, window=Window(center=0, width=500)))
    assert np.array_equal(out, 255 - apply_window(modality, 0, 500).astype(np.int64))


def test_auto_and_full_windows_for_xrays(tmp_path):
    raw = np.full((40, 50), 1000, np.uint16)
    raw[:, 25:] = 3000  # two tissues, and one saturated marker pixel far outside them
    raw[0, 0] = 65000
    path = save(dicom(raw, WindowCenter=40, WindowWidth=400), tmp_path / "dx.dcm")  # a CT-like file window
    assert set(np.unique(arr_of(read_image(path)))) == {255}  # the file's window: all white
    auto = arr_of(read_image(path, window=Window(mode="auto")))
    assert auto[5, 5] == 0 and auto[5, 40] == 255 and auto[0, 0] == 255  # percentiles: the marker is clipped
    full = arr_of(read_image(path, window=Window(mode="full")))
    assert (
        full[0, 0] == 255 and full[5, 5] == 0 and 0 < full[5, 40] < 20
    )  # min-max: the marker takes the range
    ramp = np.linspace(0, 1000, 10_000, dtype=np.float32).reshape(100, 100)
    out = imaging.percentile_window(ramp)
    assert out.min() == 0 and out.max() == 255 and (out == 0).mean() == pytest.approx(0.01, abs=0.002)
    assert not imaging.percentile_window(np.full((4, 4), 7.0)).any()  # flat: min-max's zero image
    with pytest.raises(ConfigError):
        Window(mode="lung").validate()
    Window(mode="auto", width=0).validate()  # only a fixed window needs a width


def test_cache_key_tells_window_modes_apart(tmp_path):
    path, _ = _mono1(tmp_path)
    cache = DecodeCache(tmp_path / "cache")
    keys = [cache.key(path, 16, w) for w in (None, Window(mode="auto"), Window(mode="full"), Window(0, 100))]
    assert len(set(keys)) == 4
    assert cache.key(path, 16, Window(0, 100, "fixed")) == keys[3]  # fixed windows keep their key
    a, b = cache.get(path, 16, Window(mode="auto")), cache.get(path, 16, Window(mode="full"))
    assert cache.misses == 2 and not np.array_equal(arr_of(a), arr_of(b))


def test_multivalued_window_uses_the_first_and_no_window_means_min_max(tmp_path):
    raw = (np.arange(32 * 32).reshape(32, 32) % 4096).astype(np.uint16)
    multi = save(dicom(raw, WindowCenter=[100, 2000], WindowWidth=[200, 4000]), tmp_path / "w.dcm")
    plain = save(dicom(raw), tmp_path / "p.dcm")
    assert np.array_equal(arr_of(read_image(multi)), apply_window(raw, 100, 200).astype(np.int64))
    out = arr_of(read_image(plain))
    assert out.min() == 0 and out.max() == 255 and out[0, 0] == 0


def test_voi_lut_sequence_is_applied(tmp_path):
    raw = (np.arange(32 * 64).reshape(32, 64) % 4096).astype(np.uint16)
    item = Dataset()
    item.LUTDescriptor = [4096, 0, 16]
    item.add_new("LUTData", "US", list(range(4095, -1, -1)))  # an inverting LUT
    path = save(dicom(raw, bits_stored=12, VOILUTSequence=[item]), tmp_path / "voi.dcm")
    out = arr_of(read_image(path))
    assert np.abs(out - (4095 - raw.astype(np.int64)) * 255 / 4095).max() <= 1


def test_multiframe_frame_choice_and_range(tmp_path):
    frames = np.zeros((3, 16, 16), np.uint8)
    for i in range(3):
        frames[i, i * 4 : i * 4 + 4] = 200  # a bright band whose row depends on the frame
    path = save(dicom(frames), tmp_path / "mf.dcm")
    info = inspect_image(path)
    assert (info.frames, info.kind) == (3, "dicom")
    for i in range(3):
        out = arr_of(read_image(path, frame=i))
        assert out[i * 4 : i * 4 + 4].min() == 255 and out.sum() == 255 * 64
    with pytest.raises(ImageError, match="frame 3 out of range"):
        read_image(path, frame=3)


def test_multiframe_decodes_only_the_requested_frame(tmp_path, monkeypatch):
    frames = np.arange(3 * 16 * 16, dtype=np.uint16).reshape(3, 16, 16)
    path = save(dicom(frames), tmp_path / "mf.dcm")
    import pydicom.pixels

    calls = []
    real = pydicom.pixels.pixel_array
    monkeypatch.setattr(
        pydicom.pixels, "pixel_array", lambda *a, **k: calls.append(k.get("index")) or real(*a, **k)
    )
    arr, _ = read_dicom_array(path, frame=1)
    assert calls == [1] and arr.shape == (16, 16) and arr[0, 0] == 256


def test_rgb_dicom_and_palette_colour(tmp_path):
    rgb = np.zeros((8, 8, 3), np.uint8)
    rgb[..., 0] = 255
    assert read_image(save(dicom(rgb, "RGB"), tmp_path / "rgb.dcm")).getpixel((2, 2)) == (255, 0, 0)
    idx = np.array([[0, 1], [2, 3]], np.uint8)
    pal = dicom(idx, "PALETTE COLOR")
    desc = [4, 0, 16]
    lut = {"Red": [65535, 0, 0, 65535], "Green": [0, 65535, 0, 65535], "Blue": [0, 0, 65535, 65535]}
    for c, data in lut.items():
        setattr(pal, f"{c}PaletteColorLookupTableDescriptor", desc)
        pal.add_new(
            pydicom.datadict.tag_for_keyword(f"{c}PaletteColorLookupTableData"),
            "OW",
            np.array(data, "<u2").tobytes(),
        )
    out = read_image(save(pal, tmp_path / "pal.dcm"))
    assert out.mode == "RGB"
    assert [out.getpixel(p) for p in [(0, 0), (1, 0), (0, 1), (1, 1)]] == [
        (255, 0, 0),
        (0, 255, 0),
        (0, 0, 255),
        (255, 255, 255),
    ]


def test_no_meta_dicoms_are_detected_and_decoded(tmp_path):
    raw = (np.arange(16 * 24).reshape(16, 24) % 256).astype(np.uint8)
    for implicit in (True, False):
        path = save(dicom(raw), tmp_path / f"nometa_{implicit}", meta=False, implicit=implicit)
        assert path.read_bytes()[:2] == b"\x08\x00" and path.read_bytes()[128:132] != b"DICM"
        assert imaging.is_dicom(path)
        assert np.array_equal(arr_of(read_image(path)), raw)


def test_missing_transfer_syntax_in_meta(tmp_path):
    raw = (np.arange(16 * 16).reshape(16, 16) % 256).astype(np.uint8)
    ds = dicom(raw)
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.preamble = b"\0" * 128
    ds.save_as(tmp_path / "nots.dcm", implicit_vr=True, little_endian=True, enforce_file_format=False)
    assert "TransferSyntaxUID" not in pydicom.dcmread(tmp_path / "nots.dcm").file_meta
    assert np.array_equal(arr_of(read_image(tmp_path / "nots.dcm")), raw)


def test_forged_huge_rows_columns_refused_before_decoding(tmp_path, monkeypatch):
    ds = dicom(np.zeros((4, 4), np.uint8))
    ds.Rows = ds.Columns = 60000
    path = save(ds, tmp_path / "huge.dcm")
    import pydicom.pixels

    monkeypatch.setattr(pydicom.pixels, "pixel_array", lambda *a, **k: pytest.fail("decoded a forged image"))
    for fn in (read_image, partial(inspect_image, verify=False), inspect_image, read_dicom_array):
        with pytest.raises(ImageError, match="too large: 60000x60000"):
            fn(path)


def test_truncated_and_pixelless_dicoms(tmp_path):
    path = save(dicom(np.arange(64 * 64, dtype=np.uint16).reshape(64, 64)), tmp_path / "t.dcm")
    path.write_bytes(path.read_bytes()[:-3000])
    with pytest.raises(ImageError, match="truncated pixel data"):
        read_image(path)
    ds = dicom(np.zeros((4, 4), np.uint8))
    del ds.PixelData
    with pytest.raises(ImageError, match="DICOM has no image data"):
        inspect_image(save(ds, tmp_path / "nopix.dcm"), verify=False)


def test_non_dicom_with_dicom_name_is_refused(tmp_path):
    noise_image(tmp_path / "x.dcm", 16, fmt="JPEG")
    noise_image(tmp_path / "y.dcm", 16, fmt="PNG")
    assert not imaging.is_dicom(tmp_path / "x.dcm")
    with pytest.raises(ImageError, match=r"not a DICOM file \(looks like JPEG\)"):
        read_image(tmp_path / "x.dcm")
    with pytest.raises(ImageError, match=r"not a DICOM file \(looks like PNG\)"):
        inspect_image(tmp_path / "y.dcm")


def test_is_dicom_by_content(tmp_path):
    path = save(dicom(np.zeros((4, 4), np.uint8)), tmp_path / "no_extension")
    (tmp_path / "empty.dcm").write_bytes(b"")
    (tmp_path / "rand.dcm").write_bytes(b"\x08\x00" + bytes(range(256)) * 4)
    assert imaging.is_dicom(path) and read_image(path).size == (4, 4)  # no extension: content decides
    assert not imaging.is_dicom(tmp_path / "empty.dcm")
    assert not imaging.is_dicom(tmp_path / "missing.dcm")
    assert not imaging.is_dicom(tmp_path / "rand.dcm")
    with pytest.raises(ImageError, match="empty file"):
        read_image(tmp_path / "empty.dcm")


# ---------------------------------------------------------------- pydicom's bundled files


@pytest.mark.parametrize(
    "name, mode, size",
    [
        ("CT_small.dcm", "L", (128, 128)),
        ("MR_small.dcm", "L", (64, 64)),
        ("JPEG2000.dcm", "L", (256, 1024)),
        ("MR_small_jp2klossless.dcm", "L", (64, 64)),
        ("MR_small_jpeg_ls_lossless.dcm", "L", (64, 64)),
        ("JPEGLSNearLossless_16.dcm", "L", (10, 50)),
        ("MR_small_RLE.dcm", "L", (64, 64)),
        ("MR_small_bigendian.dcm", "L", (64, 64)),
        ("SC_rgb_rle.dcm", "RGB", (100, 100)),
        ("SC_rgb_jpeg_gdcm.dcm", "RGB", (100, 100)),
        ("SC_jpeg_no_color_transform.dcm", "RGB", (256, 256)),
        ("SC_rgb_jls_lossy_line.dcm", "RGB", (100, 100)),
        ("GDCMJ2K_TextGBR.dcm", "RGB", (400, 400)),
        ("examples_palette.dcm", "RGB", (800, 350)),
        ("image_dfl.dcm", "L", (512, 512)),
        ("liver_1frame.dcm", "L", (512, 512)),
    ],
)
def test_bundled_compressed_and_odd_dicoms_decode(name, mode, size):
    im = read_image(bundled(name))
    assert (im.mode, im.size) == (mode, size)
    a = arr_of(im)
    assert a.max() > a.min()  # real content, not a blank image


@pytest.mark.parametrize(
    "name",
    [
        "MR_small_RLE.dcm",
        "MR_small_jp2klossless.dcm",
        "MR_small_jpeg_ls_lossless.dcm",
        "MR_small_bigendian.dcm",
        "MR_small_implicit.dcm",
        "MR_small_expb.dcm",
    ],
)
def test_lossless_syntaxes_give_the_same_values_as_uncompressed(name):
    ref, _ = read_dicom_array(bundled("MR_small.dcm"))
    arr, _ = read_dicom_array(bundled(name))
    assert np.array_equal(arr, ref)


def test_jpeg_lossless_process14_decodes(tmp_path):
    gdcm = pytest.importorskip("gdcm")
    src, out = bundled("MR_small.dcm"), tmp_path / "jll.dcm"
    reader = gdcm.ImageReader()
    reader.SetFileName(str(src))
    assert reader.Read()
    change = gdcm.ImageChangeTransferSyntax()
    change.SetTransferSyntax(gdcm.TransferSyntax(gdcm.TransferSyntax.JPEGLosslessProcess14_1))
    change.SetInput(reader.GetImage())
    assert change.Change()
    writer = gdcm.ImageWriter()
    writer.SetFileName(str(out))
    writer.SetFile(reader.GetFile())
    writer.SetImage(change.GetOutput())
    assert writer.Write()
    assert pydicom.dcmread(out).file_meta.TransferSyntaxUID == pydicom.uid.JPEGLosslessSV1
    assert np.array_equal(read_dicom_array(out)[0], read_dicom_array(src)[0])


@pytest.mark.parametrize(
    "name",
    [
        "SC_rgb_dcmtk_+eb+cy+np.dcm",
        "SC_rgb_jpeg_dcmtk.dcm",
        "SC_ybr_full_422_uncompressed.dcm",
        "SC_rgb_dcmtk_+eb+cy+n1.dcm",
        "SC_rgb_jpeg_lossy_gdcm.dcm",
        "SC_rgb_rle_16bit.dcm",
    ],
)
def test_ybr_and_rgb_colour_come_out_as_rgb(name):
    im = read_image(bundled(name))
    assert im.mode == "RGB"
    r, g, b = im.getpixel((50, 5))  # the top stripe of these test images is pure red
    assert r > 200 and g < 40 and b < 40
    r, g, b = im.getpixel((50, 25))  # then green
    assert g > 200 and r < 40 and b < 40


def test_bundled_multiframe_and_no_pixel_data():
    path = bundled("SC_rgb_rle_2frame.dcm")
    assert inspect_image(path).frames == 2
    assert read_image(path, frame=1).size == (100, 100)
    with pytest.raises(ImageError, match="no image data"):
        read_image(bundled("rtplan.dcm"))


def pydicom_corpus() -> list[Path]:
    """Every DICOM bundled inside the pydicom package (listed locally: get_testdata_files tries downloads)."""
    root = Path(pydicom.data.__file__).parent / "test_files"
    files = [
        p
        for p in sorted(root.iterdir())
        if p.is_file() and p.suffix.lower() not in (".txt", ".json", ".gz", ".dump", ".icc")
    ]
    return [p for p in files if p.suffix.lower() == ".dcm" or imaging.is_dicom(p)]


def pydicom_corpus_summary() -> tuple[int, int, collections.Counter, list[str]]:
    """inspect_image + read_image over the corpus: (decoded, total, failure reasons, unexpected exceptions)."""
    decoded, reasons, bugs = 0, collections.Counter(), []
    files = pydicom_corpus()
    for path in files:
        try:
            inspect_image(path)
            read_image(path)
            decoded += 1
        except ImageError as e:
            reasons[str(e).split(":")[0]] += 1
        except Exception as e:  # noqa: BLE001 - this is what the test hunts for
            bugs.append(f"{path.name}: {type(e).__name__}: {e}")
    return decoded, len(files), reasons, bugs


def test_all_pydicom_bundled_files_fail_only_with_image_error():
    decoded, total, reasons, bugs = pydicom_corpus_summary()
    print(f"\ndecoded {decoded} of {total}; failures by reason:")
    for reason, n in reasons.most_common():
        print(f"  {n:3d}  {reason}")
    assert not bugs, bugs
    assert total >= 70 and decoded >= 50


# ---------------------------------------------------------------- metadata and PHI


def test_metadata_allow_list_hides_phi(tmp_path):
    path, _ = _mono1(tmp_path)
    meta = imaging.dicom_metadata(path)
    text = repr(meta)
    assert meta["Modality"] == "DX" and meta["PhotometricInterpretation"] == "MONOCHROME1"
    assert meta["Rows"] == "32" and meta["TransferSyntaxUID"] == "Explicit VR Little Endian"
    for value in PHI + ("General Hospital", "ACC999"):
        assert value not in text
    for key in (
        "PatientName",
        "PatientID",
        "PatientBirthDate",
        "InstitutionName",
        "AccessionNumber",
        "SOPInstanceUID",
    ):
        assert key not in meta
    full = imaging.dicom_metadata(path, include_phi=True)
    assert full["PatientID"] == "MRN123" and full["PatientName"] == "Doe^Jane"


def test_tag_values_pseudonymise_identifying_tags(tmp_path):
    path, _ = _mono1(tmp_path)
    from core.base.privacy import pseudonym

    assert imaging.dicom_tag_value(path, "PatientID") == pseudonym("MRN123")  # keyed (tests/test_privacy.py)
    assert imaging.dicom_tag_value(path, "PatientID") != "anon-" + hashlib.sha256(b"MRN123").hexdigest()[:12]
    assert imaging.dicom_tag_value(path, "PatientName").startswith("anon-")
    assert imaging.dicom_tag_value(path, "ViewPosition") == "PA"
    assert imaging.dicom_tag_value(path, "Laterality") == ""
    with pytest.raises(ValueError):
        imaging.dicom_tag_value(path, "NotAKeyword")


def test_errors_warnings_and_logs_never_carry_phi(tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    raw = np.arange(64 * 64, dtype=np.uint16).reshape(64, 64)
    bad_date = {"PatientBirthDate": "Doe-1980"}  # an invalid DA: pydicom warns quoting it when read
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trunc = save(dicom(raw, **bad_date), tmp_path / "trunc.dcm")
        trunc.write_bytes(trunc.read_bytes()[:-100])
        nopix = dicom(raw, **bad_date)
        del nopix.PixelData
        huge = dicom(raw, **bad_date)
        huge.Rows = 60000
        files = [trunc, save(nopix, tmp_path / "nopix.dcm"), save(huge, tmp_path / "huge.dcm")]
    caplog.clear()  # writing the invalid date above logged it; what follows must not
    messages = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for path in files:
            for fn in (read_image, inspect_image, read_dicom_array):
                with pytest.raises(ImageError) as err:
                    fn(path)
                messages.append(str(err.value))
            imaging.dicom_metadata(path)
            assert imaging.dicom_metadata(path, include_phi=True)[
                "PatientBirthDate"
            ]  # returned, never logged
            imaging.dicom_tag_value(path, "PatientID")
    assert len(messages) == 9 and any("truncated" in m for m in messages)
    text = "\n".join(messages + [str(w.message) for w in caught] + [caplog.text])
    for value in PHI:
        assert value not in text


def test_library_warnings_and_logs_that_quote_header_values_are_muted(caplog):
    caplog.set_level(logging.DEBUG)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(ImageError):
            read_image(bundled("badVR.dcm"))  # pydicom warns and logs "Invalid value for VR IS: '1A'"
    assert "1A" not in caplog.text and not [w for w in caught if "1A" in str(w.message)]


def test_error_text_masks_phi_values_quoted_by_libraries(tmp_path):
    path, _ = _mono1(tmp_path)
    ds = pydicom.dcmread(path)
    text = imaging._short(ValueError("bad value 'Doe^Jane' for MRN123\nsecond line"), ds)
    assert "Doe" not in text and "MRN123" not in text and "\n" not in text


# ---------------------------------------------------------------- real chest radiographs (../shared/data)


def test_shared_dx_mono2(shared_data):
    path = shared_data / "dicom_samples" / "dx_chest_nih_mono2.dcm"
    info = inspect_image(path)
    assert (info.width, info.height, info.mode, info.kind) == (1024, 1024, "MONOCHROME2", "dicom")
    assert read_image(path).size == (1024, 1024)


def _lung_vs_spine(im: Image.Image) -> tuple[float, float]:
    """Mean grey of a right-lung patch and of the mediastinum/spine column."""
    a = arr_of(im)
    h, w = a.shape
    lung = a[int(h * 0.3) : int(h * 0.5), int(w * 0.2) : int(w * 0.35)].mean()
    spine = a[int(h * 0.3) : int(h * 0.5), int(w * 0.47) : int(w * 0.53)].mean()
    return lung, spine


def test_shared_cr_mono1_without_meta_is_inverted(shared_data):
    path = shared_data / "dicom_samples" / "cr_chest_mono1_no_meta.dcm"
    assert imaging.is_dicom(path)
    arr, ds = read_dicom_array(path)
    im = read_image(path)
    as_mono2 = apply_window(arr, float(ds.WindowCenter), float(ds.WindowWidth))
    assert np.array_equal(arr_of(im), 255 - as_mono2.astype(np.int64))  # inverted after windowing
    lung, spine = _lung_vs_spine(im)
    assert lung < spine - 20  # lungs (air) display dark, the spine bright


def test_shared_cr_mono1_jpeg2000(shared_data):
    path = shared_data / "dicom_samples" / "cr_chest_mono1_j2k.dcm"
    info = inspect_image(path)
    assert (info.width, info.height, info.bits) == (1841, 1955, 15)
    lung, spine = _lung_vs_spine(read_image(path))
    assert lung < spine


@pytest.mark.parametrize(
    "name, reason",
    [
        ("dx_chest_truncated_60pct.dcm", "truncated pixel data"),
        ("dx_chest_no_pixeldata.dcm", "DICOM has no image data"),
        ("jpeg_renamed_as.dcm", r"not a DICOM file \(looks like JPEG\)"),
    ],
)
def test_shared_broken_dicoms(shared_data, name, reason):
    with pytest.raises(ImageError, match=reason):
        inspect_image(shared_data / "dicom_samples" / name)


# ---------------------------------------------------------------- decode cache


def test_cache_hit_miss_and_downscale(tmp_path):
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (200, 300), dtype=np.uint8)).save(
        tmp_path / "a.png"
    )
    cache = DecodeCache(tmp_path / "cache")
    first = cache.get(tmp_path / "a.png", 100)
    second = cache.get(tmp_path / "a.png", 100)
    assert (cache.misses, cache.hits) == (1, 1)
    assert first.size == (150, 100) and np.array_equal(arr_of(first), arr_of(second))  # lossless PNG
    assert cache.get(tmp_path / "a.png", 500).size == (300, 200)  # never upscaled
    assert cache.get(tmp_path / "a.png", None).size == (300, 200)
    assert cache.misses == 3
    assert not list((tmp_path / "cache").rglob("*.tmp"))


@pytest.mark.parametrize("shape", [(224, 224), (300, 170), (97, 640), (1000, 800)])
def test_downscale_of_grey_saved_as_rgb_is_the_rgb_resize(shape):
    """A grey picture saved as RGB is resized as one channel: the bytes of Pillow's RGB resize (also through
    reducing_gap's reduce step, 1000 -> 100 px), and still RGB."""
    from core.data.decode_cache import downscale, same_channels

    grey = np.random.default_rng(sum(shape)).integers(0, 256, shape, dtype=np.uint8)
    rgb = Image.fromarray(np.repeat(grey[:, :, None], 3, axis=2), "RGB")
    assert same_channels(rgb)
    for size in (100, 64, 31):
        out = downscale(rgb, size)
        w, h = rgb.size
        if min(w, h) <= size:  # never enlarged
            assert out is rgb
            continue
        new = (size, max(1, round(h * size / w))) if w <= h else (max(1, round(w * size / h)), size)
        direct = rgb.resize(new, Image.Resampling.LANCZOS, reducing_gap=3.0)
        assert out.mode == "RGB" and out.size == direct.size
        assert out.tobytes() == direct.tobytes()


def test_same_channels_finds_one_differing_pixel():
    """A colour image, or a grey one with one pixel off its grey anywhere, is not 'same channels'."""
    from core.data.decode_cache import same_channels

    grey = np.random.default_rng(1).integers(0, 256, (60, 80), dtype=np.uint8)
    base = np.repeat(grey[:, :, None], 3, axis=2)
    for y, x, c in [(0, 0, 1), (59, 79, 2), (30, 40, 1), (5, 70, 2)]:
        off = base.copy()
        off[y, x, c] ^= 1
        assert not same_channels(Image.fromarray(off, "RGB"))
    assert not same_channels(
        Image.fromarray(np.random.default_rng(2).integers(0, 256, (60, 80, 3), dtype=np.uint8))
    )
    assert same_channels(Image.fromarray(base, "RGB"))


def test_same_channels_compares_a_large_image_in_bands(monkeypatch):
    """Bands of _COMPARE_PIXELS: a differing pixel in the last band, and in the first, is found."""
    from core.data import decode_cache

    monkeypatch.setattr(decode_cache, "_COMPARE_PIXELS", 80 * 7)  # 7 rows of 80 per band
    grey = np.random.default_rng(3).integers(0, 256, (60, 80), dtype=np.uint8)
    base = np.repeat(grey[:, :, None], 3, axis=2)
    assert decode_cache.same_channels(Image.fromarray(base, "RGB"))
    for y in (0, 59):
        off = base.copy()
        off[y, 3, 2] ^= 4
        assert not decode_cache.same_channels(Image.fromarray(off, "RGB"))


def test_cache_default_root_is_the_app_cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("XRT_CACHE_DIR", str(tmp_path / "c"))
    Image.new("L", (8, 8)).save(tmp_path / "a.png")
    DecodeCache().get(tmp_path / "a.png", 4)
    assert len(list((tmp_path / "c").rglob("*.png"))) == 1


def test_cache_key_follows_file_and_settings(tmp_path):
    path, _ = _mono1(tmp_path)
    cache = DecodeCache(tmp_path / "cache")
    keys = {
        cache.key(path, 16),
        cache.key(path, 32),
        cache.key(path, 16, Window(0, 100)),
        cache.key(path, 16, frame=1),
    }
    assert len(keys) == 4
    a = cache.get(path, 16)
    b = cache.get(path, 16, Window(0, 100))
    assert cache.misses == 2 and not np.array_equal(arr_of(a), arr_of(b))
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # the file changed
    cache.get(path, 16)
    assert cache.misses == 3 and cache.hits == 0


def test_corrupt_cache_entry_is_redecoded(tmp_path):
    Image.new("L", (40, 40), 77).save(tmp_path / "a.png")
    cache = DecodeCache(tmp_path / "cache")
    cache.get(tmp_path / "a.png", 20)
    entry = cache.entry(cache.key(tmp_path / "a.png", 20))
    entry.write_bytes(entry.read_bytes()[:30])
    out = cache.get(tmp_path / "a.png", 20)
    assert cache.misses == 2 and arr_of(out).mean() == 77
    assert cache.get(tmp_path / "a.png", 20) and cache.hits == 1  # rewritten entry now hits


def test_cache_errors_are_image_errors(tmp_path):
    (tmp_path / "bad.png").write_bytes(b"<html></html>")
    with pytest.raises(ImageError, match="HTML"):
        DecodeCache(tmp_path / "cache").get(tmp_path / "bad.png", 16)
    with pytest.raises(ImageError, match="file not found"):
        DecodeCache(tmp_path / "cache").get(tmp_path / "gone.png", 16)


def test_cache_warm_stores_once_and_vouches_for_the_file(tmp_path, monkeypatch):
    Image.linear_gradient("L").resize((80, 40)).save(
        tmp_path / "a.png"
    )  # not flat: warm refuses blank images
    cache = DecodeCache(tmp_path / "cache")
    assert cache.warm(tmp_path / "a.png", 20) is False  # decoded and stored
    assert arr_of(cache.get(tmp_path / "a.png", 20)).shape == (20, 40) and cache.hits == 1
    monkeypatch.setattr("core.data.imaging.read_image", lambda *a, **k: pytest.fail("decoded again"))
    assert cache.warm(tmp_path / "a.png", 20) is True  # present: no decode at all
    (tmp_path / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 20)
    monkeypatch.undo()
    with pytest.raises(ImageError):
        cache.warm(tmp_path / "bad.png", 20)
    assert len(list((tmp_path / "cache").rglob("*.png"))) == 1  # nothing stored for the bad file


def test_inspect_with_decode_validates_through_it(tmp_path):
    Image.linear_gradient("L").resize((64, 64)).save(tmp_path / "a.png")
    cache = DecodeCache(tmp_path / "cache")
    info = inspect_image(tmp_path / "a.png", decode=partial(cache.warm, size=16))
    assert info.width == 64 and cache.misses == 1
    assert cache.entry(cache.key(tmp_path / "a.png", 16)).is_file()
    inspect_image(tmp_path / "a.png", verify=False, decode=partial(cache.warm, size=32))
    assert cache.misses == 1  # verify=False never decodes


def test_cache_concurrent_threads_and_processes(tmp_path):
    noise_image(tmp_path / "a.png", 256, fmt="PNG")
    cache = DecodeCache(tmp_path / "cache")
    with ThreadPoolExecutor(8) as pool:
        outs = list(pool.map(lambda _: arr_of(cache.get(tmp_path / "a.png", 64)), range(16)))
    with get_context("spawn").Pool(2) as pool:
        outs += [
            arr_of(im)
            for im in pool.map(
                partial(DecodeCache(tmp_path / "cache").get, size=64), [tmp_path / "a.png"] * 4
            )
        ]
    assert all(np.array_equal(o, outs[0]) for o in outs)
    assert len(list((tmp_path / "cache").rglob("*.png"))) == 1 and not list(
        (tmp_path / "cache").rglob("*.tmp")
    )


if __name__ == "__main__":  # python tests/test_imaging.py: the pydicom corpus summary for the issue note
    n, m, why, bugs = pydicom_corpus_summary()
    print(f"decoded {n} of {m}; failures by reason: {dict(why)}; non-ImageError exceptions: {bugs}")
