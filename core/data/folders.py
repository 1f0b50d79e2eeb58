"""Class folders and DICOM folders -> candidates for the items table (nothing dropped silently)."""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

from pydicom.datadict import tag_for_keyword

from core.base.fsutil import SPLIT_FOLDERS, inside, is_hidden, split_layout
from core.base.steps import OnStep
from core.data import imaging
from core.data.items import (
    UNLABELLED,
    Dataset,
    Decode,
    SourceError,
    _Cand,
    _display,
    _make,
    _probe_all,
    _problem,
    _root_dir,
    probe_max,
)
from core.data.tables import _need_columns, _probe_frame, _table_cands, read_table

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
    """Whether root holds train/ plus valid/ (val/) and/or test/, or only split folders (fsutil.split_layout)."""
    return bool(split_layout(root))


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


def class_folder_labels(root: str | Path, paths: list[str], classes: list[str]) -> list[str] | None:
    """Each file's class from its class folder (inside train/valid/test folders too), when every file under
    `root` sits in a folder named after one of `classes`; else None (the folders say nothing about labels)."""
    base = Path(root).expanduser().resolve()
    dirs = {p.name.lower() for p in base.iterdir() if p.is_dir() and not is_hidden(p.name)}
    layout, known = _split_layout(base) or (bool(dirs) and dirs <= set(SPLIT_FOLDERS)), set(classes)
    labels = []
    for p in paths:
        label, _, problem = _folder_label(Path(p).resolve().relative_to(base).parts, layout)
        if problem or label not in known:
            return None
        labels.append(label)
    return labels if labels else None


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
    progress: OnStep | None = None,
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
    items, bad = _probe_all(cands, validate, workers, decode=decode, progress=progress)
    return _make(items, problems + bad, base, "folder", ignored)


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
    progress: OnStep | None = None,
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
        items, bad, unread = _probe_frame(table, validate, workers, True, group_tag, decode, limit, progress)
        return _make(items, problems + bad, base, "dicom", ignored, rename.values(), False, conflicts, unread)
    cands = _folder_cands(base, ignored, problems, dicom_only=True, by_folder=not label_tag)
    if not cands and not problems:
        raise _no_files(base, ignored, "DICOM")
    items, bad = _probe_all(cands, validate, workers, True, label_tag, group_tag, decode, progress)
    return _make(items, problems + bad, base, "dicom", ignored, [], True)
