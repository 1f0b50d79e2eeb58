"""Data sources (class folders, CSV tables, DICOM folders) -> one items table plus a problems table.

Every file or row that cannot be used becomes a row of `Dataset.problems` with a reason; files
that are simply not images (hidden files, notes, spreadsheets) are counted in `Dataset.ignored`.
Nothing is dropped silently and one bad file never stops a scan."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from core.base.config import SourceConfig
from core.base.steps import OnStep
from core.data.folders import scan_dicom_folder, scan_folder
from core.data.items import Dataset, Decode, SourceError
from core.data.tables import from_csv, from_df, read_table

# ---------------------------------------------------------------- dispatch


def _sample(
    cfg: SourceConfig, decode: Decode | None = None, every_file: bool = False, progress: OnStep | None = None
) -> Dataset:
    """The built-in synthetic sample (CSV form with patient ids, so splits can be by patient)."""
    from core.data import sample

    src = sample.source(sample.ensure_sample())
    return from_csv(
        src.csv_path, group_col=src.group_col, decode=decode, every_file=every_file, progress=progress
    )


def _csv(cfg: SourceConfig, decode: Decode | None, every_file: bool, progress: OnStep | None) -> Dataset:
    """A CSV source; a multi-label one gets its findings parsed into one canonical label column first."""
    from core.data import labels

    c = cfg
    table = labels.multilabel_table(
        read_table(c.csv_path), c.label_col, c.label_delimiter, c.finding_cols, c.uncertain, c.no_finding
    )
    return from_df(
        table,
        source_root(c),
        c.path_col,
        labels.LABEL,
        c.group_col,
        c.split_col,
        decode=decode,
        every_file=every_file,
        progress=progress,
    )


LOADERS: dict[str, Callable[[SourceConfig, Decode | None, bool, OnStep | None], Dataset]] = {
    "folder": lambda c, d, e, p: scan_folder(c.root, c.test_root, decode=d, progress=p),
    "csv": lambda c, d, e, p: (
        _csv(c, d, e, p)
        if c.multilabel()
        else from_csv(
            c.csv_path,
            c.root,
            c.path_col,
            c.label_col,
            c.group_col,
            c.split_col,
            decode=d,
            every_file=e,
            progress=p,
        )
    ),
    "dicom": lambda c, d, e, p: scan_dicom_folder(
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
        progress=p,
    ),
    "sample": _sample,
}


def source_root(cfg: SourceConfig) -> Path:
    """The folder the relative paths (items' relpath) of a source's items are relative to."""
    if cfg.kind == "sample":
        from core.data.sample import ensure_sample

        return ensure_sample().resolve()
    if cfg.kind == "csv" and not str(cfg.root).strip():
        return Path(cfg.csv_path).expanduser().resolve().parent
    return Path(cfg.root).expanduser().resolve()


def load_source(
    cfg: SourceConfig, decode: Decode | None = None, every_file: bool = False, progress: OnStep | None = None
) -> Dataset:
    """Build the Dataset a SourceConfig describes.

    `decode(path)` is the validating decode of every file opened (default imaging.read_image); training passes
    a DecodeCache.warm partial with its image size and window so validating also fills its decode cache, and
    every_file=True: a table longer than probe_max() rows is otherwise opened only for a sample (see from_df).
    `progress(what, done, total)` hears of each file opened (core.base.steps).
    """
    if cfg.kind not in LOADERS:
        raise SourceError(f"unknown source kind '{cfg.kind}'; use one of {', '.join(LOADERS)}")
    return LOADERS[cfg.kind](cfg, decode, every_file, progress)
