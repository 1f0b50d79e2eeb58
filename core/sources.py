"""Data sources (class folders, CSV tables, DICOM folders) -> one items table plus a problems table.

Every file or row that cannot be used becomes a row of `Dataset.problems` with a reason; files
that are simply not images (hidden files, notes, spreadsheets) are counted in `Dataset.ignored`.
Nothing is dropped silently and one bad file never stops a scan.
"""

from __future__ import annotations

import csv
import os
import posixpath
import re
import stat
import warnings
from collections import Counter
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pydicom.datadict import tag_for_keyword

from core import imaging
from core.config import SourceConfig
from core.fsutil import inside, is_hidden
from core.paths import env_int

ITEM_COLUMNS = ["path", "relpath", "label", "group", "split", "source", "kind", "width", "height"]
PROBLEM_COLUMNS = ["path", "reason"]
SPLIT_NAMES = {
    "train": "train",
    "training": "train",
    "valid": "valid",
    "val": "valid",
    "validation": "valid",
    "test": "test",
    "testing": "test",
    "holdout": "test",
}
SPLIT_FOLDERS = {"train": "train", "valid": "valid", "val": "valid", "test": "test"}
DELIMITERS = (",", ";", "\t", "|")
# Files of a table opened (headers read / decoded) when it loads; a longer table opens a sample this size.
PROBE_MAX = 20_000
PROBE_SEED = 0  # the same table always gives the same sample


Decode = Callable[[Path], object]
"""A validating decode of one file: raises imaging.ImageError when the file cannot be used."""


def probe_max() -> int:
    """Files of a table opened when it loads (XRT_PROBE_MAX, default PROBE_MAX); training opens every one."""
    return env_int("XRT_PROBE_MAX", PROBE_MAX)


class SourceError(ValueError):
    """The whole source cannot work (missing folder, missing column, ...); the message is for the user."""


class UnsafePathError(SourceError):
    """A path that would leave the data folder (../, absolute, UNC, drive letter, outside link)."""


@dataclass
class Dataset:
    """A labelled items table, the problems found while building it, and what was ignored."""

    items: pd.DataFrame
    problems: pd.DataFrame
    root: str
    source: str
    ignored: dict[str, int] = field(default_factory=dict)
    label_conflicts: list[str] = field(default_factory=list)  # relpaths a table lists with different labels
    unread: int = 0  # items whose files were not opened (a table above XRT_PROBE_MAX is read from a sample)

    @property
    def read_items(self) -> pd.DataFrame:
        """The items whose files were opened (width, height and kind known): all of them unless only a sample was."""
        return self.items[self.items["width"].notna()] if self.unread else self.items

    def sample_note(self) -> str:
        """A sentence saying that only a sample of the files was opened ("" when every file was)."""
        if not self.unread:
            return ""
        return (
            f"{self.unread:,} of {len(self.items):,} listed images were not opened: a table of more than "
            f"{probe_max():,} rows (XRT_PROBE_MAX) is checked from a random sample of that many files, and "
            "image sizes are those of the sample. A training run still decodes every file before it starts "
            "and reports any it cannot read."
        )

    @property
    def classes(self) -> list[str]:
        """Sorted unique labels of the usable items."""
        return sorted(self.items["label"].unique().tolist()) if len(self.items) else []

    def class_counts(self) -> dict[str, int]:
        """Number of usable items per class, in class order."""
        counts = self.items["label"].value_counts()
        return {c: int(counts[c]) for c in self.classes}

    def summary(self) -> dict[str, Any]:
        """Counts for the explorer: items, problems, per class, per split, groups, ignored."""
        groups = self.items["group"] if len(self.items) else pd.Series([], dtype=str)
        splits = self.items["split"].value_counts() if len(self.items) else {}
        return {
            "n_items": len(self.items),
            "n_problems": len(self.problems),
            "n_classes": len(self.classes),
            "per_class": self.class_counts(),
            "per_split": {str(k): int(v) for k, v in dict(splits).items()},
            "n_groups": int(groups[groups != ""].nunique()),
            "ignored": dict(self.ignored),
            **({"not_opened": self.unread, "note": self.sample_note()} if self.unread else {}),
        }

    def check_trainable(self) -> list[str]:
        """Reasons training must be refused on this dataset (empty list = it can train)."""
        if not len(self.items):
            return [
                "no usable images were found"
                + (f" ({len(self.problems)} files have problems)" if len(self.problems) else "")
            ]
        counts, reasons = self.class_counts(), []
        if len(counts) < 2:
            reasons.append(f"only one class ({', '.join(counts)}): a classifier needs at least 2 classes")
        reasons += [f"class '{c}' has only {n} image (need at least 2)" for c, n in counts.items() if n < 2]
        if not self.items["split"].isin(["train", ""]).any():
            reasons.append("no images are assigned to training (every item is in valid or test)")
        if self.label_conflicts:
            n, first = len(self.label_conflicts), self.label_conflicts[0]
            reasons.append(
                f"{n} image{'s are' if n > 1 else ' is'} listed with different labels (first: {first}; "
                "see the problems list): give each image one label in the table"
            )
        return reasons


# ---------------------------------------------------------------- paths


def _relative(rel: str) -> str:
    """A table's relative path, normalised (posix), refusing anything that would leave the root (no disk access)."""
    rel = str(rel).strip()
    if not rel or "\x00" in rel:
        raise UnsafePathError("empty path" if not rel else "path contains a NUL character")
    if rel.startswith(("\\\\", "//")):
        raise UnsafePathError(f"network (UNC) paths are not allowed: {rel}")
    if re.match(r"^[A-Za-z]:", rel) or rel.startswith(("/", "\\", "~")):
        raise UnsafePathError(
            f"absolute paths are not allowed; give a path relative to the image folder: {rel}"
        )
    norm = posixpath.normpath(rel.replace("\\", "/"))
    if norm == ".." or norm.startswith("../"):
        raise UnsafePathError(f"path escapes the image folder: {rel}")
    return norm


def safe_join(root: str | Path, rel: str) -> Path:
    """Join a relative path from a table onto root, refusing anything that would leave root."""
    norm = _relative(rel)
    base = Path(root).resolve()
    path = base / norm
    if not inside(path.resolve(), base):
        raise UnsafePathError(f"link points outside the image folder: {rel}")
    return path


def _display(path: Path, root: Path) -> str:
    """Path relative to root for display (posix separators)."""
    return Path(os.path.relpath(path, root)).as_posix()


def _root_dir(root: str | Path, what: str = "image folder") -> Path:
    """A resolved existing folder, or a SourceError saying what is wrong."""
    if not str(root).strip():
        raise SourceError(f"no {what} was given")
    path = Path(root).expanduser()
    if not path.exists():
        raise SourceError(f"{what} not found: {root}")
    if not path.is_dir():
        raise SourceError(f"{what} is not a folder: {root}")
    return path.resolve()


# ---------------------------------------------------------------- candidates and probing


@dataclass
class _Cand:
    """A file that should become an item once it is checked."""

    path: Path
    relpath: str
    label: str
    group: str = ""
    split: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    where: str = ""


UNLABELLED = "not inside a class folder"  # the reason of a file that decodes but has no class folder


def _problem(path: Path | str, reason: str) -> dict[str, str]:
    """One problems-table row."""
    return {"path": str(path), "reason": reason}


def _tag(path: Path, keyword: str) -> str:
    """A DICOM header value as a stripped string ("" when absent)."""
    return str(imaging.dicom_tag_value(path, keyword) or "").strip()


def _check_kind(path: Path, kind: str, dicom_only: bool) -> None:
    """Refuse a file whose content does not match what its name or the source promises."""
    if kind == "dicom":
        return
    if dicom_only:
        raise imaging.ImageError("not a DICOM file (the content is an ordinary image)")
    if path.suffix.lower() in imaging.DICOM_EXTS:
        raise imaging.ImageError(
            f"named {path.suffix} but the content is not DICOM (it is an ordinary image)"
        )


def _inspect(
    path: Path, verify: bool, dicom_only: bool, label_tag: str, group_tag: str, decode: Decode | None = None
) -> tuple[imaging.ImageInfo, str, str]:
    """Inspect one file; (info, label, group), the last two from DICOM tags when given ("" otherwise). Raises."""
    info = imaging.inspect_image(path, verify=verify, decode=decode, refuse_flat=True)
    _check_kind(path, info.kind, dicom_only)
    label = _tag(path, label_tag) if label_tag else ""
    if label_tag and not label:
        raise imaging.ImageError(f"no {label_tag} value in the DICOM header (needed as the label)")
    return info, label, _tag(path, group_tag) if group_tag else ""


def _probe(
    c: _Cand, verify: bool, dicom_only: bool, label_tag: str, group_tag: str, decode: Decode | None = None
) -> dict[str, Any]:
    """Inspect one file: an item row, or a problem row (has a 'reason') - never raises."""
    try:
        info, label, group = _inspect(c.path, verify, dicom_only, label_tag, group_tag, decode)
        label = label if label_tag else c.label
        if not label:  # a decodable file outside any class folder (label tags raise in _inspect)
            raise imaging.ImageError(UNLABELLED)
    except imaging.ImageError as e:
        return _problem(c.path, c.where + str(e))
    except Exception as e:  # one odd file must never stop a scan
        return _problem(c.path, c.where + imaging.user_reason(e))
    return {
        "path": str(c.path),
        "relpath": c.relpath,
        "label": label,
        "group": group if group_tag else c.group,
        "split": c.split,
        "kind": info.kind,
        "width": int(info.width),
        "height": int(info.height),
        **c.extra,
    }


def _probe_all(
    cands: list[_Cand],
    validate: bool,
    workers: int,
    dicom_only: bool = False,
    label_tag: str = "",
    group_tag: str = "",
    decode: Decode | None = None,
) -> tuple[list[dict], list[dict]]:
    """Probe every candidate in a thread pool; split the results into items and problems (order kept)."""
    rows: list[dict[str, Any]] = [{}] * len(cands)

    def fn(i: int) -> None:
        rows[i] = _probe(cands[i], validate, dicom_only, label_tag, group_tag, decode)

    _run_chunked(fn, len(cands), workers)
    return [r for r in rows if "reason" not in r], [r for r in rows if "reason" in r]


def _make(
    items: list[dict] | pd.DataFrame,
    problems: list[dict],
    root: Path,
    source: str,
    ignored: Counter,
    extra_cols: Iterable[str] = (),
    sort: bool = True,
    conflicts: Iterable[str] = (),
    unread: int = 0,
) -> Dataset:
    """Assemble a Dataset with typed, ordered columns (sizes stay float, NaN, for `unread` files not opened)."""
    cols = ITEM_COLUMNS + [c for c in extra_cols if c not in ITEM_COLUMNS]
    df = items.reindex(columns=cols) if isinstance(items, pd.DataFrame) else pd.DataFrame(items, columns=cols)
    df["source"] = source
    if not unread:
        df = df.astype({"width": int, "height": int})
    probs = pd.DataFrame(problems, columns=PROBLEM_COLUMNS)
    if sort:
        df, probs = df.sort_values("path", kind="stable"), probs.sort_values("path", kind="stable")
    return Dataset(
        df.reset_index(drop=True),
        probs.reset_index(drop=True),
        str(root),
        source,
        {k: int(v) for k, v in sorted(ignored.items()) if v},
        list(conflicts),
        unread,
    )


# ---------------------------------------------------------------- folders


def walk_files(root: Path, ignored: Counter | None = None) -> list[Path]:
    """Every non-hidden file (or file link) under root, sorted; folder links are counted in `ignored`, not followed.

    The one folder walk (scans and prediction): hidden names (fsutil.is_hidden) are skipped at every level.
    """
    ignored = Counter() if ignored is None else ignored
    files, stack = [], [root]
    while stack:
        try:
            entries = list(os.scandir(stack.pop()))
        except OSError:
            ignored["unreadable_folder"] += 1
            continue
        for e in entries:
            if is_hidden(e.name):
                ignored["hidden"] += 1
            elif e.is_dir(follow_symlinks=False):
                stack.append(Path(e.path))
            elif e.is_symlink() and e.is_dir():
                ignored["folder_link"] += 1
            elif e.is_file(follow_symlinks=False) or e.is_symlink():
                files.append(Path(e.path))
            else:
                ignored["not_a_file"] += 1
    return sorted(files)


def _maybe_dicom_name(path: Path) -> bool:
    """No extension, or a numeric one (DICOM files are often named by UID: 1.2.840...12)."""
    return path.suffix == "" or path.suffix[1:].isdigit()


def _classify(path: Path, root: Path, dicom_only: bool) -> str:
    """'ok', a problem reason, or an ignored-category key prefixed with 'ignore:'."""
    if path.is_symlink():
        target = path.resolve()
        if not target.exists():
            return "broken link"
        if not inside(target, root):
            return "link points outside the data folder"
    ext = path.suffix.lower()
    if ext in imaging.DICOM_EXTS or (ext in imaging.IMAGE_EXTS and not dicom_only):
        return "ok"
    if ext in imaging.IMAGE_EXTS:
        return "ignore:not_dicom"
    if _maybe_dicom_name(path):
        try:
            return "ok" if imaging.is_dicom(path) else "ignore:not_image"
        except Exception as e:  # an unreadable file is a problem row, not a crash
            return imaging.user_reason(e)
    return "ignore:not_image"


def _split_layout(root: Path) -> bool:
    """Whether root holds train/ plus valid/ (val/) and/or test/, or only split folders (train/ alone too)."""
    dirs = {p.name.lower() for p in root.iterdir() if p.is_dir() and not is_hidden(p.name)}
    only_splits = bool(dirs) and dirs <= set(SPLIT_FOLDERS) and (len(dirs) > 1 or dirs == {"train"})
    return only_splits or ("train" in dirs and bool(dirs & {"valid", "val", "test"}))


def _folder_label(parts: tuple[str, ...], split_layout: bool) -> tuple[str, str, str]:
    """(label, split, problem reason) of a file from its path parts relative to root."""
    if split_layout:
        split = SPLIT_FOLDERS.get(parts[0].lower(), "") if len(parts) > 1 else ""
        if len(parts) > 1 and not split:
            return "", "", "not inside a train/valid/test folder"
        if len(parts) < 3:
            return "", "", UNLABELLED
        return parts[1], split, ""
    return (parts[0], "", "") if len(parts) > 1 else ("", "", UNLABELLED)


def _folder_cands(
    root: Path,
    ignored: Counter,
    problems: list[dict],
    dicom_only: bool = False,
    by_folder: bool = True,
    display_root: Path | None = None,
) -> list[_Cand]:
    """Candidates of a folder tree, labelled by class folder (or unlabelled when by_folder=False)."""
    layout = by_folder and _split_layout(root)
    cands = []
    for path in walk_files(root, ignored):
        verdict = _classify(path, root, dicom_only)
        if verdict.startswith("ignore:"):
            ignored[verdict[7:]] += 1
            continue
        label, split, reason = (
            _folder_label(path.relative_to(root).parts, layout) if by_folder else ("", "", "")
        )
        reason = reason if verdict == "ok" else verdict
        if reason == UNLABELLED:  # decoded anyway: a broken file reports its real problem, not this one
            cands.append(_Cand(path, _display(path, display_root or root), "", split=split))
        elif reason:
            problems.append(_problem(path, reason))
        else:
            cands.append(_Cand(path, _display(path, display_root or root), label, split=split))
    return cands


def _no_files(root: Path, ignored: Counter, what: str = "image") -> SourceError:
    """The error for a folder with nothing to show at all."""
    seen = ", ".join(f"{n} {k.replace('_', ' ')}" for k, n in sorted(ignored.items()) if n)
    return SourceError(f"no {what} files found in {root}" + (f" (ignored: {seen})" if seen else ""))


def scan_folder(
    root: str | Path,
    test_root: str | Path = "",
    validate: bool = True,
    workers: int = 4,
    decode: Decode | None = None,
) -> Dataset:
    """Items from class folders (root/<class>/**), optionally inside train/valid(val)/test folders.

    `test_root` is a separate folder with the same layout whose items all get split="test".
    validate=True fully decodes every file (through `decode(path)` when given, see imaging.inspect_image);
    validate=False only reads headers (fast).
    """
    base, ignored, problems = _root_dir(root), Counter[str](), list[dict]()
    cands = _folder_cands(base, ignored, problems)
    if str(test_root).strip():
        troot = _root_dir(test_root, "test folder")
        tcands = _folder_cands(troot, ignored, problems, display_root=base)
        cands += [_Cand(c.path, c.relpath, c.label, split="test") for c in tcands]
    if not cands and not problems:
        raise _no_files(base, ignored)
    items, bad = _probe_all(cands, validate, workers, decode=decode)
    return _make(items, problems + bad, base, "folder", ignored)


# ---------------------------------------------------------------- tables


def _sniff_delimiter(text: str) -> str:
    """The delimiter (, ; tab |) that splits the first lines into the most, consistent columns."""
    lines = [ln for ln in text.splitlines() if ln.strip()][:20]
    best, best_score = ",", (0, 0)
    for d in DELIMITERS:
        widths = [len(r) for r in csv.reader(lines, delimiter=d)]
        if not widths or widths[0] < 2:
            continue
        score = (sum(w == widths[0] for w in widths), widths[0])
        if score > best_score:
            best, best_score = d, score
    return best


TABLE_HEAD = 1 << 16  # bytes of a table read to choose its encoding and delimiter
TABLE_CHUNK = 100_000  # rows parsed at a time: no whole-file text copy, Arrow columns built chunk by chunk


def _encodings(head: bytes) -> tuple[str, ...]:
    """Encodings to try, in order: UTF-16 with BOM, else UTF-8 (BOM stripped) then Latin-1."""
    return ("utf-16",) if head.startswith((b"\xff\xfe", b"\xfe\xff")) else ("utf-8-sig", "latin-1")


def _parse(path: Path, encoding: str, sep: str) -> pd.DataFrame:
    """The table as str columns, parsed from the file in chunks (extra trailing fields dropped, not shifted)."""
    with warnings.catch_warnings():  # Excel's "a.png,1," rows
        warnings.simplefilter("ignore", pd.errors.ParserWarning)
        reader = pd.read_csv(
            path,
            encoding=encoding,
            sep=sep,
            dtype=str,
            keep_default_na=False,
            skip_blank_lines=True,
            skipinitialspace=True,
            index_col=False,
            chunksize=TABLE_CHUNK,
        )
        with reader:
            chunks = list(reader)
    return chunks[0] if len(chunks) == 1 else pd.concat(chunks, ignore_index=True)


def read_table(csv_path: str | Path) -> pd.DataFrame:
    """Read a CSV/TSV as strings: delimiter sniffed (, ; tab |), BOM removed, header names stripped."""
    if not str(csv_path).strip():
        raise SourceError("no label table (CSV) was given")
    path = Path(csv_path).expanduser()
    if not path.is_file():
        raise SourceError(f"label table not found: {csv_path}")
    with path.open("rb") as f:
        head = f.read(TABLE_HEAD)
    encodings = _encodings(head)
    text = head.decode(encodings[0], errors="ignore")
    if not text.strip() and len(head) < TABLE_HEAD:
        raise SourceError(f"label table is empty: {csv_path}")
    sep = _sniff_delimiter(text)
    for encoding in encodings:
        try:
            df = _parse(path, encoding, sep)
            break
        except UnicodeDecodeError:
            continue  # not UTF-8: the next encoding (Latin-1 decodes any bytes)
        except pd.errors.EmptyDataError:
            raise SourceError(f"label table is empty: {csv_path}") from None
        except (pd.errors.ParserError, csv.Error, ValueError) as e:
            raise SourceError(f"cannot read the label table {path.name}: {e}") from e
    df.columns = [str(c).strip() for c in df.columns]
    return df


def _cell(value: Any) -> str:
    """A table cell as a stripped string; NaN/None -> "", 1.0 -> "1"."""
    if value is None or (isinstance(value, float) and value != value) or value is pd.NA:
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).strip()


def _need_columns(df: pd.DataFrame, **cols: str) -> None:
    """Refuse a table that lacks a named column, listing the columns it has."""
    for role, col in cols.items():
        if col and col not in df.columns:
            have = ", ".join(map(str, df.columns)) or "(none)"
            raise SourceError(f"the table has no {role} column '{col}'; its columns are: {have}")


def _cells(col: pd.Series) -> pd.Series:
    """A column as stripped strings (see _cell), 0-based index; vectorised when it already holds only strings."""
    col = col.reset_index(drop=True)
    if pd.api.types.infer_dtype(col, skipna=False) == "string":
        stripped = col.str.strip()  # kept only when it differs: a clean column is returned itself, uncopied
        return col if stripped.str.len().sum() == col.str.len().sum() else stripped
    return col.map(_cell).astype(object)


SUSPICIOUS = (
    r"\\|\x00|//|(?:^|/)\.\.?(?:/|$)|^[~/]|^[A-Za-z]:|/$|^$"  # rows whose path needs _relative's full check
)
OK, OUTSIDE, MISSING, NOT_FILE = 0, 1, 2, 3
STATES = {"": OK, "outside": OUTSIDE, "missing": MISSING, "not a file": NOT_FILE}
DICOM_NAME = r"(?:\.dcm|\.dicom|\.\d+|(?:^|[/\\])[^/\\.]*)$"  # names read as DICOM (see _maybe_dicom_name)
SMALL_FOLDER = 64  # folders with fewer listed rows are checked with one lstat a row instead of a listing
BLOCK_ROWS = 65_536  # rows handled at a time where a whole-column intermediate would be a copy of the column


def _relatives(raw: pd.Series) -> tuple[pd.Series, dict[int, str]]:
    """(normalised relative paths, {row index: reason} of unsafe ones); only unusual paths are looked at one by one."""
    odd = np.flatnonzero(raw.str.contains(SUSPICIOUS, regex=True).to_numpy(dtype=bool))
    fixed, unsafe = [], {}
    for i in odd:
        try:
            fixed.append(_relative(raw.iat[i]))
        except UnsafePathError as e:
            fixed.append("")
            unsafe[int(i)] = str(e)
    norm = raw.copy()
    if len(odd):
        norm.iloc[odd] = fixed  # one assignment: per-item writes into an Arrow column copy it every time
    return norm, unsafe


def _arrow_text(col: pd.Series):
    """A text column as pyarrow large_string (chunked as read from a CSV; no copy when pandas holds it in Arrow)."""
    import pyarrow as pa

    return pa.array(col.astype(str), from_pandas=True).cast(pa.large_string())


def _split_parent(text):
    """(parent folders as a chunked array, file names as one array: fast to `take`) of normalised relative paths.

    Split a block of rows at a time, so the intermediate list arrays never hold a copy of the whole column.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    large = pa.large_string()
    empty, slash = pa.scalar("", large), pa.scalar("/", large)
    parents, names = [], []
    for start in range(0, len(text), BLOCK_ROWS):
        part = text.slice(start, BLOCK_ROWS)
        part = part.combine_chunks() if isinstance(part, pa.ChunkedArray) else part
        pieces = pc.split_pattern(
            pc.binary_join_element_wise(empty, part, slash), "/", max_splits=1, reverse=True
        )
        parents.append(pc.utf8_slice_codeunits(pc.list_element(pieces, 0), 1))
        names.append(pc.list_element(pieces, 1))
    return pa.chunked_array(parents, large), pa.concat_arrays(names) if names else pa.array([], large)


def _codes(col) -> tuple[np.ndarray, list[str]]:
    """(integer code of each value, the distinct values) of a chunked Arrow text column."""
    import pyarrow.compute as pc

    enc = pc.dictionary_encode(col).unify_dictionaries()
    if not enc.num_chunks:
        return np.zeros(0, np.int64), []
    codes = np.concatenate([c.indices.to_numpy(zero_copy_only=False) for c in enc.chunks])
    return codes.astype(np.int64), enc.chunk(0).dictionary.to_pylist()


def _listing(folder: str) -> dict[str, int] | None:
    """{name: OK | NOT_FILE | -1 (a link)} of a folder's entries from one scandir (no stat a file); None if unreadable."""
    try:
        with os.scandir(folder) as it:
            return {
                e.name: -1 if e.is_symlink() else (OK if e.is_file(follow_symlinks=False) else NOT_FILE)
                for e in it
            }
    except OSError:
        return None


def _locate(base: str, norm: str, parents: dict[str, str]) -> tuple[str, str]:
    """(case-normalised real path, "" | "outside" | "missing" | "not a file") of root-relative `norm`.

    One lstat per row; each parent folder is resolved once (cached in `parents`), not once per row.
    """
    parent, name = posixpath.split(norm)
    real_parent = parents.get(parent)
    if real_parent is None:
        real_parent = parents[parent] = os.path.realpath(os.path.join(base, parent)) if parent else base
    real = os.path.join(real_parent, name) if name not in ("", ".") else real_parent
    try:
        st = os.lstat(real)
        if stat.S_ISLNK(st.st_mode):
            real = os.path.realpath(real)
            st = os.stat(real)
    except OSError:
        st = None
    prefix = base if base.endswith(os.sep) else base + os.sep
    if real != base and not real.startswith(prefix):
        return os.path.normcase(real), "outside"
    state = "missing" if st is None else ("" if stat.S_ISREG(st.st_mode) else "not a file")
    return os.path.normcase(real), state


def _locate_all(base: str, norm: pd.Series, valid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(state, first row naming the same file) of every row (-1 where not valid): folders resolved and listed once.

    Two rows name the same file when their real folder and real name agree (case-folded where the OS does).
    """
    n = len(norm)
    state, first = np.full(n, MISSING, np.int8), np.full(n, -1, np.int64)
    rows = np.flatnonzero(valid)
    if not len(rows):
        return state, first
    parent, names = _split_parent(_arrow_text(norm if len(rows) == n else norm.iloc[rows]))
    codes, parents = _codes(parent)
    del parent
    folder_of, renamed = _folder_states(base, norm, rows, codes, parents, names, state)
    _first_of_files(rows, folder_of, names, renamed, first)
    return state, first


def _folder_states(
    base: str,
    norm: pd.Series,
    rows: np.ndarray,
    codes: np.ndarray,
    parents: list[str],
    names,
    state: np.ndarray,
) -> tuple[np.ndarray, dict[int, str]]:
    """Fill state[rows] folder by folder; return each row's real folder id and {position: real name} of renamed rows.

    Renamed rows are links, names a listing lacks and rows of small folders: each resolved with one _locate.
    """
    import pyarrow as pa

    order = np.argsort(codes, kind="stable")
    bounds = np.searchsorted(codes[order], np.arange(len(parents) + 1))
    prefix = base if base.endswith(os.sep) else base + os.sep
    folders: dict[str, int] = {}
    folder_of = np.full(len(rows), -1, np.int64)
    renamed: dict[int, str] = {}
    for j, par in enumerate(parents):
        group = order[bounds[j] : bounds[j + 1]]
        real = os.path.realpath(os.path.join(base, par)) if par else base
        within = real == base or real.startswith(prefix)
        listing = _listing(real) if within and len(group) >= SMALL_FOLDER else None
        folder_of[group] = folders.setdefault(os.path.normcase(real), len(folders))
        if not within:
            state[rows[group]] = OUTSIDE
            continue
        found = names.take(pa.array(group)).to_pylist() if listing is not None else []
        sts = np.array(
            [listing.get(nm, -1) for nm in found] if listing is not None else [-1] * len(group), np.int8
        )
        for k in np.flatnonzero(sts == -1).tolist():  # a link, a name the listing lacks, or a small folder
            g = int(group[k])
            full, verdict = _locate(base, norm.iat[rows[g]], {par: real})
            sts[k] = STATES[verdict]
            head, renamed[g] = os.path.split(full)
            folder_of[g] = folders.setdefault(os.path.normcase(head), len(folders))
        state[rows[group]] = sts
    return folder_of, renamed


def _first_of_files(
    rows: np.ndarray, folder_of: np.ndarray, names, renamed: dict[int, str], first: np.ndarray
) -> None:
    """first[rows] = the earliest of `rows` naming the same file: rows in folder order, one name dict per folder."""
    import pyarrow as pa

    caseless = os.path.normcase("A") == "a"
    order = np.argsort(folder_of, kind="stable")  # stable: each folder's rows stay in row order
    seen: dict[str, int] = {}
    current = -1
    for start in range(0, len(order), BLOCK_ROWS):
        block = order[start : start + BLOCK_ROWS]
        at = rows[block]
        out = np.empty(len(block), np.int64)
        names_at = names.take(pa.array(block)).to_pylist()
        for k, (g, row, folder, name) in enumerate(
            zip(block.tolist(), at.tolist(), folder_of[block].tolist(), names_at)
        ):
            if folder != current:
                seen, current = {}, folder
            name = renamed.get(g, name)
            out[k] = seen.setdefault(name.lower() if caseless else name, row)
        first[at] = out


def _duplicate_reason(n: int, first: int, label: str, first_label: str) -> str:
    """The problem of row n (1-based) that repeats row first (1-based); names a label conflict."""
    if label and first_label and label != first_label:
        return (
            f"row {n}: listed twice with different labels: {first_label} (row {first}) and {label} (row {n})"
        )
    return f"row {n}: duplicate of row {first}"


def _joined(base: str, rel: pd.Series) -> pd.Series:
    """root + each normalised relative path, as the OS spells it (what str(Path(base) / rel) gives)."""
    sep_rel = rel if os.sep == "/" else rel.str.replace("/", os.sep, regex=False)
    return (base.rstrip(os.sep) + os.sep) + sep_rel.astype(object if rel.dtype == object else rel.dtype)


def _table_cands(
    df: pd.DataFrame, root: Path, cols: dict[str, str], need_label: bool = True
) -> tuple[pd.DataFrame, list[dict], dict[str, str], list[str]]:
    """Candidates (a frame with a `_row` column) and row problems of a table, label conflicts; extras renamed.

    The root is resolved once, each folder once and listed once; labels, splits and duplicates are checked on
    whole columns; only problem rows are handled one by one. Reasons keep the order of precedence: empty
    path, unsafe path, link outside, duplicate, empty label, split value, missing file.
    """
    used = {c for c in cols.values() if c}
    rename = {c: (f"csv_{c}" if c in ITEM_COLUMNS else str(c)) for c in df.columns if c not in used}
    base, n = str(Path(root).resolve()), len(df)
    blank = pd.Series("", index=pd.RangeIndex(n), dtype="str")
    raw, label, group, split = (
        _cells(df[cols[k]]) if cols[k] else blank for k in ("path", "label", "group", "split")
    )
    norm, unsafe = _relatives(raw)
    ok = np.ones(n, bool)
    ok[list(unsafe)] = False
    state, first = _locate_all(base, norm, ok)
    ok &= state != OUTSIDE
    first[~ok] = -1
    split_low = split.str.lower() if cols["split"] else split
    bad = ~ok | (first != np.arange(n)) | (state != OK)
    if need_label:
        bad |= (label == "").to_numpy(dtype=bool)
    if cols["split"]:
        bad |= ~split_low.isin(list(SPLIT_NAMES)).to_numpy(dtype=bool)
    problems, conflicts = [], []
    for i in np.flatnonzero(bad).tolist():
        r, where, full = int(i) + 1, f"row {int(i) + 1}: ", str(Path(base) / norm.iat[i]) if ok[i] else ""
        if not raw.iat[i]:
            problems.append(_problem(f"row {r}", where + "empty path"))
        elif i in unsafe:
            problems.append(_problem(raw.iat[i], where + unsafe[i]))
        elif state[i] == OUTSIDE:
            problems.append(
                _problem(raw.iat[i], where + f"link points outside the image folder: {raw.iat[i]}")
            )
        elif first[i] != i:
            f = int(first[i])
            reason = _duplicate_reason(r, f + 1, label.iat[i], label.iat[f])
            problems.append(_problem(full, reason))
            if "different labels" in reason:
                conflicts.append(norm.iat[f])
        elif need_label and not label.iat[i]:
            problems.append(_problem(full, where + "empty label"))
        elif cols["split"] and split_low.iat[i] not in SPLIT_NAMES:
            problems.append(
                _problem(full, where + f"unknown split value '{split.iat[i]}' (use train, valid or test)")
            )
        else:
            problems.append(
                _problem(full, where + ("file not found" if state[i] == MISSING else "not a file"))
            )
    keep = np.flatnonzero(~bad)
    del state, first, ok, bad

    def kept(col: pd.Series) -> pd.Series:
        """The kept rows of a column (the column itself, uncopied, when every row is kept)."""
        return col.reset_index(drop=True) if len(keep) == n else col.iloc[keep].reset_index(drop=True)

    rel = kept(norm)
    split_col = kept(split_low).map(SPLIT_NAMES).fillna("") if cols["split"] else kept(blank)
    cands = pd.DataFrame(
        {
            "path": _joined(base, rel),
            "relpath": rel,
            "label": kept(label),
            "group": kept(group),
            "split": split_col,
            "_row": keep + 1,
        }
    )
    for c, new in rename.items():
        cands[new] = kept(df[c])
    return cands, problems, rename, list(dict.fromkeys(conflicts))


def _run_chunked(fn: Callable[[int], None], n: int, workers: int, chunk: int = 2048) -> None:
    """fn(i) for i in range(n), in threads a chunk at a time (never a million futures at once)."""
    if workers <= 1 or n <= 1:
        for i in range(n):
            fn(i)
        return
    with ThreadPoolExecutor(max_workers=workers) as ex:
        for start in range(0, n, chunk):
            list(ex.map(fn, range(start, min(n, start + chunk))))


def _opened_rows(n: int, limit: int | None) -> np.ndarray:
    """The rows whose files are opened: all of them, or a seeded random sample of `limit` (in row order)."""
    if limit is None or n <= limit:
        return np.arange(n)
    return np.sort(np.random.default_rng(PROBE_SEED).choice(n, limit, replace=False))


def _kinds_from_names(paths: pd.Series, dicom_only: bool, opened: np.ndarray, kinds: list[str]) -> pd.Series:
    """The kind column: `kinds` of the opened rows, for the others 'dicom' or 'image' guessed from the name
    (a DICOM extension, a numeric one or none), built in Arrow (no Python string per row)."""
    import pyarrow as pa

    if dicom_only:
        dicom = np.ones(len(paths), np.int8)
    else:
        dicom = paths.str.contains(DICOM_NAME, case=False, regex=True, na=False).to_numpy(dtype=np.int8)
    dicom[opened] = [k == "dicom" for k in kinds]
    words = pa.array(["image", "dicom"], pa.large_string())
    return pd.Series(
        pa.DictionaryArray.from_arrays(pa.array(dicom), words).cast(pa.large_string()), dtype="str"
    )


def _kept_rows(frame: pd.DataFrame, keep: np.ndarray) -> pd.DataFrame:
    """The rows of `frame` where keep is True (0-based index); columns move one at a time, emptying `frame`."""
    if keep.all():
        return frame.reset_index(drop=True)
    at = np.flatnonzero(keep)
    return pd.DataFrame({c: frame.pop(c).iloc[at].reset_index(drop=True) for c in list(frame.columns)})


def _probe_frame(
    cands: pd.DataFrame,
    validate: bool,
    workers: int,
    dicom_only: bool = False,
    group_tag: str = "",
    decode: Decode | None = None,
    limit: int | None = None,
) -> tuple[pd.DataFrame, list[dict], int]:
    """Open the candidate rows' files (a seeded sample of `limit` when there are more): items, problems, rows unread.

    Rows not opened keep NaN width and height and a kind guessed from the name. `cands` is consumed: its
    columns move into the items. With a DICOM group tag every file is opened (each row needs its tag).
    """
    n = len(cands)
    opened = _opened_rows(n, None if group_tag else limit)
    m = len(opened)
    kinds, groups = [""] * m, [""] * m
    width, height = np.zeros(m, np.int64), np.zeros(m, np.int64)
    failed: dict[int, str] = {}
    paths = cands["path"]

    def fn(k: int) -> None:
        try:
            info, _, groups[k] = _inspect(
                Path(paths.iat[opened[k]]), validate, dicom_only, "", group_tag, decode
            )
        except imaging.ImageError as e:
            failed[k] = str(e)
            return
        except Exception as e:  # one odd file must never stop a scan
            failed[k] = imaging.user_reason(e)
            return
        kinds[k], width[k], height[k] = info.kind, int(info.width), int(info.height)

    _run_chunked(fn, m, workers)
    rows = cands.pop("_row").to_numpy()
    problems = [_problem(paths.iat[opened[k]], f"row {rows[opened[k]]}: {failed[k]}") for k in sorted(failed)]
    if m == n:
        cands["kind"], cands["width"], cands["height"] = kinds, width, height
    else:
        w, h = np.full(n, np.nan), np.full(n, np.nan)
        w[opened], h[opened] = width, height
        cands["kind"], cands["width"], cands["height"] = (
            _kinds_from_names(paths, dicom_only, opened, kinds),
            w,
            h,
        )
    if group_tag:
        cands["group"] = groups
    keep = np.ones(n, bool)
    keep[opened[sorted(failed)]] = False
    return _kept_rows(cands, keep), problems, n - m


def from_df(
    df: pd.DataFrame,
    image_root: str | Path,
    path_col: str = "path",
    label_col: str = "label",
    group_col: str = "",
    split_col: str = "",
    source: str = "csv",
    validate: bool = True,
    workers: int = 4,
    decode: Decode | None = None,
    every_file: bool = False,
) -> Dataset:
    """Items from a table of relative paths and labels; row numbers in reasons are 1-based data rows.

    Extra columns are kept after the item columns (renamed csv_<name> when they clash with one). Every row is
    checked, but above probe_max() rows only a seeded sample of that many files is opened (Dataset.unread);
    every_file=True opens each one (training: every file must decode before it starts).
    """
    root = _root_dir(image_root)
    _need_columns(df, path=path_col, label=label_col, group=group_col, split=split_col)
    if not len(df):
        raise SourceError("the label table has no rows")
    cols = {"path": path_col, "label": label_col, "group": group_col, "split": split_col}
    cands, problems, rename, conflicts = _table_cands(df, root, cols)
    limit = None if every_file else probe_max()
    items, bad, unread = _probe_frame(cands, validate, workers, source == "dicom", decode=decode, limit=limit)
    del cands
    return _make(items, problems + bad, root, source, Counter(), rename.values(), False, conflicts, unread)


def from_csv(
    csv_path: str | Path,
    image_root: str | Path = "",
    path_col: str = "path",
    label_col: str = "label",
    group_col: str = "",
    split_col: str = "",
    validate: bool = True,
    workers: int = 4,
    decode: Decode | None = None,
    every_file: bool = False,
) -> Dataset:
    """Items from a CSV (paths relative to image_root, default the CSV's folder); see from_df."""
    root = image_root if str(image_root).strip() else Path(csv_path).expanduser().resolve().parent
    return from_df(
        read_table(csv_path),
        root,
        path_col,
        label_col,
        group_col,
        split_col,
        "csv",
        validate,
        workers,
        decode,
        every_file,
    )


# ---------------------------------------------------------------- DICOM folders


def _check_keywords(*keywords: str) -> None:
    """Refuse a DICOM keyword that does not exist (a typo would otherwise fail on every file)."""
    for kw in filter(None, keywords):
        if tag_for_keyword(kw) is None:
            raise SourceError(f"'{kw}' is not a DICOM attribute keyword (e.g. PatientID, BodyPartExamined)")


def scan_dicom_folder(
    root: str | Path,
    labels_csv: str | Path = "",
    label_tag: str = "",
    group_tag: str = "",
    path_col: str = "path",
    label_col: str = "label",
    validate: bool = True,
    workers: int = 4,
    group_col: str = "",
    split_col: str = "",
    decode: Decode | None = None,
    every_file: bool = False,
) -> Dataset:
    """Items from a folder of DICOM files; labels from class folders, a table, or a header tag.

    Priority: labels_csv (paths relative to root) > label_tag > class folders. group_tag (e.g.
    PatientID, returned pseudonymised) overrides group_col. Non-DICOM content is a problem row. A table
    opens at most probe_max() files unless every_file or group_tag (see from_df); a folder opens each.
    """
    base, ignored, problems = _root_dir(root, "DICOM folder"), Counter[str](), list[dict]()
    _check_keywords(label_tag, group_tag)
    if str(labels_csv).strip():
        df = read_table(labels_csv)
        _need_columns(df, path=path_col, label=label_col, group=group_col, split=split_col)
        cols = {"path": path_col, "label": label_col, "group": group_col, "split": split_col}
        table, problems, rename, conflicts = _table_cands(df, base, cols)
        if not len(table) and not problems:
            raise _no_files(base, ignored, "DICOM")
        limit = None if every_file else probe_max()
        items, bad, unread = _probe_frame(table, validate, workers, True, group_tag, decode, limit)
        return _make(items, problems + bad, base, "dicom", ignored, rename.values(), False, conflicts, unread)
    cands = _folder_cands(base, ignored, problems, dicom_only=True, by_folder=not label_tag)
    if not cands and not problems:
        raise _no_files(base, ignored, "DICOM")
    items, bad = _probe_all(cands, validate, workers, True, label_tag, group_tag, decode)
    return _make(items, problems + bad, base, "dicom", ignored, [], True)


# ---------------------------------------------------------------- dispatch


def _sample(cfg: SourceConfig, decode: Decode | None = None, every_file: bool = False) -> Dataset:
    """The built-in synthetic sample (CSV form with patient ids, so splits can be by patient)."""
    from core.sample import ensure_sample

    return from_csv(
        ensure_sample() / "labels.csv", group_col="patient_id", decode=decode, every_file=every_file
    )


LOADERS: dict[str, Callable[[SourceConfig, Decode | None, bool], Dataset]] = {
    "folder": lambda c, d, e: scan_folder(c.root, c.test_root, decode=d),
    "csv": lambda c, d, e: from_csv(
        c.csv_path, c.root, c.path_col, c.label_col, c.group_col, c.split_col, decode=d, every_file=e
    ),
    "dicom": lambda c, d, e: scan_dicom_folder(
        c.root,
        c.csv_path,
        c.label_tag,
        c.group_tag,
        c.path_col,
        c.label_col,
        group_col=c.group_col,
        split_col=c.split_col,
        decode=d,
        every_file=e,
    ),
    "sample": _sample,
}


def source_root(cfg: SourceConfig) -> Path:
    """The folder the relative paths (items' relpath) of a source's items are relative to."""
    if cfg.kind == "sample":
        from core.sample import ensure_sample

        return ensure_sample().resolve()
    if cfg.kind == "csv" and not str(cfg.root).strip():
        return Path(cfg.csv_path).expanduser().resolve().parent
    return Path(cfg.root).expanduser().resolve()


def load_source(cfg: SourceConfig, decode: Decode | None = None, every_file: bool = False) -> Dataset:
    """Build the Dataset a SourceConfig describes.

    `decode(path)` is the validating decode of every file opened (default imaging.read_image); training passes
    a DecodeCache.warm partial with its image size and window so validating also fills its decode cache, and
    every_file=True: a table longer than probe_max() rows is otherwise opened only for a sample (see from_df).
    """
    if cfg.kind not in LOADERS:
        raise SourceError(f"unknown source kind '{cfg.kind}'; use one of {', '.join(LOADERS)}")
    return LOADERS[cfg.kind](cfg, decode, every_file)
