"""DICOM header tags as subgroup / site columns: an allow-list, read once per file (cached), made safe to show.

A column is named `dicom:<Keyword>` (e.g. `dicom:Manufacturer`). PatientAge becomes a band (<40, 40-59, 60-79,
80+) parsed from the DICOM age string (`065Y`, `018M`, `003W`, `010D`), and InstitutionName becomes a keyed
pseudonym of the site (core.base.privacy.pseudonym): the raw name is never returned, cached or written. Files
that are not DICOM, or lack a tag, give "" (the subgroup report calls that group "(missing)").
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache
from pathlib import Path

import pandas as pd

from core.base.privacy import pseudonym, pseudonym_key
from core.data import imaging

PREFIX = "dicom:"
GROUP_TAGS = (
    "PatientSex",
    "PatientAge",
    "Manufacturer",
    "ManufacturerModelName",
    "ViewPosition",
    "BodyPartExamined",
    "InstitutionName",
)
SITE_TAG = "InstitutionName"  # offered only as a pseudonymised site
AGE_BANDS = ((40, "<40"), (60, "40-59"), (80, "60-79"))  # upper bounds; 80 and over: "80+"
_AGE = re.compile(r"^\s*(\d{1,3})\s*([DWMY]?)\s*$", re.IGNORECASE)
_DAYS_PER = {"D": 1.0, "W": 7.0, "M": 365.25 / 12, "Y": 365.25, "": 365.25}


def columns() -> list[str]:
    """The column names offered: dicom:<Keyword> for each allow-listed tag."""
    return [PREFIX + t for t in GROUP_TAGS]


def is_dicom_column(name: str) -> bool:
    """True for a `dicom:<Keyword>` column name."""
    return name.startswith(PREFIX)


def tag_of(name: str) -> str:
    """The keyword of a `dicom:` column; refuses a tag outside the allow-list with the allowed ones."""
    tag = name[len(PREFIX) :] if is_dicom_column(name) else name
    if tag not in GROUP_TAGS:
        raise ValueError(
            f"{name!r} is not a DICOM tag offered as a group; choose from {', '.join(columns())}"
        )
    return tag


def age_years(text: str) -> float | None:
    """Age in years from a DICOM AS string (`065Y`, `018M`, `003W`, `010D`) or a plain number; None if unreadable."""
    m = _AGE.match(str(text or ""))
    if not m:
        return None
    return int(m.group(1)) * _DAYS_PER[m.group(2).upper()] / 365.25


def age_band(text: str) -> str:
    """The age band of a DICOM age string: <40, 40-59, 60-79 or 80+ ("" when unreadable)."""
    years = age_years(text)
    if years is None:
        return ""
    return next((band for upper, band in AGE_BANDS if years < upper), "80+")


def shown_value(tag: str, raw: str) -> str:
    """What may be shown of a tag's value: the age as a band, the institution as a pseudonym, else the text."""
    raw = str(raw or "").strip()
    if tag == "PatientAge":
        return age_band(raw)
    if tag == SITE_TAG:
        return pseudonym(raw)
    return raw


@lru_cache(maxsize=65536)
def _file_groups(path: str, mtime_ns: int, size: int, key_id: str) -> tuple[tuple[str, str], ...]:
    """Every allow-listed group value of one file (already banded / pseudonymised), cached by path, version and
    pseudonym key (another key must not reuse pseudonyms made with this one)."""
    try:
        meta = imaging.dicom_metadata(path, include_phi=True)
    except (imaging.ImageError, OSError):
        return ()
    return tuple((t, shown_value(t, meta.get(t, ""))) for t in GROUP_TAGS)


def file_groups(path: str | os.PathLike) -> dict[str, str]:
    """{keyword: shown value} of one file ({} when it is not a readable DICOM)."""
    try:
        st = os.stat(path)
    except OSError:
        return {}
    key_id = hashlib.sha256(pseudonym_key()).hexdigest()[:16]
    return dict(_file_groups(str(path), st.st_mtime_ns, st.st_size, key_id))


def group_table(paths: Iterable[str], names: Sequence[str], workers: int = 4) -> pd.DataFrame:
    """A metadata table: `path` and one column per `dicom:<Keyword>` name, read from each file's header."""
    tags = [tag_of(n) for n in names]
    paths = [str(p) for p in paths]
    with ThreadPoolExecutor(max_workers=max(1, workers)) as ex:
        found = list(ex.map(file_groups, paths))
    table = {"path": paths}
    for name, tag in zip(names, tags):
        table[name] = [g.get(tag, "") for g in found]
    return pd.DataFrame(table, dtype=str)


def any_dicom(paths: Iterable[str | Path], probe: int = 20) -> bool:
    """True when one of the first `probe` paths is a readable DICOM (offer the dicom: columns then)."""
    return any(file_groups(p) for _, p in zip(range(probe), paths))
