"""Data sources (class folders, CSV tables, DICOM folders) -> one items table plus a problems table.

Every file or row that cannot be used becomes a row of `Dataset.problems` with a reason; files
that are simply not images (hidden files, notes, spreadsheets) are counted in `Dataset.ignored`.
Nothing is dropped silently and one bad file never stops a scan.
"""

from __future__ import annotations

import csv
import io
import os
import posixpath
import re
import warnings
from collections import Counter
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from pydicom.datadict import tag_for_keyword

from core import imaging
from core.config import SourceConfig

ITEM_COLUMNS = ["path", "relpath", "label", "group", "split", "source", "kind", "width", "height"]
PROBLEM_COLUMNS = ["path", "reason"]
SPLIT_NAMES = {"train": "train", "training": "train", "valid": "valid", "val": "valid",
               "validation": "valid", "test": "test", "testing": "test", "holdout": "test"}
SPLIT_FOLDERS = {"train": "train", "valid": "valid", "val": "valid", "test": "test"}
HIDDEN_NAMES = {"__MACOSX", "Thumbs.db", "desktop.ini"}
DELIMITERS = (",", ";", "\t", "|")


Decode = Callable[[Path], object]
"""A validating decode of one file: raises imaging.ImageError when the file cannot be used."""


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
        return {"n_items": len(self.items), "n_problems": len(self.problems), "n_classes": len(self.classes),
                "per_class": self.class_counts(), "per_split": {str(k): int(v) for k, v in dict(splits).items()},
                "n_groups": int(groups[groups != ""].nunique()), "ignored": dict(self.ignored)}

    def check_trainable(self) -> list[str]:
        """Reasons training must be refused on this dataset (empty list = it can train)."""
        if not len(self.items):
            return ["no usable images were found" + (f" ({len(self.problems)} files have problems)" if len(self.problems) else "")]
        counts, reasons = self.class_counts(), []
        if len(counts) < 2:
            reasons.append(f"only one class ({', '.join(counts)}): a classifier needs at least 2 classes")
        reasons += [f"class '{c}' has only {n} image (need at least 2)" for c, n in counts.items() if n < 2]
        if not self.items["split"].isin(["train", ""]).any():
            reasons.append("no images are assigned to training (every item is in valid or test)")
        return reasons


# ---------------------------------------------------------------- paths


def _is_hidden(name: str) -> bool:
    """Hidden or system clutter (dot files, macOS resource forks, Windows thumbnails)."""
    return name.startswith(".") or name in HIDDEN_NAMES


def _inside(path: Path, root: Path) -> bool:
    """Whether an already resolved path lies inside an already resolved root."""
    return path == root or root in path.parents


def safe_join(root: str | Path, rel: str) -> Path:
    """Join a relative path from a table onto root, refusing anything that would leave root."""
    rel = str(rel).strip()
    if not rel or "\x00" in rel:
        raise UnsafePathError("empty path" if not rel else "path contains a NUL character")
    if rel.startswith(("\\\\", "//")):
        raise UnsafePathError(f"network (UNC) paths are not allowed: {rel}")
    if re.match(r"^[A-Za-z]:", rel) or rel.startswith(("/", "\\", "~")):
        raise UnsafePathError(f"absolute paths are not allowed; give a path relative to the image folder: {rel}")
    norm = posixpath.normpath(rel.replace("\\", "/"))
    if norm == ".." or norm.startswith("../"):
        raise UnsafePathError(f"path escapes the image folder: {rel}")
    base = Path(root).resolve()
    path = base / norm
    if not _inside(path.resolve(), base):
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
        raise imaging.ImageError(f"named {path.suffix} but the content is not DICOM (it is an ordinary image)")


def _probe(c: _Cand, verify: bool, dicom_only: bool, label_tag: str, group_tag: str,
           decode: Decode | None = None) -> dict[str, Any]:
    """Inspect one file: an item row, or a problem row (has a 'reason') - never raises."""
    try:
        info = imaging.inspect_image(c.path, verify=verify, decode=decode)
        _check_kind(c.path, info.kind, dicom_only)
        label = _tag(c.path, label_tag) if label_tag else c.label
        if not label:
            raise imaging.ImageError(f"no {label_tag} value in the DICOM header (needed as the label)" if label_tag
                                     else UNLABELLED)
        group = _tag(c.path, group_tag) if group_tag else c.group
    except imaging.ImageError as e:
        return _problem(c.path, c.where + str(e))
    except Exception as e:  # one odd file must never stop a scan
        return _problem(c.path, f"{c.where}unexpected error: {type(e).__name__}: {e}")
    return {"path": str(c.path), "relpath": c.relpath, "label": label, "group": group, "split": c.split,
            "kind": info.kind, "width": int(info.width), "height": int(info.height), **c.extra}


def _probe_all(cands: list[_Cand], validate: bool, workers: int, dicom_only: bool = False,
               label_tag: str = "", group_tag: str = "", decode: Decode | None = None
               ) -> tuple[list[dict], list[dict]]:
    """Probe every candidate in a thread pool; split the results into items and problems (order kept)."""
    def fn(c: _Cand) -> dict[str, Any]:
        return _probe(c, validate, dicom_only, label_tag, group_tag, decode)
    if workers > 1 and len(cands) > 1:
        with ThreadPoolExecutor(max_workers=workers) as ex:
            rows = list(ex.map(fn, cands))
    else:
        rows = [fn(c) for c in cands]
    return [r for r in rows if "reason" not in r], [r for r in rows if "reason" in r]


def _make(items: list[dict], problems: list[dict], root: Path, source: str, ignored: Counter,
          extra_cols: Iterable[str] = (), sort: bool = True) -> Dataset:
    """Assemble a Dataset with typed, ordered columns."""
    cols = ITEM_COLUMNS + [c for c in extra_cols if c not in ITEM_COLUMNS]
    df = pd.DataFrame(items, columns=cols)
    df["source"] = source
    df = df.astype({"width": int, "height": int})
    probs = pd.DataFrame(problems, columns=PROBLEM_COLUMNS)
    if sort:
        df, probs = df.sort_values("path", kind="stable"), probs.sort_values("path", kind="stable")
    return Dataset(df.reset_index(drop=True), probs.reset_index(drop=True), str(root), source,
                   {k: int(v) for k, v in sorted(ignored.items()) if v})


# ---------------------------------------------------------------- folders


def _walk(root: Path, ignored: Counter) -> list[Path]:
    """Every non-hidden file under root (sorted); folder links are counted, not followed."""
    files, stack = [], [root]
    while stack:
        try:
            entries = list(os.scandir(stack.pop()))
        except OSError:
            ignored["unreadable_folder"] += 1
            continue
        for e in entries:
            if _is_hidden(e.name):
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
        if not _inside(target, root):
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
            return f"unreadable file: {type(e).__name__}: {e}"
    return "ignore:not_image"


def _split_layout(root: Path) -> bool:
    """Whether root holds train/ plus valid/ (val/) and/or test/, or only split folders (train/ alone too)."""
    dirs = {p.name.lower() for p in root.iterdir() if p.is_dir() and not _is_hidden(p.name)}
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


def _folder_cands(root: Path, ignored: Counter, problems: list[dict], dicom_only: bool = False,
                  by_folder: bool = True, display_root: Path | None = None) -> list[_Cand]:
    """Candidates of a folder tree, labelled by class folder (or unlabelled when by_folder=False)."""
    layout = by_folder and _split_layout(root)
    cands = []
    for path in _walk(root, ignored):
        verdict = _classify(path, root, dicom_only)
        if verdict.startswith("ignore:"):
            ignored[verdict[7:]] += 1
            continue
        label, split, reason = _folder_label(path.relative_to(root).parts, layout) if by_folder else ("", "", "")
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


def scan_folder(root: str | Path, test_root: str | Path = "", validate: bool = True, workers: int = 4,
                decode: Decode | None = None) -> Dataset:
    """Items from class folders (root/<class>/**), optionally inside train/valid(val)/test folders.

    `test_root` is a separate folder with the same layout whose items all get split="test".
    validate=True fully decodes every file (through `decode(path)` when given, see imaging.inspect_image);
    validate=False only reads headers (fast).
    """
    base, ignored, problems = _root_dir(root), Counter(), []
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


def _decode(raw: bytes) -> str:
    """Text of a table file: UTF-8 (BOM stripped), UTF-16 with BOM, else Latin-1."""
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        return raw.decode("utf-16")
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def read_table(csv_path: str | Path) -> pd.DataFrame:
    """Read a CSV/TSV as strings: delimiter sniffed (, ; tab |), BOM removed, header names stripped."""
    if not str(csv_path).strip():
        raise SourceError("no label table (CSV) was given")
    path = Path(csv_path).expanduser()
    if not path.is_file():
        raise SourceError(f"label table not found: {csv_path}")
    text = _decode(path.read_bytes())
    if not text.strip():
        raise SourceError(f"label table is empty: {csv_path}")
    try:
        with warnings.catch_warnings():  # extra trailing fields (Excel's "a.png,1,") are dropped, not shifted
            warnings.simplefilter("ignore", pd.errors.ParserWarning)
            df = pd.read_csv(io.StringIO(text), sep=_sniff_delimiter(text), dtype=str, keep_default_na=False,
                             skip_blank_lines=True, skipinitialspace=True, index_col=False)
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


def _row_cand(row: dict, n: int, root: Path, cols: dict[str, str], seen: dict[str, int],
              extras: list[str], need_label: bool) -> _Cand | dict[str, str]:
    """A candidate from one table row (n = 1-based data row), or a problem row."""
    raw = _cell(row[cols["path"]])
    if not raw:
        return _problem(f"row {n}", f"row {n}: empty path")
    try:
        path = safe_join(root, raw)
    except UnsafePathError as e:
        return _problem(raw, f"row {n}: {e}")
    key = os.path.normcase(str(path.resolve()))
    if key in seen:
        return _problem(path, f"row {n}: duplicate of row {seen[key]}")
    seen[key] = n
    label = _cell(row[cols["label"]]) if cols["label"] else ""
    if need_label and not label:
        return _problem(path, f"row {n}: empty label")
    split = _cell(row[cols["split"]]) if cols["split"] else ""
    if cols["split"] and split.lower() not in SPLIT_NAMES:
        return _problem(path, f"row {n}: unknown split value '{split}' (use train, valid or test)")
    if not path.is_file():
        return _problem(path, f"row {n}: file not found" if not path.exists() else f"row {n}: not a file")
    group = _cell(row[cols["group"]]) if cols["group"] else ""
    extra = {c: row[c] for c in extras}
    return _Cand(path, _display(path, root), label, group, SPLIT_NAMES.get(split.lower(), ""), extra, f"row {n}: ")


def _table_cands(df: pd.DataFrame, root: Path, cols: dict[str, str], need_label: bool = True
                 ) -> tuple[list[_Cand], list[dict], dict[str, str]]:
    """Candidates and row problems of a table; extra columns renamed away from item column names."""
    used = {c for c in cols.values() if c}
    rename = {c: (f"csv_{c}" if c in ITEM_COLUMNS else str(c)) for c in df.columns if c not in used}
    cands, problems, seen = [], [], {}
    for n, row in enumerate(df.to_dict("records"), start=1):
        out = _row_cand(row, n, root, cols, seen, list(rename), need_label)
        if isinstance(out, _Cand):
            out.extra = {rename[k]: v for k, v in out.extra.items()}
            cands.append(out)
        else:
            problems.append(out)
    return cands, problems, rename


def from_df(df: pd.DataFrame, image_root: str | Path, path_col: str = "path", label_col: str = "label",
            group_col: str = "", split_col: str = "", source: str = "csv", validate: bool = True,
            workers: int = 4, decode: Decode | None = None) -> Dataset:
    """Items from a table of relative paths and labels; row numbers in reasons are 1-based data rows.

    Extra columns are kept after the item columns (renamed csv_<name> when they clash with one).
    """
    root = _root_dir(image_root)
    _need_columns(df, path=path_col, label=label_col, group=group_col, split=split_col)
    if not len(df):
        raise SourceError("the label table has no rows")
    cols = {"path": path_col, "label": label_col, "group": group_col, "split": split_col}
    cands, problems, rename = _table_cands(df, root, cols)
    items, bad = _probe_all(cands, validate, workers, dicom_only=source == "dicom", decode=decode)
    return _make(items, problems + bad, root, source, Counter(), rename.values(), sort=False)


def from_csv(csv_path: str | Path, image_root: str | Path = "", path_col: str = "path", label_col: str = "label",
             group_col: str = "", split_col: str = "", validate: bool = True, workers: int = 4,
             decode: Decode | None = None) -> Dataset:
    """Items from a CSV (paths relative to image_root, default the CSV's folder); see from_df."""
    root = image_root if str(image_root).strip() else Path(csv_path).expanduser().resolve().parent
    return from_df(read_table(csv_path), root, path_col, label_col, group_col, split_col, "csv", validate, workers,
                   decode)


# ---------------------------------------------------------------- DICOM folders


def _check_keywords(*keywords: str) -> None:
    """Refuse a DICOM keyword that does not exist (a typo would otherwise fail on every file)."""
    for kw in filter(None, keywords):
        if tag_for_keyword(kw) is None:
            raise SourceError(f"'{kw}' is not a DICOM attribute keyword (e.g. PatientID, BodyPartExamined)")


def scan_dicom_folder(root: str | Path, labels_csv: str | Path = "", label_tag: str = "", group_tag: str = "",
                      path_col: str = "path", label_col: str = "label", validate: bool = True, workers: int = 4,
                      group_col: str = "", split_col: str = "", decode: Decode | None = None) -> Dataset:
    """Items from a folder of DICOM files; labels from class folders, a table, or a header tag.

    Priority: labels_csv (paths relative to root) > label_tag > class folders. group_tag (e.g.
    PatientID, returned pseudonymised) overrides group_col. Non-DICOM content is a problem row.
    """
    base, ignored, problems = _root_dir(root, "DICOM folder"), Counter(), []
    _check_keywords(label_tag, group_tag)
    if str(labels_csv).strip():
        df = read_table(labels_csv)
        _need_columns(df, path=path_col, label=label_col, group=group_col, split=split_col)
        cols = {"path": path_col, "label": label_col, "group": group_col, "split": split_col}
        cands, problems, rename = _table_cands(df, base, cols)
        extra_cols, label_tag, sort = list(rename.values()), "", False
    else:
        cands = _folder_cands(base, ignored, problems, dicom_only=True, by_folder=not label_tag)
        extra_cols, sort = [], True
    if not cands and not problems:
        raise _no_files(base, ignored, "DICOM")
    items, bad = _probe_all(cands, validate, workers, True, label_tag, group_tag, decode)
    return _make(items, problems + bad, base, "dicom", ignored, extra_cols, sort)


# ---------------------------------------------------------------- dispatch


def _sample(cfg: SourceConfig, decode: Decode | None = None) -> Dataset:
    """The built-in synthetic sample (CSV form with patient ids, so splits can be by patient)."""
    from core.sample import ensure_sample

    return from_csv(ensure_sample() / "labels.csv", group_col="patient_id", decode=decode)


LOADERS: dict[str, Callable[[SourceConfig, Decode | None], Dataset]] = {
    "folder": lambda c, d: scan_folder(c.root, c.test_root, decode=d),
    "csv": lambda c, d: from_csv(c.csv_path, c.root, c.path_col, c.label_col, c.group_col, c.split_col, decode=d),
    "dicom": lambda c, d: scan_dicom_folder(c.root, c.csv_path, c.label_tag, c.group_tag, c.path_col, c.label_col,
                                            group_col=c.group_col, split_col=c.split_col, decode=d),
    "sample": _sample,
}


def load_source(cfg: SourceConfig, decode: Decode | None = None) -> Dataset:
    """Build the Dataset a SourceConfig describes.

    `decode(path)` is the validating decode of every file (default imaging.read_image); training passes a
    DecodeCache.warm partial with its image size and window so validating also fills its decode cache.
    """
    if cfg.kind not in LOADERS:
        raise SourceError(f"unknown source kind '{cfg.kind}'; use one of {', '.join(LOADERS)}")
    return LOADERS[cfg.kind](cfg, decode)
