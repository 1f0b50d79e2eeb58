"""Any image file -> a correct 8-bit PIL image: EXIF, 16-bit, odd modes, DICOM LUTs, MONOCHROME1, frames.

Every failure is an `ImageError` whose text is a one-line reason for the user (never PHI, never a path).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import os
import re
import stat
import struct
import threading
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, TypeVar, cast

import numpy as np
from PIL import ExifTags, Image, ImageOps, UnidentifiedImageError

from core.base.config import Window
from core.base.fmt import megabytes
from core.base.paths import env_float

log = logging.getLogger(__name__)
T = TypeVar("T")

IMAGE_EXTS: frozenset[str] = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"})
DICOM_EXTS: frozenset[str] = frozenset({".dcm", ".dicom"})
MAX_PIXELS = 12000 * 12000  # refused before any pixel is decoded (raster and DICOM alike)
CACHE_VERSION = 2  # bump when decoding changes, so old cache entries are not reused
RASTER_FORMATS = ("PNG", "JPEG", "BMP", "DIB", "TIFF", "GIF", "WEBP")  # JPEG also opens MPO files
PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
COLOUR_PI = ("RGB", "PALETTE COLOR", "YBR_FULL", "YBR_FULL_422", "YBR_PARTIAL_420", "YBR_ICT", "YBR_RCT")
_DEFER = 4096  # DICOM values larger than this are read lazily (Pixel Data stays on disk)
DECODE_MEMORY_ENV = "XRT_DECODE_MEMORY_MB"  # memory all decodes of one process may use together (MB)
DEFAULT_DECODE_MEMORY_MB = 1024
# Peak bytes per pixel of a raster decode into L/RGB, by PIL mode: the decoded frame plus the pipeline's working
# copies (alpha compositing in uint16, 16-bit/float stretch in float32, EXIF transpose). Measured peak RSS per
# pixel at 3000x3000 (VmHWM after a reset): L 2.0, RGB 8.0-8.4, RGBA 25.3, LA 17.3, P 13.9-19.3, I;16 11.1,
# I/F 17.5, CMYK 12.3, 1 3.0; the table adds about 20 % headroom.
_RASTER_BYTES_PER_PIXEL = {
    "1": 4,
    "L": 3,
    "P": 24,
    "PA": 32,
    "LA": 21,
    "La": 21,
    "RGB": 10,
    "RGBA": 30,
    "RGBa": 30,
    "CMYK": 15,
    "YCbCr": 10,
    "LAB": 10,
    "HSV": 10,
    "RGBX": 15,
    "I;16": 14,
    "I;16L": 14,
    "I;16B": 14,
    "I;16N": 14,
    "I": 21,
    "F": 21,
}
_RASTER_DEFAULT_BPP = 32
# DICOM: per sample, the stored frame and pydicom's copy (2 x stored bytes) plus float32 modality values and the
# window's float32 working copy, plus the uint8 results (~14 bytes); measured 13.4 B/px for 8- and 16-bit grey
# and 40.4 for 8-bit RGB at 3000x3000, estimated 16 / 18 / 48.
_DICOM_SAMPLE_OVERHEAD = 14
CANNOT_DECODE = "compressed with a method this app cannot decode"
_TS_NAMES = {  # transfer syntaxes newer than pydicom's list
    "1.2.840.10008.1.2.8.1": "Deflated Image Frame Compression",
    "1.2.840.10008.1.2.4.110": "JPEG XL Lossless",
    "1.2.840.10008.1.2.4.111": "JPEG XL JPEG Recompression",
    "1.2.840.10008.1.2.4.112": "JPEG XL",
}

ALLOWED_TAGS = (
    "Modality",
    "SOPClassUID",
    "BodyPartExamined",
    "ViewPosition",
    "ImageLaterality",
    "Laterality",
    "PatientOrientation",
    "ImageType",
    "PhotometricInterpretation",
    "Rows",
    "Columns",
    "SamplesPerPixel",
    "BitsAllocated",
    "BitsStored",
    "HighBit",
    "PixelRepresentation",
    "PixelSpacing",
    "ImagerPixelSpacing",
    "WindowCenter",
    "WindowWidth",
    "VOILUTFunction",
    "RescaleSlope",
    "RescaleIntercept",
    "RescaleType",
    "NumberOfFrames",
    "TransferSyntaxUID",
    "Manufacturer",
    "ManufacturerModelName",
    "StudyDescription",
    "SeriesDescription",
    "PatientSex",
    "PatientAge",
    "KVP",
    "Exposure",
    "LossyImageCompression",
    "PresentationIntentType",
)
PHI_TAGS = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientBirthTime",
    "OtherPatientIDs",
    "OtherPatientNames",
    "PatientAddress",
    "PatientTelephoneNumbers",
    "PatientMotherBirthName",
    "MedicalRecordLocator",
    "InstitutionName",
    "InstitutionAddress",
    "InstitutionalDepartmentName",
    "ReferringPhysicianName",
    "PerformingPhysicianName",
    "OperatorsName",
    "PhysiciansOfRecord",
    "NameOfPhysiciansReadingStudy",
    "RequestingPhysician",
    "AccessionNumber",
    "StudyID",
    "StudyDate",
    "StudyTime",
    "SeriesDate",
    "AcquisitionDate",
    "ContentDate",
    "InstanceCreationDate",
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "SOPInstanceUID",
    "FrameOfReferenceUID",
    "DeviceSerialNumber",
    "StationName",
    "IssuerOfPatientID",
    "OtherPatientIDsSequence",
)

_MAGIC = (
    (b"\xff\xd8\xff", "JPEG"),
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"GIF8", "GIF"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
    (b"%PDF", "PDF"),
    (b"MZ", "a Windows executable"),
    (b"\x7fELF", "a Linux executable"),
    (b"PK\x03\x04", "ZIP"),
    (b"\x1f\x8b", "GZIP"),
    (b"\x00\x00\x00\x0cjP  ", "JPEG 2000"),
    (b"BM", "BMP"),
    (b"version https://git-lfs", "a Git LFS pointer"),
    (b"RIFF", "RIFF/WebP"),
)
_BITS = {"1": 1, "I;16": 16, "I;16L": 16, "I;16B": 16, "I;16N": 16, "I": 32, "F": 32}


class ImageError(Exception):
    """A file that cannot be used; str(err) is a one-line reason a user understands."""


@dataclass
class ImageInfo:
    """What a file holds, read from its header (and checked by decoding when asked)."""

    width: int
    height: int
    kind: str  # "image" | "dicom"
    mode: str  # PIL mode, or DICOM PhotometricInterpretation
    frames: int
    bits: int


# ---------------------------------------------------------------- decode memory budget


def decode_budget_bytes() -> int:
    """Bytes all decodes of this process may hold together: $XRT_DECODE_MEMORY_MB (default 1024 MB, at least 1 MB)."""
    return int(max(env_float(DECODE_MEMORY_ENV, DEFAULT_DECODE_MEMORY_MB), 1) * 1_000_000)


def check_decode_bytes(nbytes: int) -> None:
    """Refuse a decode whose estimated memory exceeds the budget (before any pixel is allocated)."""
    total = decode_budget_bytes()
    if nbytes > total:
        raise ImageError(
            f"image too large to decode safely: it needs about {megabytes(nbytes)} of memory, more than "
            f"this app's decode limit of {megabytes(total)} (set {DECODE_MEMORY_ENV} to change it)"
        )


class _DecodeBudget:
    """A memory budget shared by every decode in this process: a semaphore weighted by estimated bytes. While a
    large decode runs, glibc hands every block of `_MMAP_FROM` or more back to the system when it is freed."""

    def __init__(self) -> None:
        """Nothing held."""
        self.cond = threading.Condition()
        self.used = 0
        self.large = 0  # large decodes in flight
        self.local = threading.local()

    @contextlib.contextmanager
    def hold(self, nbytes: int) -> Iterator[None]:
        """Hold `nbytes` of the budget while decoding (waits for others; nested holds in a thread are free, and
        so are decodes under _SMALL_DECODE bytes: the budget is at least 1 MB, and taking its lock cost about
        5 us of a 28 px image's 90 us)."""
        if nbytes < _SMALL_DECODE or getattr(self.local, "held", False):
            yield
            return
        check_decode_bytes(nbytes)
        large = nbytes >= _TRIM_FROM
        total = decode_budget_bytes()
        with self.cond:
            while self.used and self.used + nbytes > total:
                self.cond.wait()
            self.used += nbytes
            self.large += large
            if large and self.large == 1:
                _set_mmap_threshold(_MMAP_FROM)
        self.local.held = True
        try:
            yield
        finally:
            self.local.held = False
            with self.cond:
                if large:
                    _release_freed_memory()  # before the next decode may start, in another thread's malloc arena
                    self.large -= 1
                    if not self.large:
                        _set_mmap_threshold(_heap_blocks)
                self.used -= nbytes
                self.cond.notify_all()


_TRIM_FROM = 32_000_000  # decodes estimated at this many bytes or more hand their freed memory back
_SMALL_DECODE = 256_000  # decodes estimated under this many bytes (a 160 px RGB image) skip the budget


@functools.cache
def _libc_function(name: str) -> Callable[..., int] | None:
    """A function of glibc (malloc_trim, mallopt), or None (another C library, another OS)."""
    import ctypes
    import ctypes.util

    try:
        return cast(
            Callable[..., int], getattr(ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6"), name)
        )
    except (OSError, AttributeError):
        return None


# glibc serves a block of at least its mmap threshold by mmap and unmaps it when freed; smaller blocks come from
# (per-thread) arenas and stay resident after free. glibc raises the threshold up to 32 MiB as large blocks are
# freed, so a decode's freed working copies stayed resident beside the next decode's: four threads checking
# colour-palette PNGs in turn peaked at 325-396 MB against a 300 MB budget; with the threshold at 4 MiB while a
# large decode runs, at 235-240 MB, one decode's peak (tests/test_decode_memory.py). Between decodes the threshold
# is 32 MiB, where glibc's own adjustment ends up, because repeated 4-32 MB allocations (training batches) cost
# 4x the CPU when each one is mapped afresh.
_MMAP_FROM = 4 << 20
_HEAP_UP_TO = 32 << 20
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters


def _set_mmap_threshold(nbytes: int) -> None:
    """Set glibc's mmap threshold, and its heap-trim threshold to twice that as glibc's own adjustment does
    (nothing on another C library)."""
    mallopt = _libc_function("mallopt")
    if mallopt is not None:
        mallopt(_M_MMAP_THRESHOLD, nbytes)
        mallopt(_M_TRIM_THRESHOLD, 2 * nbytes)


_heap_blocks = _HEAP_UP_TO  # the mmap threshold between large decodes (raised by keep_heap_blocks)
MAX_HEAP_BLOCKS = 512 << 20


def keep_heap_blocks(nbytes: int) -> int:
    """Serve blocks of up to `nbytes` (at most MAX_HEAP_BLOCKS) from the heap from now on, reusing freed ones,
    instead of mapping each afresh and unmapping it when freed; never lowered (large decodes still lower it
    while they run). Returns the threshold between large decodes.

    A model's forward pass allocates its activations anew each batch: resnet18's first block at 128 px and batch 32
    is 33.5 MB, over glibc's 32 MiB ceiling, so every batch faulted its pages in again, and a decode between two
    batches let glibc trim and unmap the rest (prediction from files: 900 page faults an image against 280 for
    the model on decoded tensors, 12-15 % slower). With the blocks kept: no faults, and the model itself about
    10 % faster (bench/README.md)."""
    global _heap_blocks
    budget = _BUDGET
    with budget.cond:
        want = min(MAX_HEAP_BLOCKS, max(_heap_blocks, int(nbytes)))
        if want != _heap_blocks:
            _heap_blocks = want
            if not budget.large:
                _set_mmap_threshold(want)
    return _heap_blocks


def _release_freed_memory() -> None:
    """Return the memory a finished decode freed to the OS. glibc keeps freed blocks in the arena of the thread
    that freed them, so decodes taking turns on 4 threads held up to 4 decodes' worth at once (1.3 GB measured
    for a 1 GB budget); trimming makes the budget hold for the process as measured."""
    trim = _libc_function("malloc_trim")
    if trim is not None:
        trim(0)


def release_heap() -> None:
    """Hand the heap's free memory back to the OS (every thread's arena): after work that kept blocks
    (keep_heap_blocks), so an idle app does not hold them."""
    _release_freed_memory()


_BUDGET = _DecodeBudget()


def _reset_budget() -> None:
    """A forked child starts with nothing held (the parent's decoding threads do not exist there)."""
    global _BUDGET
    _BUDGET = _DecodeBudget()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_budget)


def raster_decode_bytes(width: int, height: int, mode: str) -> int:
    """Estimated peak bytes to decode a raster of this size and PIL mode into 8-bit L/RGB (working copies too)."""
    return int(width) * int(height) * _RASTER_BYTES_PER_PIXEL.get(mode, _RASTER_DEFAULT_BPP)


def dicom_decode_bytes(rows: int, cols: int, samples: int, bits_allocated: int, extra: int = 0) -> int:
    """Estimated peak bytes to decode one DICOM frame into 8-bit (stored, modality float32, window copies)."""
    stored = max(bits_allocated, 8) // 8
    return int(rows) * int(cols) * max(samples, 1) * (2 * stored + _DICOM_SAMPLE_OVERHEAD) + int(extra)


# ---------------------------------------------------------------- files and sniffing


def _short(exc: BaseException, ds: Any = None) -> str:
    """An exception's text on one short line, with any PHI value of `ds` masked (for logs and details)."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    lines = [ln for ln in lines if not ln.lower().startswith("unable to decode as exceptions")] or lines
    text = "; ".join(lines)
    text = text if len(text) <= 240 else text[:237] + "..."
    return _scrub(text or type(exc).__name__, ds)


_REPR = re.compile(r"<[^<>]*\bat 0x[0-9a-fA-F]+>|\b0x[0-9a-fA-F]{6,}\b")


def _plain(text: str) -> str:
    """A library message as a short detail for users: object reprs and chained 'lib: ...; lib: ...' dropped."""
    text = _REPR.sub("", text).strip(" :;,")
    if ";" in text or "\n" in text or "Errno" in text or "/" in text or "\\" in text:
        return ""
    return text if len(text) <= 120 else ""


def user_reason(exc: BaseException) -> str:
    """One plain sentence for a user about why one file could not be used, whatever library raised."""
    if isinstance(exc, ImageError):
        return str(exc) or "the file cannot be used"
    if isinstance(exc, MemoryError):
        return "not enough memory on this machine to decode this image"
    if isinstance(exc, OSError) and exc.errno is not None:
        return f"cannot read file ({exc.strerror or os.strerror(exc.errno)})"
    return "the file could not be read as an image (its decoder failed on it unexpectedly)"


def _library_error(e: BaseException) -> BaseException:
    """`e` when a library raised it for a bad file; re-raised when it is an interrupt or exit."""
    if isinstance(e, (KeyboardInterrupt, SystemExit, GeneratorExit)):
        raise e
    return e


def _one_reason(fn: Callable[..., T]) -> Callable[..., T]:
    """Turn every failure of a decode entry point into an ImageError with one plain sentence."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> T:
        try:
            return fn(*args, **kwargs)
        except ImageError:
            raise
        except BaseException as e:  # any library may raise anything for a hostile file (pyo3 panics too)
            log.info("decode failed unexpectedly: %s", type(_library_error(e)).__name__)
            raise ImageError(user_reason(e)) from None

    return wrapper


class _MuteInside(logging.Filter):
    """Drops pydicom log records emitted inside this module's calls (they may quote header values)."""

    state = threading.local()

    def filter(self, record: logging.LogRecord) -> bool:
        """Keep a record only when no call of this module is running in this thread."""
        return not getattr(self.state, "depth", 0)


for _name in ("pydicom", "pydicom.pixels.utils", "pydicom.pixels.decoders.base"):
    logging.getLogger(_name).addFilter(_MuteInside())


def _quiet(fn: Callable[..., T]) -> Callable[..., T]:
    """Run `fn` with warnings and pydicom logging silenced: both may quote header values (PHI)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> T:
        st = _MuteInside.state
        st.depth = getattr(st, "depth", 0) + 1
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return fn(*args, **kwargs)
        finally:
            st.depth -= 1

    return wrapper


def _check_file(path: str | os.PathLike) -> Path:
    """The path as a readable, non-empty file, or an ImageError."""
    p = Path(path)
    try:
        st = os.stat(p)  # one stat answers all three questions
    except FileNotFoundError:
        raise ImageError("file not found") from None
    except OSError as e:
        raise ImageError(f"cannot read file ({e.strerror or type(e).__name__})") from None
    if stat.S_ISDIR(st.st_mode):
        raise ImageError("is a folder, not a file")
    if st.st_size == 0:
        raise ImageError("empty file")
    return p


def _open_checked(name: str) -> BinaryIO:
    """The file opened for reading, refused for _check_file's reasons with its sentences (one open and one fstat:
    a Path and a stat by name cost about 8 us of a 28 px PNG's 80 us)."""
    try:
        f = open(name, "rb")
    except FileNotFoundError:
        raise ImageError("file not found") from None
    except OSError as e:
        _check_file(name)  # a folder (Windows says "permission denied" for it) or a stat error: its reason
        raise ImageError(user_reason(e)) from None
    try:
        empty = os.fstat(f.fileno()).st_size == 0
    except OSError as e:
        f.close()
        raise ImageError(user_reason(e)) from None
    if empty:
        f.close()
        raise ImageError("empty file")
    return f


def _head(path: str | Path, n: int = 1024) -> bytes:
    """The first `n` bytes of a file (b"" when unreadable)."""
    try:
        with open(path, "rb") as f:
            return f.read(n)
    except OSError:
        return b""


def _looks_like(head: bytes) -> str:
    """A guess at what a file is from its first bytes ("" when unknown)."""
    if head[128:132] == b"DICM":
        return "DICOM"
    for magic, name in _MAGIC:
        if head.startswith(magic):
            return name
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if text.startswith((b"<!doctype html", b"<html", b"<head", b"<body")) or b"<html" in text:
        return "HTML"
    if text.startswith((b"<?xml", b"<svg")):
        return "XML/SVG"
    if text and all(32 <= c < 127 or c in b"\t\r\n" for c in text[:512]):
        return "text"
    return ""


def _looks_like_note(head: bytes) -> str:
    """' (looks like X)' for messages, or a generic note."""
    kind = _looks_like(head)
    return f" (looks like {kind})" if kind else " (unrecognised file format)"


def _raw_dataset_start(head: bytes) -> bool:
    """Bytes that begin like a DICOM dataset written without preamble (first tag in group 0002/0008)."""
    if len(head) < 12:
        return False
    g_le, g_be = struct.unpack("<H", head[:2])[0], struct.unpack(">H", head[:2])[0]
    if g_le not in (0x0002, 0x0008) and g_be != 0x0008:
        return False
    vr = head[4:6]
    if vr.isalpha() and vr.isupper():
        return True  # explicit VR
    length = struct.unpack("<I" if g_le in (0x0002, 0x0008) else ">I", head[4:8])[0]
    return length < 0x10000 or length == 0xFFFFFFFF  # implicit VR: a plausible element length


@_quiet
def is_dicom(path: str | os.PathLike) -> bool:
    """True when the file's content is DICOM: 'DICM' magic, or a dataset written without file meta."""
    return _dicom_content(Path(path), _head(Path(path), 256))


def _dicom_content(path: str | Path, head: bytes) -> bool:
    """is_dicom for a file whose first 256 bytes are `head` (the raw-dataset case reads the header to be sure)."""
    if head[128:132] == b"DICM":
        return True
    if not _raw_dataset_start(head):
        return False
    try:
        return len(_dcmread(Path(path), force=True, stop_before_pixels=True)) > 0
    except Exception:
        return False


def _wants_dicom(path: Path) -> bool:
    """Decode as DICOM: a DICOM extension (checked later) or DICOM content."""
    return path.suffix.lower() in DICOM_EXTS or is_dicom(path)


# ---------------------------------------------------------------- public entry points


@_one_reason
@_quiet
def inspect_image(
    path: str | os.PathLike,
    verify: bool = True,
    decode: Callable[[Path], object] | None = None,
    refuse_flat: bool = False,
) -> ImageInfo:
    """Size, kind, mode, frames and bit depth; verify=True also decodes the pixels (catches truncation).

    `decode(path)` replaces the verifying `read_image(path)` when given, e.g. a DecodeCache.warm partial so
    that the decode done to validate a file is the one training will use (each file decoded once, not twice).
    refuse_flat=True also refuses an image whose pixels all have one value (DecodeCache.warm always does).
    """
    p = _check_file(path)
    info = _inspect_dicom(p) if _wants_dicom(p) else _inspect_raster(p)
    if verify:
        if decode is not None:
            decode(p)
        elif refuse_flat:
            check_not_flat(read_image(p))
        else:
            read_image(p)
        if info.kind == "dicom" and info.frames > 1:
            read_dicom_array(p, frame=info.frames - 1)
    return info


@_one_reason
@_quiet
def read_image(path: str | os.PathLike, window: Window | None = None, frame: int = 0) -> Image.Image:
    """8-bit "L" (greyscale source) or "RGB" (colour source); `window` applies to DICOM only; frame 0 = first."""
    name = os.fspath(path)
    if os.path.splitext(name)[1].lower() in DICOM_EXTS:
        return _read_dicom_image(_check_file(name), window, frame)
    with _open_checked(name) as f:  # one open for the DICOM sniff and the decode
        if _dicom_content(name, f.read(256)):
            return _read_dicom_image(Path(name), window, frame)
        f.seek(0)
        return _read_raster(name, frame, f)


def check_not_flat(im: Image.Image) -> Image.Image:
    """The image, or an ImageError when every pixel has one value (blank: nothing to learn from, or a bad window)."""
    ext = im.getextrema()
    bands = cast("list[tuple[float, float]]", [ext] if im.mode == "L" else list(ext))
    lo, hi = min(b[0] for b in bands), max(b[1] for b in bands)
    if lo == hi:
        raise ImageError(
            f"every pixel of the decoded image has the same value ({lo}): a blank image, left out"
        )
    return im


# ---------------------------------------------------------------- raster images (Pillow)


@contextlib.contextmanager
def _pillow_guard() -> Iterator[None]:
    """Pillow's DecompressionBombWarning as an error (locally), and any Pillow failure as an ImageError."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            yield
    except ImageError:
        raise
    except (Image.DecompressionBombWarning, Image.DecompressionBombError):
        raise ImageError(
            f"image too large (over {Image.MAX_IMAGE_PIXELS} pixels; a decompression bomb?)"
        ) from None
    except MemoryError:
        raise ImageError(user_reason(MemoryError())) from None
    except OSError as e:
        if e.errno is not None:
            raise ImageError(user_reason(e)) from None
        detail = _plain(_short(e))
        raise ImageError("truncated or corrupt image data" + (f" ({detail})" if detail else "")) from None
    except Exception as e:
        detail = _plain(_short(e))
        raise ImageError("truncated or corrupt image data" + (f" ({detail})" if detail else "")) from None


def _open_raster(path: Path, fp: BinaryIO | None = None) -> Image.Image:
    """Open (header only) with decompression bombs and non-images refused; from `fp` (the file at `path`, opened
    by the caller, who closes it) when given."""
    with _pillow_guard():
        return _opened(path, fp)


def _opened(path: str | Path, fp: BinaryIO | None) -> Image.Image:
    """_open_raster's work, inside the caller's _pillow_guard."""
    try:
        im = Image.open(path if fp is None else fp, formats=RASTER_FORMATS)
    except UnidentifiedImageError:
        kind = _looks_like(_head(path))
        if kind in ("JPEG", "PNG", "GIF", "TIFF", "BMP", "RIFF/WebP"):
            raise ImageError(f"truncated or corrupt image data: unreadable {kind} header") from None
        raise ImageError(f"not an image{_looks_like_note(_head(path))}") from None
    _check_pixels(*im.size)
    return im


def _check_pixels(width: int, height: int) -> None:
    """Refuse images larger than MAX_PIXELS before any pixel is allocated."""
    if width * height > MAX_PIXELS:
        raise ImageError(f"image too large: {width}x{height} pixels (limit {MAX_PIXELS})")


def _inspect_raster(path: Path) -> ImageInfo:
    """ImageInfo from a raster file's header."""
    with _open_raster(path) as im, _pillow_guard():
        frames = getattr(im, "n_frames", 1)
        check_decode_bytes(raster_decode_bytes(im.width, im.height, im.mode))
        return ImageInfo(im.width, im.height, "image", im.mode, frames, _BITS.get(im.mode, 8))


def _read_raster(path: str | Path, frame: int = 0, fp: BinaryIO | None = None) -> Image.Image:
    """Decode one frame of a raster file (from `fp`, the file opened, when given) and normalise it to L or RGB.
    One guard spans the open and the decode (each guard's warning filters cost about 3 us)."""
    with _pillow_guard(), _opened(path, fp) as im:
        _seek(im, frame)
        w, h = im.size
        if frame:  # a frame may have its own size (the open checked the first)
            _check_pixels(w, h)
        with _BUDGET.hold(raster_decode_bytes(w, h, im.mode)):
            im.load()
            return to_8bit(_exif_transpose(im))


def _seek(im: Image.Image, frame: int) -> None:
    """Move to frame `frame`, or refuse one that does not exist."""
    n = getattr(im, "n_frames", 1)
    if not 0 <= frame < n:
        raise ImageError(f"frame {frame} out of range (the file has {n} frame(s))")
    if frame:
        im.seek(frame)


def _exif_transpose(im: Image.Image) -> Image.Image:
    """Apply the EXIF (or XMP) orientation tag; a broken EXIF block leaves the image as stored. Pillow's
    exif_transpose copies the image when there is nothing to turn: `im` itself is returned then."""
    try:
        if im.getexif().get(ExifTags.Base.Orientation, 1) not in _TURNED:
            return im
        return ImageOps.exif_transpose(im) or im
    except Exception:
        return im


_TURNED = range(2, 9)  # EXIF orientations other than "as stored" (1)


def to_8bit(im: Image.Image) -> Image.Image:
    """Any PIL mode -> "L" or "RGB": 16-bit/float stretched min-max, alpha over black, palette resolved."""
    mode = im.mode
    if mode in ("L", "RGB"):
        return im
    if mode == "1":
        return im.convert("L")
    if mode in ("P", "PA"):
        return _from_palette(im)
    if mode in ("LA", "La"):
        return _over_black(im.convert("LA"), "L")
    if mode in ("RGBA", "RGBa"):
        return _over_black(im.convert("RGBA"), "RGB")
    if mode.startswith(("I", "F")):
        return Image.fromarray(stretch(np.asarray(im)), "L")
    try:
        return im.convert("RGB")  # CMYK, YCbCr, LAB, HSV, RGBX ...
    except Exception as e:
        raise ImageError(f"unsupported image mode {mode}: {_short(e)}") from None


def _over_black(im: Image.Image, mode: str) -> Image.Image:
    """Composite an image with alpha (LA / RGBA) over black: round(value * alpha / 255), in uint16."""
    a = np.asarray(im)
    out = a[..., :-1] * a[..., -1:].astype(np.uint16)  # at most 255 * 255: fits uint16
    out += 127  # x * a / 255 is never exactly .5 (255 is odd), so this rounds like np.rint
    out //= 255
    out = out.astype(np.uint8)
    return Image.fromarray(out[..., 0] if mode == "L" else out, mode)


def _from_palette(im: Image.Image) -> Image.Image:
    """Palette image -> L when every used palette entry is grey (and opaque), else RGB over black."""
    rgba = np.asarray(im.convert("RGBA"))
    grey = (rgba[..., 0] == rgba[..., 1]).all() and (rgba[..., 1] == rgba[..., 2]).all()
    opaque = (rgba[..., 3] == 255).all()
    if grey and opaque:
        return Image.fromarray(np.ascontiguousarray(rgba[..., 0]), "L")
    return _over_black(Image.fromarray(rgba, "RGBA"), "L" if grey else "RGB")


def stretch(arr: np.ndarray) -> np.ndarray:
    """Min-max of the finite values -> uint8 0..255; a constant (or all non-finite) image -> 0."""
    dtype = np.float64 if np.asarray(arr).dtype == np.float64 else np.float32
    a: np.ndarray[Any, np.dtype[np.floating[Any]]] = np.array(arr, dtype=dtype)  # one working copy
    finite = np.isfinite(a)
    if not finite.any():
        return np.zeros(a.shape, np.uint8)
    all_finite = bool(finite.all())
    lo, hi = (a.min(), a.max()) if all_finite else (a[finite].min(), a[finite].max())
    if hi <= lo:
        return np.zeros(a.shape, np.uint8)
    if not all_finite:
        a[~finite] = lo
    del finite
    a -= lo
    a *= a.dtype.type(255.0 / (hi - lo))
    np.clip(a, 0, 255, out=a)
    return np.rint(a, out=a).astype(np.uint8)


def window_ok(width: float, function: str = "LINEAR") -> bool:
    """Whether a window width is valid for its VOI LUT function (PS3.3 C.11.2.1.2: LINEAR needs >= 1, else > 0)."""
    w = float(width)
    fn = (function or "LINEAR").strip().upper()
    return bool(np.isfinite(w) and (w > 0 if fn in ("LINEAR_EXACT", "SIGMOID") else w >= 1))


def apply_window(arr: np.ndarray, center: float, width: float, function: str = "LINEAR") -> np.ndarray:
    """Window centre/width -> uint8 exactly by DICOM PS3.3 C.11.2.1.2 (LINEAR; also LINEAR_EXACT, SIGMOID).

    LINEAR: x <= c - 0.5 - (w-1)/2 -> 0, x > c - 0.5 + (w-1)/2 -> 255, else ((x - (c-0.5)) / (w-1) + 0.5) * 255
    (w = 1 is a hard threshold at c - 0.5); LINEAR_EXACT: the same with c and w; SIGMOID: 255 / (1 + exp(-4(x-c)/w)).
    A width the function does not allow raises ValueError (see window_ok).
    """
    c, w = float(center), float(width)
    fn = (function or "LINEAR").strip().upper()
    if not (np.isfinite(c) and window_ok(w, fn)):
        raise ValueError(
            f"window width {width} is not valid for a {fn} window (LINEAR needs >= 1, others > 0)"
        )
    x = np.asarray(arr, dtype=np.float32)  # float32 halves the memory of large radiographs
    if fn == "SIGMOID":
        y = np.subtract(x, c, dtype=np.float32)
        y *= np.float32(-4.0 / w)
        np.clip(y, -80, 80, out=y)
        np.exp(y, out=y)
        y += 1.0
        np.reciprocal(y, out=y)
    elif fn == "LINEAR_EXACT":
        y = np.subtract(x, c, dtype=np.float32)
        y /= np.float32(w)
        y += 0.5
    elif w > 1:
        y = np.subtract(x, c - 0.5, dtype=np.float32)
        y /= np.float32(w - 1.0)
        y += 0.5
    else:  # w == 1: x <= c - 0.5 -> 0, above -> 255
        y = (x > np.float32(c - 0.5)).astype(np.float32)
    np.clip(y, 0.0, 1.0, out=y)
    y *= 255.0
    return np.rint(y, out=y).astype(np.uint8)


# ---------------------------------------------------------------- DICOM


def _dcmread(path: Path, force: bool = False, stop_before_pixels: bool = False) -> Any:
    """pydicom.dcmread with large values (Pixel Data) left on disk until needed; a deflated file is bounded first."""
    from pydicom import dcmread

    inflated = _check_deflated(path)
    ds = dcmread(path, force=force, stop_before_pixels=stop_before_pixels, defer_size=_DEFER)
    if inflated is not None:
        ds.xrt_inflated_bytes = inflated
    return ds


def _check_deflated(path: Path) -> int | None:
    """Bytes a Deflated Explicit VR Little Endian file inflates to (None for other files), refused as a
    compression bomb past half the decode budget (pydicom holds the deflated and inflated copies at once)."""
    from core.data.deflate import InflateLimitError, inflated_size

    total = decode_budget_bytes()
    try:
        return inflated_size(path, total // 2)
    except InflateLimitError as e:
        if not e.too_large:
            raise ImageError(f"a damaged DICOM file: {e}") from None
        raise ImageError(
            f"a deflated DICOM that inflates to more than {megabytes(total // 2)} (a compression bomb, or "
            f"more than half of this app's decode limit of {megabytes(total)}; set {DECODE_MEMORY_ENV} to "
            "change it)"
        ) from None


def _read_header(path: Path) -> Any:
    """The dataset (Pixel Data left on disk), read without force unless it is a DICOM without meta."""
    from pydicom.errors import InvalidDicomError

    head = _head(path)
    try:
        try:
            ds = _dcmread(path)
        except InvalidDicomError:
            if not _raw_dataset_start(head):
                raise ImageError(f"not a DICOM file{_dicom_note(head)}") from None
            ds = _dcmread(path, force=True)
    except ImageError:
        raise
    except MemoryError:
        raise ImageError(user_reason(MemoryError())) from None
    except Exception:
        raise ImageError("a damaged DICOM file: its header cannot be read") from None
    if len(ds) == 0 and head[128:132] == b"DICM":
        raise ImageError("a damaged DICOM file: nothing readable follows its file header")
    if len(ds) == 0:
        raise ImageError(f"not a DICOM file{_dicom_note(head)}")
    _ensure_transfer_syntax(ds)
    return ds


def _dicom_note(head: bytes) -> str:
    """' (looks like X)' or ' (no DICM marker)' for 'not a DICOM' messages."""
    if head[128:132] == b"DICM":
        return " (it has a DICOM marker but its header is damaged)"
    kind = _looks_like(head)
    return f" (looks like {kind})" if kind else " (no DICM marker)"


def _ensure_transfer_syntax(ds: Any) -> None:
    """Give a dataset without file meta / Transfer Syntax UID the syntax it was actually read with."""
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

    meta = getattr(ds, "file_meta", None)
    if meta is None:
        meta = ds.file_meta = FileMetaDataset()
    if meta.get("TransferSyntaxUID"):
        return
    implicit, little = ds.original_encoding
    if implicit is None:
        implicit, little = True, True
    meta.TransferSyntaxUID = (
        ImplicitVRLittleEndian if implicit else ExplicitVRLittleEndian if little else ExplicitVRBigEndian
    )


def _int(ds: Any, keyword: str, default: int = 0) -> int:
    """An integer header value (first of a multi-value), or `default` when absent or malformed."""
    try:
        v = ds.get(keyword)
        v = v[0] if _is_multi(v) else v
        return int(v) if v not in (None, "") else default
    except Exception:
        return default


def _float(ds: Any, keyword: str) -> float | None:
    """A float header value (first of a multi-value), or None when absent or malformed."""
    try:
        v = ds.get(keyword)
        v = v[0] if _is_multi(v) else v
        f = float(v) if v not in (None, "") else None
        return f if f is not None and np.isfinite(f) else None
    except Exception:
        return None


def _is_multi(v: Any) -> bool:
    """True for pydicom MultiValue / list values."""
    return isinstance(v, (list, tuple)) or type(v).__name__ == "MultiValue"


def _photometric(ds: Any) -> str:
    """PhotometricInterpretation, upper-case, MONOCHROME2 when absent."""
    return str(ds.get("PhotometricInterpretation") or "MONOCHROME2").strip().upper()


def _frames(ds: Any) -> int:
    """Number of frames (1 when absent)."""
    return max(_int(ds, "NumberOfFrames", 1), 1)


def _check_dicom_image(ds: Any) -> None:
    """Refuse from the header: no pixel data, no/absurd geometry, unsupported layouts."""
    if not any(k in ds for k in PIXEL_KEYWORDS):
        raise ImageError("DICOM has no image data (Pixel Data element missing; e.g. a report or RT plan)")
    rows, cols = _int(ds, "Rows"), _int(ds, "Columns")
    if rows <= 0 or cols <= 0:
        raise ImageError("DICOM image has no size (Rows/Columns missing or 0)")
    _check_pixels(cols, rows)
    if _int(ds, "SamplesPerPixel", 1) not in (1, 3):
        raise ImageError(f"unsupported DICOM layout: {_int(ds, 'SamplesPerPixel')} samples per pixel")
    if "PixelData" in ds and _int(ds, "BitsAllocated", 0) not in (1, 8, 16, 32, 64):
        raise ImageError(f"unsupported DICOM bit depth: {_int(ds, 'BitsAllocated')} bits allocated")
    _check_transfer_syntax(ds)


def _ts_name(ts: Any) -> str:
    """A transfer syntax by name (with its UID when pydicom does not know it)."""
    uid = str(ts or "").strip()
    if uid in _TS_NAMES:
        return f"{_TS_NAMES[uid]} ({uid})"
    name = str(getattr(ts, "name", "") or "")
    return name if name and name != uid else f"an unknown transfer syntax ({uid[:64] or 'empty'})"


def _check_transfer_syntax(ds: Any) -> None:
    """Refuse from the header a transfer syntax that no installed decoder handles (new, private or made up)."""
    from pydicom.pixels import get_decoder
    from pydicom.uid import UID

    ts = UID(str(ds.file_meta.TransferSyntaxUID))
    try:
        ok = ts.is_transfer_syntax and get_decoder(ts).is_available
    except Exception:
        ok = False
    if not ok:
        raise ImageError(f"{CANNOT_DECODE}: {_ts_name(ts)}")


def _dicom_bytes(ds: Any) -> int:
    """Estimated peak bytes to decode one frame of this dataset (compressed files are read whole too)."""
    ts = ds.file_meta.TransferSyntaxUID
    extra = int(getattr(ds, "xrt_inflated_bytes", 0))
    if (ts.is_encapsulated or ts.is_deflated) and getattr(ds, "filename", None):
        with contextlib.suppress(OSError, TypeError):
            extra += os.path.getsize(ds.filename)
    spp = _int(ds, "SamplesPerPixel", 1)
    return dicom_decode_bytes(_int(ds, "Rows"), _int(ds, "Columns"), spp, _int(ds, "BitsAllocated", 8), extra)


def _open_dicom(path: Path) -> Any:
    """Header read and checked, ready for decoding."""
    ds = _read_header(path)
    _check_dicom_image(ds)
    return ds


def _inspect_dicom(path: Path) -> ImageInfo:
    """ImageInfo from a DICOM header only."""
    ds = _open_dicom(path)
    check_decode_bytes(_dicom_bytes(ds))
    bits = _int(ds, "BitsStored", _int(ds, "BitsAllocated", 0))
    return ImageInfo(_int(ds, "Columns"), _int(ds, "Rows"), "dicom", _photometric(ds), _frames(ds), bits)


def _decode_frame(path: Path, ds: Any, frame: int) -> np.ndarray:
    """Decode only frame `frame` from disk; fall back to a full read for odd encodings (e.g. deflate)."""
    from pydicom.pixels import pixel_array

    if not 0 <= frame < _frames(ds):
        raise ImageError(f"frame {frame} out of range (the file has {_frames(ds)} frame(s))")
    _check_native_length(ds)
    ts = ds.file_meta.TransferSyntaxUID
    if ts.is_encapsulated:
        return _decode_encapsulated(path, ds, frame)
    try:
        return pixel_array(path, index=frame, transfer_syntax_uid=ts)
    except Exception as first:
        try:
            return _decode_in_memory(path, ds, frame)
        except Exception:
            raise ImageError(_decode_reason(first, ds)) from None


def _decode_encapsulated(path: Path, ds: Any, frame: int) -> np.ndarray:
    """Decode a compressed frame: every plugin but GDCM first; GDCM (the only JPEG-LS / lossless JPEG decoder
    here) last and only for a structurally sound JPEG stream, since a malformed one can abort the whole process
    inside GDCM's C++ code (measured: random bytes after a JPEG start marker, some damaged JPEG-LS headers)."""
    from pydicom.pixels import get_decoder, pixel_array

    ts = ds.file_meta.TransferSyntaxUID
    plugins = list(get_decoder(ts).available_plugins)
    first: BaseException | None = None
    for name in [p for p in plugins if p != "gdcm"]:
        try:
            return pixel_array(path, index=frame, transfer_syntax_uid=ts, decoding_plugin=name)
        except BaseException as e:  # Rust decoders panic with pyo3's PanicException, a BaseException
            first = first or _library_error(e)
    for name in [
        p for p in plugins if p != "gdcm"
    ]:  # whole dataset: pydicom's own frame parsing (odd offsets)
        try:
            return _decode_in_memory(path, ds, frame, name)
        except BaseException as e:
            first = first or _library_error(e)
    if "gdcm" in plugins and str(ts) in _JPEG_FAMILY and _jpeg_frame_ok(path, ds, frame):
        try:
            return pixel_array(path, index=frame, transfer_syntax_uid=ts, decoding_plugin="gdcm")
        except BaseException as e:
            first = first or _library_error(e)
    raise ImageError(_decode_reason(first or ValueError("unable to decode"), ds))


_JPEG_FAMILY = frozenset(
    {
        "1.2.840.10008.1.2.4.50",
        "1.2.840.10008.1.2.4.51",
        "1.2.840.10008.1.2.4.57",
        "1.2.840.10008.1.2.4.70",
        "1.2.840.10008.1.2.4.80",
        "1.2.840.10008.1.2.4.81",
    }
)
_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC} | {0xF7}  # JPEG SOF0-15 and JPEG-LS SOF55


def _jpeg_frame_ok(path: Path, ds: Any, frame: int) -> bool:
    """Whether one compressed frame is a well-formed JPEG / JPEG-LS marker stream matching the header."""
    from pydicom.encaps import get_frame

    try:
        full = _dcmread(path, force=getattr(ds, "preamble", None) is None)
        data = get_frame(full.PixelData, frame, number_of_frames=_frames(ds))
    except Exception:
        return False
    return _jpeg_stream_ok(bytes(data), _int(ds, "Rows"), _int(ds, "Columns"), _int(ds, "SamplesPerPixel", 1))


def _jpeg_stream_ok(b: bytes, rows: int, cols: int, samples: int) -> bool:
    """SOI, well-sized marker segments, a frame header of this size and sample count, then a sane scan header."""
    if not b.startswith(b"\xff\xd8"):
        return False
    i, sof = 2, False
    while i + 4 <= len(b):
        if b[i] != 0xFF:
            return False
        m = b[i + 1]
        if m == 0xFF:  # fill byte
            i += 1
            continue
        if m == 0x01 or 0xD0 <= m <= 0xD8:
            i += 2
            continue
        if m == 0xD9:
            return False  # end of image before any scan
        length = int.from_bytes(b[i + 2 : i + 4], "big")
        seg = b[i + 4 : i + 2 + length]
        if length < 2 or len(seg) != length - 2:
            return False
        if m in _SOF:
            if sof or len(seg) < 6 or not 2 <= seg[0] <= 16:
                return False
            h, w, n = int.from_bytes(seg[1:3], "big"), int.from_bytes(seg[3:5], "big"), seg[5]
            if h not in (0, rows) or w != cols or n != samples or len(seg) != 6 + 3 * n:
                return False
            sof = True
        if m == 0xDA:
            return (
                sof
                and len(seg) >= 1
                and 1 <= seg[0] <= 4
                and len(seg) == 1 + 2 * seg[0] + 3
                and i + 2 + length < len(b)
            )
        i += 2 + length
    return False


def _decode_in_memory(path: Path, ds: Any, frame: int, plugin: str = "") -> np.ndarray:
    """Decode one frame from a fully read dataset (pydicom's own parsing of the whole file)."""
    from pydicom.pixels import pixel_array

    full = _dcmread(path, force=getattr(ds, "preamble", None) is None)
    _ensure_transfer_syntax(full)
    return pixel_array(full, index=frame, decoding_plugin=plugin)


def _check_native_length(ds: Any) -> None:
    """Refuse uncompressed Pixel Data shorter than Rows x Columns x frames declare (a truncated file)."""
    ts = ds.file_meta.TransferSyntaxUID
    if "PixelData" not in ds or ts.is_encapsulated or ts.is_deflated:
        return
    elem = ds.get_item("PixelData", keep_deferred=True)
    if elem.value is None and hasattr(elem, "value_tell") and getattr(ds, "filename", None):
        have = min(elem.length, max(os.path.getsize(ds.filename) - elem.value_tell, 0))
    else:
        have = len(elem.value or b"")
    spp = 2 if _photometric(ds) == "YBR_FULL_422" else _int(ds, "SamplesPerPixel", 1)
    bits = _int(ds, "Rows") * _int(ds, "Columns") * spp * _frames(ds) * _int(ds, "BitsAllocated", 8)
    need = (bits + 7) // 8
    if have < need:
        raise ImageError(
            f"truncated pixel data: the file holds {have} of the {need} bytes its header declares"
        )


def _decode_reason(exc: BaseException, ds: Any) -> str:
    """A user-facing reason for a pixel decoding failure: one plain sentence, no library text."""
    if isinstance(exc, MemoryError):
        return user_reason(exc)
    low = _short(exc, ds).lower()
    ts = ds.file_meta.TransferSyntaxUID
    name = _ts_name(ts)
    if "no pixel data" in low or "no 'pixel data'" in low:
        return "DICOM has no image data (Pixel Data element missing; e.g. a report or RT plan)"
    if any(
        s in low for s in ("missing dependencies", "no available", "not supported", "no pixel data decoders")
    ):
        return f"{CANNOT_DECODE}: {name}"
    if ts.is_encapsulated:
        return f"truncated or corrupt pixel data: the {name} compressed image cannot be decoded"
    if any(s in low for s in ("reshape", "length of the pixel data", "truncat", "end of", "buffer")):
        return "truncated or corrupt pixel data: the image data is shorter or longer than its header says"
    return "corrupt DICOM pixel data: the image data does not match its header"


@_one_reason
@_quiet
def read_dicom_array(path: str | os.PathLike, frame: int = 0) -> tuple[np.ndarray, Any]:
    """One frame (0 = first) as float32 in modality units (rescale / modality LUT); colour -> HxWx3 RGB."""
    p = _check_file(path)
    ds = _open_dicom(p)
    with _BUDGET.hold(_dicom_bytes(ds)):
        return _dicom_array(p, ds, frame), ds


def _dicom_array(p: Path, ds: Any, frame: int) -> np.ndarray:
    """Decode one frame of a checked dataset to float32 modality values (or HxWx3 colour)."""
    raw = _decode_frame(p, ds, frame)
    if raw.ndim == 3 and raw.shape[-1] == 1:
        raw = raw[..., 0]
    if raw.ndim not in (2, 3) or raw.shape[:2] != (_int(ds, "Rows"), _int(ds, "Columns")):
        raise ImageError(f"corrupt DICOM pixel data: decoded shape {raw.shape} does not match the header")
    try:
        arr = _to_colour(raw, ds) if _photometric(ds) in COLOUR_PI or raw.ndim == 3 else _to_modality(raw, ds)
    except ImageError:
        raise
    except MemoryError:
        raise ImageError(user_reason(MemoryError())) from None
    except Exception:
        raise ImageError("the file's DICOM lookup tables (modality or palette LUT) are invalid") from None
    return arr.astype(np.float32, copy=False)


def _to_colour(raw: np.ndarray, ds: Any) -> np.ndarray:
    """Palette colour through its LUT, other colour as decoded (pydicom converts YBR to RGB); HxWx3."""
    from pydicom.pixels import apply_color_lut

    if _photometric(ds) == "PALETTE COLOR":
        raw = apply_color_lut(raw, ds)
    if raw.ndim != 3 or raw.shape[-1] < 3:
        raise ImageError(f"corrupt DICOM colour data: decoded shape {raw.shape}")
    return raw[..., :3]


def _to_modality(raw: np.ndarray, ds: Any) -> np.ndarray:
    """Greyscale stored values -> modality units (Modality LUT, else Rescale Slope/Intercept)."""
    from pydicom.pixels import apply_modality_lut

    if ds.get("ModalityLUTSequence"):
        return apply_modality_lut(raw, ds)
    slope, intercept = _float(ds, "RescaleSlope"), _float(ds, "RescaleIntercept")
    arr = raw.astype(np.float32)
    if slope is not None and slope != 0 and slope != 1:
        arr *= np.float32(slope)
    if intercept:
        arr += np.float32(intercept)
    return arr


def _read_dicom_image(path: Path, window: Window | None, frame: int) -> Image.Image:
    """DICOM -> "L" (VOI, MONOCHROME1 inverted after windowing) or "RGB"."""
    ds = _open_dicom(path)
    with _BUDGET.hold(_dicom_bytes(ds)):
        arr = _dicom_array(path, ds, frame)
        if arr.ndim == 3:
            return Image.fromarray(_colour_8bit(arr, ds), "RGB")
        out = _voi(arr, ds, window)
        del arr
        if _photometric(ds) == "MONOCHROME1":
            np.subtract(255, out, out=out)
        return Image.fromarray(out, "L")


def _colour_8bit(arr: np.ndarray, ds: Any) -> np.ndarray:
    """Colour samples -> uint8 by their nominal range (2**bits - 1; palette LUTs are 8 or 16 bit)."""
    top = float(arr.max(initial=0))
    bits = 16 if _photometric(ds) == "PALETTE COLOR" else _int(ds, "BitsStored", 8)
    peak = max(255.0 if top <= 255 else float(2**bits - 1), top)
    return np.rint(np.clip(arr, 0, None) * (255.0 / peak)).astype(np.uint8)


def _voi(arr: np.ndarray, ds: Any, window: Window | None) -> np.ndarray:
    """Modality values -> uint8: user window, else the file's VOI LUT / window, else min-max."""
    if window is not None:
        return user_window(arr, window)
    if ds.get("VOILUTSequence"):
        out = _voi_lut(arr, ds)
        if out is not None:
            return out
    c, w = _float(ds, "WindowCenter"), _float(ds, "WindowWidth")
    fn = str(ds.get("VOILUTFunction") or "LINEAR").strip().upper()
    if c is not None and w is not None:
        if window_ok(w, fn):
            return apply_window(arr, c, w, fn)
        log.warning(
            "the file's %s window width %s is not usable (DICOM needs >= 1); shown min-max instead", fn, w
        )
    return stretch(arr)


AUTO_PERCENTILES = (1.0, 99.0)  # an "auto" window spans these percentiles of each image's values
_AUTO_SAMPLES = 1_000_000  # values the percentiles are computed from (a regular subsample of larger images)


def user_window(arr: np.ndarray, window: Window) -> np.ndarray:
    """Modality values -> uint8 by a user's Window: fixed centre/width, "auto" percentiles or "full" min-max."""
    if window.mode == "auto":
        return percentile_window(arr)
    if window.mode == "full":
        return stretch(arr)
    if window_ok(window.width):
        return apply_window(arr, window.center, window.width)
    log.warning("window width %s is not usable (DICOM needs >= 1); shown min-max instead", window.width)
    return stretch(arr)


def percentile_window(arr: np.ndarray, percentiles: tuple[float, float] = AUTO_PERCENTILES) -> np.ndarray:
    """A linear window from the image's own low and high percentiles (outliers clipped): X-rays' automatic window.

    Percentiles come from a regular subsample of at most about a million values; min-max when they coincide.
    """
    a = np.asarray(arr)
    step = max(1, int(math.sqrt(a.size / _AUTO_SAMPLES))) if a.ndim >= 2 else 1
    sample = a[::step, ::step] if a.ndim >= 2 else a
    sample = sample[np.isfinite(sample)]
    if not sample.size:
        return np.zeros(a.shape, np.uint8)
    lo, hi = (float(v) for v in np.percentile(sample, percentiles))
    if not hi > lo:
        return stretch(a)
    y = np.subtract(a, lo, dtype=np.float32)
    y *= np.float32(255.0 / (hi - lo))
    np.nan_to_num(y, copy=False, nan=0.0)
    np.clip(y, 0, 255, out=y)
    return np.rint(y, out=y).astype(np.uint8)


def _voi_lut(arr: np.ndarray, ds: Any) -> np.ndarray | None:
    """The file's first VOI LUT, scaled by the LUT's own output range; None when unusable."""
    from pydicom.pixels import apply_voi_lut

    try:
        out = apply_voi_lut(arr.astype(np.float64), ds, index=0, prefer_lut=True)
        lut = np.asarray(ds.VOILUTSequence[0].LUTData, dtype=np.float64)
    except Exception:
        return None
    lo, hi = float(lut.min()), float(lut.max())
    if not hi > lo:
        return None
    return np.rint(np.clip((out - lo) * (255.0 / (hi - lo)), 0, 255)).astype(np.uint8)


# ---------------------------------------------------------------- DICOM metadata and PHI


def _scrub(text: str, ds: Any) -> str:
    """Mask any identifying header value of `ds` that appears in `text`."""
    if ds is None:
        return text
    for kw in PHI_TAGS:
        v = _text(ds, kw)
        for part in {v, *v.split("^")} if v else ():
            if len(part) >= 3 and part in text:
                text = text.replace(part, "***")
    return text


def _text(ds: Any, keyword: str) -> str:
    """A header value as display text ("" when absent, a sequence, or binary)."""
    try:
        elem = ds.get(keyword)
    except Exception:
        return ""
    if elem is None or isinstance(elem, (bytes, bytearray)) or type(elem).__name__ == "Sequence":
        return ""
    if _is_multi(elem):
        return "\\".join(str(v) for v in elem)
    return str(elem).strip()


@_one_reason
@_quiet
def dicom_metadata(path: str | os.PathLike, include_phi: bool = False) -> dict[str, str]:
    """Allow-listed header tags as text (identifying tags only with include_phi=True)."""
    ds = _read_header(_check_file(path))
    out: dict[str, str] = {}
    for kw in ALLOWED_TAGS + (PHI_TAGS if include_phi else ()):
        value = _meta_value(ds, kw)
        if value:
            out[kw] = value
    return out


def _meta_value(ds: Any, keyword: str) -> str:
    """One tag for the explorer; the transfer syntax by name."""
    if keyword == "TransferSyntaxUID":
        ts = ds.file_meta.get("TransferSyntaxUID")
        return str(getattr(ts, "name", ts) or "")
    if keyword == "SOPClassUID":
        uid = ds.get("SOPClassUID")
        return str(getattr(uid, "name", uid) or "")
    return _text(ds, keyword)


@_quiet
def dicom_tag_value(path: str | os.PathLike, keyword: str) -> str:
    """A tag's value as text for labels/grouping; identifying tags come back pseudonymised; "" when absent."""
    from pydicom.datadict import tag_for_keyword

    if tag_for_keyword(keyword) is None:
        raise ValueError(f"unknown DICOM keyword {keyword!r}")
    from core.base.privacy import pseudonym

    value = _meta_value(_read_header(_check_file(path)), keyword)
    return pseudonym(value) if value and keyword in PHI_TAGS else value
