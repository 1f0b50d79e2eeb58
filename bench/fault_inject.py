"""Fault injection: hostile images, malformed DICOMs, hostile CSVs, damaged checkpoints, CSV exports and a
decode-memory probe (incl. a deflated-DICOM bomb through read_image and the hosted upload check), fed to every path.

Prints one JSON line: files tried, refused with a reason, accepted, crashed (must be 0: any exception that is not
the app's own one-line ImageError / SourceError / ModelFileError, or a reason that is not a plain sentence), and
peak RSS (this process, and a fresh process per memory-probe file). The file classes are also the fixtures of
tests/test_hardening_decode.py and tests/test_hardening_checkpoints.py (one place for "every failure class").

    .venv/bin/python bench/fault_inject.py            # ~10-40 s on a 2-core machine
    .venv/bin/python bench/fault_inject.py --smoke    # a few seconds
"""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import struct
import subprocess
import sys
import tempfile
import time
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

# ---------------------------------------------------------------- small valid files


def gradient(size: int = 32) -> np.ndarray:
    """A non-constant uint8 test picture."""
    yy, xx = np.mgrid[:size, :size]
    return ((xx * 7 + yy * 3) % 256).astype(np.uint8)


def noise_png(path: Path, size: int = 64, fmt: str = "PNG") -> Path:
    """A noisy RGB image (compresses badly, so a cut copy is really truncated)."""
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (size, size, 3), dtype=np.uint8)).save(
        path, format=fmt
    )
    return path


def png_header(path: Path, width: int, height: int, bit_depth: int = 8, colour_type: int = 0) -> Path:
    """A tiny PNG whose header claims width x height pixels (colour type 6 = RGBA, 0 = grey)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    body = chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + body)
    return path


def real_png(path: Path, width: int, height: int, bit_depth: int = 8, colour_type: int = 6) -> Path:
    """A complete, valid PNG of zeros streamed through zlib (a 9400x9400 RGBA one is ~350 KB on disk)."""
    channels = {0: 1, 2: 3, 4: 2, 6: 4}[colour_type]
    row = b"\0" * (1 + width * channels * bit_depth // 8)
    comp, parts = zlib.compressobj(9), []
    for _ in range(height):
        parts.append(comp.compress(row))
    parts.append(comp.flush())

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", b"".join(parts)) + chunk(b"IEND", b"")
    )
    return path


def palette_png(path: Path, side: int) -> Path:
    """A side x side colour palette PNG (a ramp) with a transparent entry: the costliest mode per pixel to
    decode into RGB, a few hundred KB on disk."""
    ramp = ((np.arange(side * side, dtype=np.uint32).reshape(side, side) // 997) % 256).astype(np.uint8)
    im = Image.frombytes("P", (side, side), ramp.tobytes())
    levels = np.arange(256, dtype=np.uint16)
    im.putpalette(np.stack([levels, 255 - levels, (levels * 7) % 256], -1).astype(np.uint8).tobytes())
    im.save(path, transparency=0)
    return path


def palette_zip(path: Path, side: int) -> Path:
    """A zip of four copies of one side x side colour palette PNG: the upload whose files, checked on 4 threads,
    took 1.3 GB of server memory against a 1 GB decode budget (and 325-396 MB against 300 MB)."""
    import zipfile

    png = palette_png(path.with_suffix(".png"), side)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for i in range(4):
            zf.write(png, f"c/pal{i}.png")
    png.unlink()
    return path


def dicom_dataset(arr: np.ndarray, photometric: str = "MONOCHROME2") -> Any:
    """An uncompressed Secondary Capture dataset around a greyscale array (uint8 or uint16)."""
    from pydicom.dataset import Dataset
    from pydicom.uid import SecondaryCaptureImageStorage, generate_uid

    ds = Dataset()
    ds.SOPClassUID, ds.SOPInstanceUID = SecondaryCaptureImageStorage, generate_uid()
    ds.Modality, ds.PatientName, ds.PatientID = "DX", "Doe^Jane", "MRN123"
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, photometric
    ds.Rows, ds.Columns = arr.shape
    ds.BitsAllocated = ds.BitsStored = arr.dtype.itemsize * 8
    ds.HighBit, ds.PixelRepresentation = ds.BitsStored - 1, 0
    ds.PixelData = np.ascontiguousarray(arr).tobytes()
    return ds


def write_dicom(ds: Any, path: Path, transfer_syntax: str = "1.2.840.10008.1.2.1") -> Path:
    """Write with file meta and any Transfer Syntax UID (pydicom refuses to write unknown ones itself)."""
    from pydicom.dataset import FileMetaDataset
    from pydicom.filebase import DicomBytesIO
    from pydicom.filewriter import write_dataset, write_file_meta_info

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = ds.SOPClassUID, ds.SOPInstanceUID
    meta.TransferSyntaxUID = transfer_syntax
    fp = DicomBytesIO()
    fp.is_little_endian, fp.is_implicit_VR = True, False
    fp.write(b"\0" * 128 + b"DICM")
    write_file_meta_info(fp, meta, enforce_standard=True)
    write_dataset(fp, ds)
    path.write_bytes(fp.getvalue())
    return path


def _encapsulated(path: Path, ts: str, frame: bytes, rows: int = 32) -> Path:
    """A DICOM whose encapsulated Pixel Data holds `frame` as its one compressed frame."""
    from pydicom.encaps import encapsulate

    ds = dicom_dataset(gradient(rows))
    ds.PixelData = encapsulate([frame])
    ds["PixelData"].VR = "OB"
    return write_dicom(ds, path, ts)


# ---------------------------------------------------------------- failure classes


def _bytes(name: str, data: bytes) -> Callable[[Path], Path]:
    """A class that is just these bytes under this name."""

    def make(d: Path) -> Path:
        (d / name).write_bytes(data)
        return d / name

    return make


def _cut(name: str, fmt: str) -> Callable[[Path], Path]:
    """A valid noisy image cut to 60 % of its bytes."""

    def make(d: Path) -> Path:
        p = noise_png(d / name, fmt=fmt)
        p.write_bytes(p.read_bytes()[: p.stat().st_size * 6 // 10])
        return p

    return make


def _ts(name: str, uid: str) -> Callable[[Path], Path]:
    """An ordinary 8-bit DICOM labelled with a transfer syntax no installed decoder handles."""
    return lambda d: write_dicom(dicom_dataset(gradient()), d / name, uid)


def _huge(d: Path) -> Path:
    ds = dicom_dataset(np.zeros((4, 4), np.uint8))
    ds.Rows = ds.Columns = 60000
    return write_dicom(ds, d / "huge_rows_columns.dcm")


def _over_budget(d: Path) -> Path:
    ds = dicom_dataset(np.zeros((4, 4), np.uint16))
    ds.Rows = ds.Columns = 11000  # under the pixel limit, over the default memory budget at 16 bits
    return write_dicom(ds, d / "over_budget_16bit.dcm")


def _no_pixels(d: Path) -> Path:
    ds = dicom_dataset(gradient())
    del ds.PixelData
    return write_dicom(ds, d / "no_pixel_data.dcm")


def _truncated_dicom(d: Path) -> Path:
    p = write_dicom(dicom_dataset(np.arange(64 * 64, dtype=np.uint16).reshape(64, 64)), d / "truncated.dcm")
    p.write_bytes(p.read_bytes()[:-3000])
    return p


def _jpeg_as_dcm(d: Path) -> Path:
    buf = io.BytesIO()
    Image.fromarray(gradient()).save(buf, format="JPEG")
    return _bytes("jpeg_renamed.dcm", buf.getvalue())(d)


def _damaged_meta(d: Path) -> Path:
    """A DICOM cut right after its file meta header (the old reason: "not a DICOM file (looks like DICOM)")."""
    p = write_dicom(dicom_dataset(gradient()), d / "damaged_meta.dcm")
    raw = p.read_bytes()
    meta_len = struct.unpack("<I", raw[140:144])[0]  # (0002,0000) File Meta Information Group Length
    p.write_bytes(raw[: 144 + meta_len])
    return p


def _bad_bits(d: Path) -> Path:
    ds = dicom_dataset(gradient())
    ds.BitsAllocated = 12
    return write_dicom(ds, d / "bits_allocated_12.dcm")


def _corrupt_jpeg(d: Path) -> Path:
    garbage = b"\xff\xd8\xff\xe0" + np.random.default_rng(4).integers(0, 256, 500, dtype=np.uint8).tobytes()
    return _encapsulated(d / "corrupt_jpeg.dcm", "1.2.840.10008.1.2.4.50", garbage)


def _corrupt_j2k(d: Path) -> Path:
    garbage = b"\xff\x4f\xff\x51" + np.random.default_rng(5).integers(0, 256, 500, dtype=np.uint8).tobytes()
    return _encapsulated(d / "corrupt_j2k.dcm", "1.2.840.10008.1.2.4.90", garbage)


def deflated_dicom(path: Path, padding: int = 0, cut: int = 0) -> Path:
    """pydicom's valid deflated DICOM (image_dfl.dcm), its dataset followed by `padding` zero bytes before
    deflating (a compression bomb: 1 GB of padding deflates to ~1 MB), or its deflated data cut by `cut` bytes."""
    from pydicom.data import get_testdata_file

    from core.data.deflate import dataset_offset

    raw = Path(get_testdata_file("image_dfl.dcm")).read_bytes()
    start = dataset_offset(Path(get_testdata_file("image_dfl.dcm"))) or 0
    comp, zeros = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS), bytes(1 << 20)
    parts = [comp.compress(zlib.decompress(raw[start:], -zlib.MAX_WBITS))]
    for i in range(0, padding, len(zeros)):
        parts.append(comp.compress(zeros[: min(len(zeros), padding - i)]))
    body = b"".join(parts) + comp.flush()
    path.write_bytes(raw[:start] + body[: len(body) - cut])
    return path


TOO_BIG = "too large to decode safely"
CANNOT = "compressed with a method this app cannot decode"
# name -> (make(folder) -> path, the reason every decode entry point must give, as a regex)
FAILURE_CLASSES: dict[str, tuple[Callable[[Path], Path], str]] = {
    "truncated_png": (_cut("truncated.png", "PNG"), "truncated or corrupt image data"),
    "truncated_jpeg": (_cut("truncated.jpg", "JPEG"), "truncated or corrupt image data"),
    "zero_byte_png": (_bytes("empty.png", b""), "empty file"),
    "zero_byte_dcm": (_bytes("empty.dcm", b""), "empty file"),
    "random_bytes_png": (_bytes("random.png", np.random.default_rng(1).bytes(4096)), "not an image"),
    "random_bytes_dcm": (_bytes("random.dcm", np.random.default_rng(2).bytes(4096)), "not a DICOM file"),
    "html_as_png": (_bytes("page.png", b"<!DOCTYPE html><html><body>404</body></html>"), r"looks like HTML"),
    "exe_as_png": (_bytes("tool.png", b"MZ\x90\x00" + b"\x00" * 300), "looks like a Windows executable"),
    "lfs_pointer_png": (
        _bytes("lfs.png", b"version https://git-lfs.github.com/spec/v1\noid sha256:ab\nsize 9\n"),
        "looks like a Git LFS pointer",
    ),
    "pillow_bomb_png": (lambda d: png_header(d / "bomb.png", 10000, 9000), "too large"),
    "rgba_9400_png": (lambda d: png_header(d / "rgba_9400.png", 9400, 9400, 8, 6), TOO_BIG),
    "grey16_9400_png": (lambda d: png_header(d / "grey16_9400.png", 9400, 9400, 16, 0), TOO_BIG),
    "deflated_image_frames_dcm": (
        _ts("deflate_frames.dcm", "1.2.840.10008.1.2.8.1"),
        CANNOT + r": Deflated Image Frame Compression",
    ),
    "jpeg_xl_lossless_dcm": (
        _ts("jxl_lossless.dcm", "1.2.840.10008.1.2.4.110"),
        CANNOT + ": JPEG XL Lossless",
    ),
    "jpeg_xl_recompression_dcm": (
        _ts("jxl_recomp.dcm", "1.2.840.10008.1.2.4.111"),
        CANNOT + ": JPEG XL JPEG",
    ),
    "jpeg_xl_dcm": (_ts("jxl.dcm", "1.2.840.10008.1.2.4.112"), CANNOT + r": JPEG XL \("),
    "made_up_ts_dcm": (
        _ts("made_up.dcm", "1.2.3.4.5.6.7"),
        CANNOT + r": an unknown transfer syntax \(1.2.3.4.5.6.7\)",
    ),
    "mpeg2_dcm": (_ts("mpeg2.dcm", "1.2.840.10008.1.2.4.100"), CANNOT + ": MPEG2"),
    "no_pixel_data_dcm": (_no_pixels, "DICOM has no image data"),
    "jpeg_renamed_dcm": (_jpeg_as_dcm, r"not a DICOM file \(looks like JPEG\)"),
    "forged_huge_rows_columns_dcm": (_huge, "too large: 60000x60000"),
    "over_budget_rows_columns_dcm": (_over_budget, TOO_BIG),
    "truncated_pixel_data_dcm": (_truncated_dicom, "truncated pixel data"),
    "damaged_meta_dcm": (_damaged_meta, "damaged"),
    "bits_allocated_12_dcm": (_bad_bits, "unsupported DICOM bit depth"),
    "corrupt_jpeg_in_dcm": (_corrupt_jpeg, "truncated or corrupt pixel data"),
    "corrupt_j2k_in_dcm": (_corrupt_j2k, "truncated or corrupt pixel data"),
    "deflated_cut_dcm": (lambda d: deflated_dicom(d / "deflated_cut.dcm", cut=400), "a damaged DICOM file"),
}

# A reason a user sees: one plain sentence, no object reprs, library chains, exception class names or paths.
UNCLEAR = re.compile(
    r"<[^>]*>|\b0x[0-9a-f]{4,}|Traceback|Errno|\w+Error\b|\w+Exception\b|gdcm:|pillow:|pylibjpeg:"
    r"|looks like DICOM\)|unexpected error|\n|[\x00-\x08]",
    re.IGNORECASE,
)


def unclear(reason: str) -> bool:
    """True when a user-facing reason is not one plain sentence."""
    return not reason or len(reason) > 300 or bool(UNCLEAR.search(reason))


def make_all(folder: Path) -> dict[str, Path]:
    """Every failure class written into `folder`: name -> path."""
    folder.mkdir(parents=True, exist_ok=True)
    return {name: make(folder) for name, (make, _) in FAILURE_CLASSES.items()}


# ---------------------------------------------------------------- mutated files and CSVs


def mutants(folder: Path, n: int, seed: int = 0) -> list[Path]:
    """Valid PNG / JPEG / TIFF / BMP / DICOM files with random bytes flipped, cut or spliced."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    bases: list[tuple[str, bytes]] = []
    for fmt, ext in (("PNG", "png"), ("JPEG", "jpg"), ("TIFF", "tif"), ("BMP", "bmp")):
        buf = io.BytesIO()
        Image.fromarray(gradient(48)).save(buf, format=fmt)
        bases.append((ext, buf.getvalue()))
    bases.append(
        (
            "dcm",
            write_dicom(dicom_dataset(gradient(48).astype(np.uint16) * 16), folder / "base.dcm").read_bytes(),
        )
    )
    (folder / "base.dcm").unlink()
    out = []
    for i in range(n):
        ext, data = bases[i % len(bases)]
        raw = bytearray(data)
        how = rng.integers(0, 3)
        if how == 0:  # flip bytes (header or body)
            for pos in rng.integers(0, len(raw), rng.integers(1, 12)):
                raw[pos] = rng.integers(0, 256)
        elif how == 1:  # cut
            raw = raw[: rng.integers(1, len(raw))]
        else:  # splice random bytes in
            pos = rng.integers(0, len(raw))
            raw[pos:pos] = rng.bytes(int(rng.integers(1, 64)))
        p = folder / f"mutant_{i:04d}.{ext}"
        p.write_bytes(bytes(raw))
        out.append(p)
    return out


def hostile_csvs(folder: Path) -> list[Path]:
    """CSV tables a user (or an attacker) might give: escapes, BOM, ';', binary, broken quoting, bad encodings."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "img").mkdir(exist_ok=True)
    for i in range(4):
        Image.fromarray(np.roll(gradient(), i)).save(folder / "img" / f"{i}.png")
    tables = {
        "escapes.csv": "path,label\n../../etc/passwd,a\n/etc/hostname,b\n\\\\server\\share\\x.png,a\nimg/0.png,b\n",
        "bom_semicolon.csv": "\ufeffpath;label\nimg/0.png;a\nimg/1.png;b\nimg/2.png;a\nimg/3.png;b\n",
        "missing_and_dupes.csv": "path,label\nimg/0.png,a\nimg/0.png,b\nimg/nope.png,a\nimg/1.png,\n",
        "one_class.csv": "path,label\nimg/0.png,a\nimg/1.png,a\n",
        "no_path_column.csv": "file,label\nimg/0.png,a\n",
        "empty.csv": "",
        "header_only.csv": "path,label\n",
        "unbalanced_quotes.csv": 'path,label\n"img/0.png,a\nimg/1.png,"b\n',
        "huge_field.csv": "path,label\n" + "x" * 200_000 + ",a\nimg/0.png,b\n",
        "formula_injection.csv": "path,label\nimg/0.png,=cmd|' /C calc'!A0\nimg/1.png,@SUM(1)\n",
    }
    out = []
    for name, text in tables.items():
        (folder / name).write_text(text, encoding="utf-8")
        out.append(folder / name)
    (folder / "binary.csv").write_bytes(b"\x00\x01\x02PK\x03\x04" * 100)
    (folder / "latin1.csv").write_bytes("path,label\nimg/0.png,caf\xe9\nimg/1.png,b\n".encode("latin-1"))
    (folder / "utf16.csv").write_bytes("path,label\nimg/0.png,a\nimg/1.png,b\n".encode("utf-16"))
    return out + [folder / "binary.csv", folder / "latin1.csv", folder / "utf16.csv"]


# ---------------------------------------------------------------- damaged checkpoints


def _flip_bit(raw: bytes) -> bytes:
    """One bit flipped inside the tensor data (past the safetensors header)."""
    (n,) = struct.unpack("<Q", raw[:8])
    at = 8 + n + (len(raw) - 8 - n) // 2
    return raw[:at] + bytes([raw[at] ^ 0x10]) + raw[at + 1 :]


def _header_lies(raw: bytes) -> bytes:
    """A header whose first tensor claims another dtype."""
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n])
    first = next(k for k in header if k != "__metadata__")
    header[first]["dtype"] = "F64" if header[first]["dtype"] != "F64" else "F32"
    body = json.dumps(header).encode()
    return struct.pack("<Q", len(body)) + body + raw[8 + n :]


CORRUPT = "truncated or corrupt"
# name -> (bytes of a good checkpoint -> tampered bytes, the reason core.models.checkpoints must give, a regex)
CHECKPOINT_TAMPERS: dict[str, tuple[Callable[[bytes], bytes], str]] = {
    "truncated": (lambda raw: raw[: len(raw) // 2], CORRUPT),
    "empty": (lambda raw: b"", CORRUPT),
    "garbage_header": (lambda raw: struct.pack("<Q", 20) + b"{not json at all!!}" + raw[28:], CORRUPT),
    "header_lies": (_header_lies, CORRUPT + "|does not match the checksum"),
    "one_flipped_bit": (_flip_bit, "does not match the checksum"),
    "tail_cut_by_one": (lambda raw: raw[:-1], CORRUPT),
    "html_error_page": (lambda raw: b"<!DOCTYPE html><html>502 Bad Gateway</html>", CORRUPT),
}


def checkpoint_paths(folder: Path, tally: Tally) -> None:
    """Every tampered checkpoint, plus NaN and inf weights, through the check `finish` runs before writing."""
    import torch
    from safetensors.torch import save

    from core.models import checkpoints
    from core.models.weightfiles import ModelFileError

    def written(
        state: dict,
    ) -> bytes:  # as core.train.callbacks.save_state_atomic writes it (without fastai here)
        return save(state, metadata=checkpoints.checkpoint_metadata(state))

    folder.mkdir(parents=True, exist_ok=True)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.BatchNorm2d(8), torch.nn.Linear(8, 2))
    good = written(model.state_dict())
    cases = {name: make(good) for name, (make, _) in CHECKPOINT_TAMPERS.items()}
    for value in ("nan", "inf"):
        with torch.no_grad():
            model[2].bias[0] = float(value)
        cases[f"{value}_weight"] = written(model.state_dict())
    for name, data in cases.items():
        path = folder / f"{name}.safetensors"
        path.write_bytes(data)
        tally.run(
            f"read_checkpoint({name})", lambda p=path: checkpoints.read_checkpoint(p), (ModelFileError,)
        )


def export_paths(tables: list[Path], tally: Tally) -> None:
    """Hostile CSVs that load, written back for people: no cell a spreadsheet would run may remain."""
    from core.base.config import SourceConfig
    from core.base.exports import FORMULA_START, write_for_people
    from core.data.items import SourceError
    from core.data.sources import load_source

    for p in tables:
        try:
            items = load_source(SourceConfig(kind="csv", csv_path=str(p), root=str(p.parent))).items
        except SourceError:
            continue
        out = p.with_suffix(".export.csv")

        def export(items: Any = items, out: Path = out) -> None:
            write_for_people(items, out)
            import pandas as pd

            cells = pd.read_csv(out, dtype=str, keep_default_na=False).to_numpy().ravel()
            live = [c for c in cells if c.startswith(FORMULA_START) and not _number(c)]
            if live:
                raise RuntimeError(f"live formula cells in an export: {live[:2]}")

        tally.run(f"export({p.name})", export, ())


def _number(text: str) -> bool:
    """A signed number (left alone by the export rule)."""
    try:
        float(text)
        return True
    except ValueError:
        return False


# ---------------------------------------------------------------- running the decode paths


class Tally:
    """Counts per outcome; examples of crashes and unclear reasons."""

    def __init__(self) -> None:
        """All zero."""
        self.tried = self.refused = self.accepted = self.crashed = self.unclear = 0
        self.examples: list[str] = []

    def run(self, label: str, fn: Callable[[], Any], ok_errors: tuple[type[BaseException], ...]) -> None:
        """Call fn once: accepted, refused (an expected error with a plain reason), or crashed."""
        self.tried += 1
        try:
            fn()
            self.accepted += 1
        except ok_errors as e:
            self.refused += 1
            if unclear(str(e)):
                self.unclear += 1
                self._note(f"unclear reason from {label}: {str(e)[:160]!r}")
        except Exception as e:  # noqa: BLE001 - this is what the probe hunts for
            self.crashed += 1
            self._note(f"crash in {label}: {type(e).__name__}: {str(e)[:160]}")

    def _note(self, text: str) -> None:
        if len(self.examples) < 10:
            self.examples.append(text)


def decode_paths(files: list[Path], tally: Tally, cache_root: Path) -> None:
    """Feed every file to each decode entry point (read, inspect, cache, metadata, upload check)."""
    from core.data import decode_cache

    cache = decode_cache.DecodeCache(cache_root)
    for p in files:
        _feed(p, tally, cache)


def _feed(p: Path, tally: Tally, cache: Any) -> None:
    """One file through read_image, inspect_image (both ways), DecodeCache.warm, dicom_metadata, check_content."""
    from core.data import imaging
    from core.web import uploads

    name, bad = p.name, (imaging.ImageError,)
    tally.run(f"read_image({name})", lambda: imaging.read_image(p), bad)
    tally.run(f"inspect_image({name})", lambda: imaging.inspect_image(p), bad)
    tally.run(f"inspect_image({name}, verify=False)", lambda: imaging.inspect_image(p, verify=False), bad)
    tally.run(f"DecodeCache.warm({name})", lambda: cache.warm(p, 32), bad)
    if p.suffix == ".dcm":
        tally.run(f"dicom_metadata({name})", lambda: imaging.dicom_metadata(p), bad)

    def upload_check() -> None:
        reason = uploads.check_content(p)
        if reason:
            raise imaging.ImageError(reason)

    tally.run(f"uploads.check_content({name})", upload_check, bad)


def scan_folder(folder: Path, tally: Tally) -> None:
    """A folder scan of the hostile files (as one class) must finish with each one a plain problem row."""
    from core.data.folders import scan_folder
    from core.data.items import SourceError

    tally.tried += 1
    try:
        ds = scan_folder(folder, workers=2)
    except SourceError as e:
        tally.refused += 1
        if unclear(str(e)):
            tally.unclear += 1
        return
    except Exception as e:  # noqa: BLE001
        tally.crashed += 1
        tally._note(f"crash in scan_folder: {type(e).__name__}: {e}")
        return
    tally.accepted += 1
    bad = [r for r in ds.problems["reason"] if unclear(str(r))]
    tally.unclear += len(bad)
    for r in bad[:3]:
        tally._note(f"unclear problem row: {r!r}")


def csv_paths(tables: list[Path], tally: Tally) -> None:
    """Each hostile CSV through the CSV source: a Dataset with problem rows, or a SourceError with a reason."""
    from core.data.items import SourceError
    from core.data.tables import from_csv

    for t in tables:
        tally.run(
            f"from_csv({t.name})",
            lambda t=t: from_csv(t, t.parent, workers=1),
            (SourceError,),
        )


# ---------------------------------------------------------------- memory probe (fresh processes)

_PROBE = r"""
import json, sys, time
sys.path.insert(0, sys.argv[1])
from core.data import decode_cache
from core.data import imaging
def status(key):
    for ln in open("/proc/self/status"):
        if ln.startswith(key):
            return int(ln.split()[1]) * 1024
    return 0
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")
base, t = status("VmRSS"), time.perf_counter()
if sys.argv[3:] == ["upload"] and sys.argv[2].endswith(".zip"):  # a zip upload, checked 4 files at a time
    from pathlib import Path
    from core.web import uploads
    limits = uploads.UploadLimits.from_totals(200_000_000, 5000)
    root = uploads.extract_zip("probe-00001", Path(sys.argv[2]).read_bytes(), limits, Path(sys.argv[2]).stem)
    outcome = f"accepted {len(list(root.rglob('*.png')))} files"
elif sys.argv[3:] == ["upload"]:  # the hosted upload check, as the web server runs it
    from pathlib import Path
    from core.web import uploads
    reason = uploads.check_content(Path(sys.argv[2])); outcome = "refused: " + reason if reason else "accepted"
else:
    try:
        im = imaging.read_image(sys.argv[2]); outcome = f"accepted {im.size[0]}x{im.size[1]}"
    except imaging.ImageError as e:
        outcome = "refused: " + str(e)
print(json.dumps({"outcome": outcome, "peak_growth_mb": round((status("VmHWM") - base) / 1e6, 1),
                  "peak_rss_mb": round(status("VmHWM") / 1e6, 1), "seconds": round(time.perf_counter() - t, 2)}))
"""


def _probe(path: Path, upload: bool = False, budget_mb: int = 0) -> dict[str, Any]:
    """Decode (or upload-check) one file in a fresh python (with another decode budget when given): outcome,
    peak RSS growth over the idle process, seconds."""
    if not Path("/proc/self/clear_refs").exists():
        return {"skipped": "needs Linux /proc"}
    args = [sys.executable, "-c", _PROBE, str(ROOT), str(path)] + (["upload"] if upload else [])
    env = {**os.environ, **({"XRT_DECODE_MEMORY_MB": str(budget_mb)} if budget_mb else {})}
    out = subprocess.run(args, capture_output=True, text=True, timeout=300, env=env)
    if out.returncode:
        return {"crashed": out.stderr.strip().splitlines()[-1:] or [f"exit {out.returncode}"]}
    return json.loads(out.stdout.strip().splitlines()[-1])


def largest_accepted(folder: Path) -> dict[str, Path]:
    """The largest RGBA PNG and 16-bit DICOM the default budget accepts (complete files, zeros + a ramp)."""
    from core.data import imaging

    budget = imaging.decode_budget_bytes()
    side = int((budget / imaging.raster_decode_bytes(1, 1, "RGBA")) ** 0.5) - 8
    png = real_png(folder / f"largest_rgba_{side}.png", side, side, 8, 6)
    dside = int((budget / imaging.dicom_decode_bytes(1, 1, 1, 16)) ** 0.5) - 8
    ramp = (np.arange(dside * dside, dtype=np.uint32) % 4096).astype(np.uint16).reshape(dside, dside)
    dcm = write_dicom(dicom_dataset(ramp), folder / f"largest_16bit_{dside}.dcm")
    return {"rgba_png": png, "dicom_16bit": dcm}


def memory_probe(folder: Path, smoke: bool) -> dict[str, Any]:
    """Peak RSS to decode hostile 9400x9400 PNGs (refused cheaply) and the largest accepted files."""
    folder.mkdir(parents=True, exist_ok=True)
    files = {
        "hostile_rgba_9400_png": real_png(folder / "rgba_9400.png", 9400, 9400, 8, 6),
        "hostile_grey16_9400_png": real_png(folder / "grey16_9400.png", 9400, 9400, 16, 0),
    }
    bomb = "deflated_dicom_bomb_" + ("64mb_budget_100mb" if smoke else "1gb")  # a 64 KB / 1 MB file
    files[bomb] = deflated_dicom(folder / "deflated_bomb.dcm", padding=(64 << 20) if smoke else (1 << 30))
    if not smoke:
        files.update(largest_accepted(folder))
        out_zip = _zip_probes(folder)
    out = {}
    for name, p in files.items():
        budget = 100 if name == bomb and smoke else 0
        out[name] = {"file_kb": round(p.stat().st_size / 1e3), **_probe(p, budget_mb=budget)}
        if name == bomb:
            out[name + "_upload_check"] = {
                "file_kb": round(p.stat().st_size / 1e3),
                **_probe(p, upload=True, budget_mb=budget),
            }
        p.unlink()
    if not smoke:
        out.update(out_zip)
    return out


def _zip_probes(folder: Path) -> dict[str, Any]:
    """Peak RSS of the server process checking a zip of 4 large palette PNGs on 4 threads: at the default budget
    and at a 300 MB one (each file then needs nearly all of it, so they are decoded one at a time)."""
    out = {}
    for side, budget in ((6500, 0), (3500, 300)):
        zipped = palette_zip(folder / f"palette_{side}_x4.zip", side)
        key = f"upload_zip_4_palette_{side}_png" + (f"_budget_{budget}mb" if budget else "")
        out[key] = {"file_kb": round(zipped.stat().st_size / 1e3), **_probe(zipped, True, budget)}
        zipped.unlink()
    return out


def _peak_rss_mb() -> float:
    """This process's peak resident memory (MB)."""
    import resource

    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e3, 1)


def main() -> None:
    """Generate, feed, count, print one JSON line."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mutants", type=int, default=400, help="randomly damaged copies of valid files")
    ap.add_argument(
        "--smoke", action="store_true", help="a few seconds: fewer mutants, no largest-file probe"
    )
    ap.add_argument("--no-memory", action="store_true", help="skip the decode-memory probe")
    args = ap.parse_args()
    n_mutants = 40 if args.smoke else args.mutants
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="xrt-fault-") as tmp:
        tmp_p = Path(tmp)
        os.environ.setdefault("XRT_HOME", str(tmp_p / "home"))
        groups: dict[str, Tally] = {}
        classes = make_all(tmp_p / "classes" / "x")
        decode_paths(list(classes.values()), groups.setdefault("failure_classes", Tally()), tmp_p / "cache")
        scan_folder(tmp_p / "classes", groups["failure_classes"])
        files = mutants(tmp_p / "mutants" / "m", n_mutants)
        decode_paths(files, groups.setdefault("mutants", Tally()), tmp_p / "cache")
        scan_folder(tmp_p / "mutants", groups["mutants"])
        tables = hostile_csvs(tmp_p / "csv")
        csv_paths(tables, groups.setdefault("csvs", Tally()))
        export_paths(tables, groups.setdefault("exports", Tally()))
        checkpoint_paths(tmp_p / "tampered", groups.setdefault("checkpoints", Tally()))
        memory = {} if args.no_memory else memory_probe(tmp_p / "memory", args.smoke)
    crashed_memory = sum(1 for v in memory.values() if "crashed" in v)
    result = {
        "benchmark": "fault_inject",
        "smoke": bool(args.smoke),
        "tried": sum(g.tried for g in groups.values()),
        "refused": sum(g.refused for g in groups.values()),
        "accepted": sum(g.accepted for g in groups.values()),
        "crashed": sum(g.crashed for g in groups.values()) + crashed_memory,
        "unclear_reasons": sum(g.unclear for g in groups.values()),
        "failure_classes": len(FAILURE_CLASSES),
        "groups": {
            k: {
                "tried": g.tried,
                "refused": g.refused,
                "accepted": g.accepted,
                "crashed": g.crashed,
                "unclear": g.unclear,
            }
            for k, g in groups.items()
        },
        "examples": [e for g in groups.values() for e in g.examples][:10],
        "memory_probe": memory,
        "upload_attacks_peak_rss_mb": max(
            (v.get("peak_rss_mb", 0) for k, v in memory.items() if "upload" in k), default=None
        ),
        "decode_budget_mb": round(
            __import__("core.data.imaging", fromlist=["x"]).decode_budget_bytes() / 1e6
        ),
        "peak_rss_mb": _peak_rss_mb(),
        "seconds": round(time.perf_counter() - t0, 1),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
