"""The items table of a data source: its columns, the Dataset (items + problems + ignored), path safety,
and the probing of candidate files (every file or row that cannot be used becomes a problem row with a reason)."""

from __future__ import annotations

import os
import posixpath
import re
from collections import Counter
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from core.base import steps
from core.base.fsutil import inside
from core.base.paths import env_int
from core.base.steps import OnStep
from core.data import imaging

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

    def check_trainable(self, counts: dict[str, int] | None = None) -> list[str]:
        """Reasons training must be refused on this dataset (empty list = it can train); `counts`: images per class
        to check instead of the labels' (a multi-label task's findings, core.data.labels.class_counts)."""
        if not len(self.items):
            return [
                "no usable images were found"
                + (f" ({len(self.problems)} files have problems)" if len(self.problems) else "")
            ]
        counts, reasons = (self.class_counts() if counts is None else counts), []
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
    progress: OnStep | None = None,
) -> tuple[list[dict], list[dict]]:
    """Probe every candidate in a thread pool; split the results into items and problems (order kept)."""
    rows: list[dict[str, Any]] = [{}] * len(cands)

    def fn(i: int) -> None:
        rows[i] = _probe(cands[i], validate, dicom_only, label_tag, group_tag, decode)

    _run_chunked(fn, len(cands), workers, progress=progress)
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


def _run_chunked(
    fn: Callable[[int], None], n: int, workers: int, chunk: int = 2048, progress: OnStep | None = None
) -> None:
    """fn(i) for i in range(n), in threads a chunk at a time (never a million futures at once); each file done is
    reported to `progress` as "files"."""
    if workers <= 1 or n <= 1:
        for _ in steps.counted(map(fn, range(n)), n, progress, "files"):
            pass
        return
    with ThreadPoolExecutor(max_workers=workers) as ex:
        done = 0
        steps.report(progress, "files", 0, n)
        for start in range(0, n, chunk):
            for _ in ex.map(fn, range(start, min(n, start + chunk))):
                done += 1
                steps.report(progress, "files", done, n)
