"""Uploaded images, DICOMs and zips -> a class-folder dataset in the uploader's own folder.

Everything is checked by content, never by name: images and DICOMs are decoded before they are
kept, names are sanitised (no path parts, no hidden names), zips are read member by member with
limits on count, sizes and compression ratio (zip bombs), and nothing from a zip lands outside the
owner's folder (zip-slip, absolute names, symlinks). An upload is staged in a hidden folder and only
moved into the dataset when it passed every whole-upload check, so a refused upload leaves nothing.
"""

from __future__ import annotations

import re
import secrets
import shutil
import stat
import unicodedata
import zipfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from core.base import paths
from core.base.fmt import megabytes
from core.base.fsutil import is_hidden
from core.data import imaging

OWNER_RE = re.compile(r"[A-Za-z0-9_-]{8,64}")
TABLE_EXTS = frozenset({".csv", ".tsv"})
WEIGHT_EXTS = frozenset({".safetensors", ".pth", ".pt"})
ARCHIVE_EXTS = (".zip", ".tar", ".gz", ".tgz", ".bz2", ".xz", ".7z", ".rar")
STAGING, WEIGHTS = ".incoming", "_weights"
MAX_TABLE_BYTES = 20_000_000
CHUNK = 1 << 20


class UploadError(ValueError):
    """An upload (or a server path) that is refused as a whole; the message is for the user."""


@dataclass(frozen=True)
class UploadLimits:
    """Caps on one upload: raw bytes, files, unpacked bytes, one file, zip compression ratio, owner quota."""

    max_total_bytes: int = 200_000_000
    max_files: int = 5000
    max_unpacked_bytes: int = 800_000_000
    max_file_bytes: int = 256_000_000
    max_ratio: float = 100.0
    max_owner_bytes: int = 1_000_000_000

    @classmethod
    def from_totals(cls, max_total_bytes: int, max_files: int) -> UploadLimits:
        """Limits derived from the raw upload cap: 4x unpacked, 5x per owner, one file at most 256 MB."""
        unpacked = 4 * int(max_total_bytes)
        return cls(
            int(max_total_bytes),
            int(max_files),
            unpacked,
            min(unpacked, 256_000_000),
            100.0,
            5 * int(max_total_bytes),
        )


# ---------------------------------------------------------------- owners and names


def check_owner(owner: str) -> str:
    """The owner id when it is safe as a folder name ([A-Za-z0-9_-]{8,64}), else UploadError."""
    if not isinstance(owner, str) or not OWNER_RE.fullmatch(owner):
        raise UploadError("invalid session id for uploads")
    return owner


def upload_dir(owner: str) -> Path:
    """This owner's private upload folder (app home/uploads/<owner>), created on demand."""
    path = paths.uploads_dir() / check_owner(owner)
    path.mkdir(parents=True, exist_ok=True)
    return path


def clean_name(name: str, limit: int = 120) -> str:
    """One safe file or folder name ('' when nothing usable is left, or when it is hidden)."""
    name = unicodedata.normalize("NFC", str(name)).strip()
    if is_hidden(name) or name in ("", ".", ".."):
        return ""
    name = re.sub(r"[^\w .()+-]", "_", name).strip(" .")
    return name[:limit] if name and not is_hidden(name) else ""


def _member_parts(name: str) -> list[str] | None:
    """A zip member name as safe path parts; None when it must be skipped or would leave the folder."""
    raw = name.replace("\\", "/")
    if raw.startswith("/") or re.match(r"^[A-Za-z]:", raw) or "\x00" in raw:
        return None
    parts = [p for p in raw.split("/") if p not in ("", ".")]
    if not parts or any(p == ".." or is_hidden(p) for p in parts):
        return None
    cleaned = [clean_name(p) for p in parts]
    return cleaned if all(cleaned) else None


def _hidden_member(name: str) -> bool:
    """Whether a zip member sits in (or is) a hidden / system entry such as __MACOSX/ or .DS_Store."""
    return any(is_hidden(p) for p in name.replace("\\", "/").split("/") if p not in ("", ".", ".."))


def _unique(path: Path, taken: set[Path]) -> Path:
    """`path`, or path-1, path-2, ... when that name is already used in this upload or on disk."""
    candidate, n = path, 0
    while candidate in taken or candidate.exists():
        n += 1
        candidate = path.with_name(f"{path.stem}-{n}{path.suffix}")
    taken.add(candidate)
    return candidate


def folder_bytes(path: Path) -> int:
    """Total size of the regular files under a folder."""
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


# ---------------------------------------------------------------- content checks


def _table_ok(path: Path) -> str:
    """'' when a CSV looks like text of a sane size, else the reason it is refused."""
    size = path.stat().st_size
    if size > MAX_TABLE_BYTES:
        return f"table too large ({megabytes(size)}; at most {megabytes(MAX_TABLE_BYTES)})"
    with open(path, "rb") as f:
        head = f.read(65536)
    return "not a text table (binary content)" if b"\x00" in head else ""


def check_content(path: Path) -> str:
    """'' when the staged file is a usable image, DICOM or CSV by its content; else the reason."""
    ext = path.suffix.lower()
    if ext in TABLE_EXTS:
        return _table_ok(path)
    try:
        info = imaging.inspect_image(path, verify=True)
    except imaging.ImageError as err:
        return str(err)
    except Exception as err:  # one odd file must never stop an upload
        return imaging.user_reason(err)
    if info.kind != "dicom" and ext in imaging.DICOM_EXTS:
        return f"named {ext} but the content is not DICOM"
    if info.kind != "dicom" and ext not in imaging.IMAGE_EXTS:
        return f"unsupported file type '{ext or 'no extension'}' (use PNG, JPEG, TIFF, BMP or DICOM)"
    return ""


def _final_name(path: Path) -> Path:
    """DICOM content without a DICOM or image extension gets '.dcm', so the folder scan picks it up."""
    ext = path.suffix.lower()
    if ext in imaging.DICOM_EXTS or ext in imaging.IMAGE_EXTS or ext in TABLE_EXTS:
        return path
    return path.with_name(path.name + ".dcm")


def _kept_kind(name: str) -> str:
    """'archive' for archives (never opened when nested), else 'file' (checked by content later)."""
    return "archive" if name.lower().endswith(ARCHIVE_EXTS) else "file"


# ---------------------------------------------------------------- zips


def _zip_entries(zf: zipfile.ZipFile, limits: UploadLimits) -> list[zipfile.ZipInfo]:
    """The file members of a zip after the whole-archive checks (count, sizes, ratio, links)."""
    files = [i for i in zf.infolist() if not i.is_dir()]
    if len(files) > limits.max_files:
        raise UploadError(f"the zip holds {len(files)} files; at most {limits.max_files} are allowed")
    total = sum(i.file_size for i in files)
    if total > limits.max_unpacked_bytes:
        raise UploadError(
            f"the zip unpacks to {megabytes(total)}; at most "
            f"{megabytes(limits.max_unpacked_bytes)} are allowed"
        )
    for i in files:
        if i.file_size > limits.max_file_bytes:
            raise UploadError(
                f"a file in the zip is {megabytes(i.file_size)}; at most "
                f"{megabytes(limits.max_file_bytes)} per file"
            )
        if i.file_size > 1_000_000 and i.file_size > limits.max_ratio * max(1, i.compress_size):
            raise UploadError("the zip is compressed suspiciously well (a zip bomb?); it was refused")
    return files


def _is_link(info: zipfile.ZipInfo) -> bool:
    """Whether a zip member is a symbolic link (Unix mode in the external attributes)."""
    return stat.S_ISLNK(info.external_attr >> 16)


def _copy_limited(src: IO[bytes], dst: Path, limit: int) -> int:
    """Copy a stream to a file, refusing more than `limit` bytes whatever the header claimed."""
    n = 0
    with open(dst, "wb") as out:
        while chunk := src.read(CHUNK):
            n += len(chunk)
            if n > limit:
                raise UploadError("a file in the zip is larger than its header says (a zip bomb?); refused")
            out.write(chunk)
    return n


def _strip_common_top(
    members: list[tuple[zipfile.ZipInfo, list[str]]],
) -> list[tuple[zipfile.ZipInfo, list[str]]]:
    """Drop one wrapping folder (data/<class>/x.png -> <class>/x.png) when every member sits below it."""
    tops = {parts[0] for _, parts in members}
    if len(tops) == 1 and all(len(parts) >= 3 for _, parts in members):
        return [(i, parts[1:]) for i, parts in members]
    return members


def _zip_plan(
    zf: zipfile.ZipFile, limits: UploadLimits, label: str, problems: list[dict]
) -> list[tuple[zipfile.ZipInfo, list[str]]]:
    """Which members to extract and where (relative parts); skipped ones become problems or are dropped."""
    members = []
    for info in _zip_entries(zf, limits):
        parts = _member_parts(info.filename)
        if parts is None:
            if not _hidden_member(info.filename):
                problems.append({"path": info.filename, "reason": "unsafe name (leaves the folder); skipped"})
            continue
        if _is_link(info):
            problems.append({"path": info.filename, "reason": "symbolic link; skipped"})
        elif _kept_kind(parts[-1]) == "archive":
            problems.append(
                {"path": info.filename, "reason": "archives inside the zip are not opened; skipped"}
            )
        else:
            members.append((info, parts))
    members = _strip_common_top(members)
    has_table = any(Path(p[-1]).suffix.lower() in TABLE_EXTS for _, p in members)
    if has_table or not label:
        return members
    return [(i, [label, *p] if len(p) == 1 else p) for i, p in members]


def _extract(
    zf: zipfile.ZipFile, plan: list[tuple[zipfile.ZipInfo, list[str]]], stage: Path, limits: UploadLimits
) -> list[tuple[Path, str]]:
    """Write the planned members under `stage` with streamed size limits; (path, display name) pairs."""
    out, taken, total = [], set[Path](), 0
    for info, parts in plan:
        dst = _unique(stage.joinpath(*parts), taken)
        dst.parent.mkdir(parents=True, exist_ok=True)
        with zf.open(info) as src:
            total += _copy_limited(src, dst, limits.max_file_bytes)
        if total > limits.max_unpacked_bytes:
            raise UploadError("the zip unpacks to more than its headers say (a zip bomb?); refused")
        out.append((dst, info.filename))
    return out


def _stage_zip(
    data: bytes, stage: Path, limits: UploadLimits, label: str, problems: list[dict]
) -> list[tuple[Path, str]]:
    """Unpack one zip into the staging folder (checks first); (staged path, name in the zip) pairs."""
    import io

    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            return _extract(zf, _zip_plan(zf, limits, label, problems), stage, limits)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, NotImplementedError, EOFError) as err:
        raise UploadError(f"not a readable zip file ({type(err).__name__})") from None
    except RuntimeError as err:  # encrypted members
        raise UploadError(f"the zip cannot be opened: {str(err)[:120]}") from None


# ---------------------------------------------------------------- staging -> dataset


def _new_stage(owner: str) -> Path:
    """A fresh hidden staging folder inside the owner's folder (skipped by every scan)."""
    stage = upload_dir(owner) / STAGING / secrets.token_hex(8)
    stage.mkdir(parents=True)
    return stage


def _verify(staged: list[tuple[Path, str]], problems: list[dict]) -> list[Path]:
    """Check every staged file by content (in parallel); refused ones are deleted and reported."""
    with ThreadPoolExecutor(max_workers=4) as ex:
        reasons = list(ex.map(lambda item: check_content(item[0]), staged))
    kept = []
    for (path, shown), reason in zip(staged, reasons):
        if reason:
            problems.append({"path": shown, "reason": reason})
            path.unlink(missing_ok=True)
        else:
            kept.append(path)
    return kept


def _publish(kept: list[Path], stage: Path, dest: Path, limits: UploadLimits, owner_dir: Path) -> None:
    """Move checked files from the stage into the dataset folder, within the owner's quota."""
    _check_quota(owner_dir, stage, sum(p.stat().st_size for p in kept), limits.max_owner_bytes)
    taken: set[Path] = set()
    for path in kept:
        target = _unique(dest / _final_name(path.relative_to(stage)), taken)
        target.parent.mkdir(parents=True, exist_ok=True)
        path.replace(target)


def _check_quota(owner_dir: Path, stage: Path, new: int, max_owner_bytes: int, replaced: int = 0) -> None:
    """Refuse `new` bytes that would take the owner's stored uploads (stage and a replaced file not counted)
    past the owner quota."""
    used = folder_bytes(owner_dir) - folder_bytes(stage) - replaced
    if used + new > max_owner_bytes:
        raise UploadError(
            f"your uploads would use {megabytes(used + new)}; at most "
            f"{megabytes(max_owner_bytes)} per session. Delete some uploads first"
        )


def dataset_dir(owner: str, dataset: str = "upload") -> Path:
    """The folder of one named upload dataset of this owner (name sanitised)."""
    name = clean_name(dataset).lstrip("_") or "upload"
    return upload_dir(owner) / name


def _stage_loose(
    name: str, data: bytes, stage: Path, label: str, taken: set[Path]
) -> tuple[Path, str] | None:
    """Write one loose (non-zip) file under stage/<label>/; None when its name is unusable."""
    clean = clean_name(Path(name.replace("\\", "/")).name)
    if not clean:
        return None
    dst = _unique(stage / label / clean, taken)
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.write_bytes(data)
    return dst, name


def _check_batch(files: list[tuple[str, bytes]], limits: UploadLimits) -> None:
    """Whole-upload checks before anything is written: raw size and number of files."""
    total = sum(len(data) for _, data in files)
    if total > limits.max_total_bytes:
        raise UploadError(f"the upload is {megabytes(total)}; at most {megabytes(limits.max_total_bytes)}")
    if len(files) > limits.max_files:
        raise UploadError(f"{len(files)} files were uploaded; at most {limits.max_files} at once")


def _is_zip(data: bytes) -> bool:
    """A zip by content (the name alone never decides)."""
    return data[:4] in (b"PK\x03\x04", b"PK\x05\x06")


def _stage_all(
    files: list[tuple[str, bytes]], stage: Path, limits: UploadLimits, label: str, problems: list[dict]
) -> list[tuple[Path, str]]:
    """Stage every uploaded file: zips unpacked, loose files under the class label."""
    staged: list[tuple[Path, str]] = []
    taken: set[Path] = set()
    for name, data in files:
        if _is_zip(data):
            staged += _stage_zip(data, stage, limits, label, problems)
        elif is_hidden(Path(name.replace("\\", "/")).name):
            continue
        elif not label:
            raise UploadError("name the class of the loose images (zips take classes from their folders)")
        elif (item := _stage_loose(name, data, stage, label, taken)) is not None:
            staged.append(item)
    if len(staged) > limits.max_files:
        raise UploadError(f"the upload holds {len(staged)} files; at most {limits.max_files} at once")
    return staged


def _upload(
    owner: str, files: list[tuple[str, bytes]], limits: UploadLimits, label: str, dataset: str
) -> tuple[Path, list[dict]]:
    """Check, stage, verify and publish one upload; the dataset folder and the problems found."""
    _check_batch(files, limits)
    label = clean_name(label).lstrip("_") if label else ""
    dest, problems = dataset_dir(owner, dataset), list[dict]()
    stage = _new_stage(owner)
    try:
        kept = _verify(_stage_all(files, stage, limits, label, problems), problems)
        _publish(kept, stage, dest, limits, upload_dir(owner))
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    dest.mkdir(parents=True, exist_ok=True)
    return dest, problems


def save_uploads(
    owner: str,
    files: list[tuple[str, bytes]],
    max_total_bytes: int,
    max_files: int,
    label: str = "",
    dataset: str = "upload",
) -> tuple[Path, list[dict]]:
    """Store uploaded images/DICOMs/zips (checked by content) as class folders; (dataset root, problems)."""
    return _upload(owner, files, UploadLimits.from_totals(max_total_bytes, max_files), label, dataset)


def extract_zip(
    owner: str, data: bytes, limits: UploadLimits, dataset: str = "upload", label: str = ""
) -> Path:
    """Unpack one uploaded zip safely into the owner's dataset folder; its root (problems are dropped)."""
    return _upload(owner, [("upload.zip", data)], limits, label, dataset)[0]


PREDICTION_PREFIX = "predict-"  # upload folders of images sent to the Predict page: not datasets to train on


def prediction_dataset(signature: str) -> str:
    """The upload folder name of images uploaded for prediction."""
    return PREDICTION_PREFIX + signature


def list_datasets(owner: str) -> list[Path]:
    """This owner's upload datasets (folders), sorted by name; images uploaded for prediction are not among them."""
    base = upload_dir(owner)
    hidden = (".", "_", PREDICTION_PREFIX)
    return sorted(p for p in base.iterdir() if p.is_dir() and not p.name.startswith(hidden))


def delete_uploads(owner: str) -> None:
    """Remove everything this owner uploaded."""
    shutil.rmtree(upload_dir(owner), ignore_errors=True)


# ---------------------------------------------------------------- weights


def save_weights(owner: str, name: str, data: bytes, max_bytes: int) -> Path:
    """Store an uploaded weights file (.safetensors/.pth/.pt) after the no-unpickling check, within the owner's
    upload quota (5x `max_bytes`, shared with data uploads); its path."""
    from core.models import weightfiles  # heavy (torch); only when a weights file is uploaded

    clean = clean_name(Path(name.replace("\\", "/")).name)
    if Path(clean).suffix.lower() not in WEIGHT_EXTS:
        raise UploadError("a weights file must be .safetensors, .pth or .pt")
    if len(data) > max_bytes:
        raise UploadError(f"the weights file is {megabytes(len(data))}; at most {megabytes(max_bytes)}")
    stage = _new_stage(owner)
    try:
        staged = stage / clean
        staged.write_bytes(data)
        try:
            weightfiles.check_weights_file(staged)
        except weightfiles.ModelFileError as err:
            raise UploadError(str(err)) from None
        target = upload_dir(owner) / WEIGHTS / clean
        replaced = target.stat().st_size if target.is_file() else 0
        quota = UploadLimits.from_totals(max_bytes, 1).max_owner_bytes  # the same owner quota as data uploads
        _check_quota(upload_dir(owner), stage, len(data), quota, replaced)
        target.parent.mkdir(parents=True, exist_ok=True)
        staged.replace(target)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return target
