"""Tables written for people to open (in a spreadsheet): patient ids pseudonymised, formula cells defused.

A cell that starts with `=`, `+`, `-`, `@`, a tab or a carriage return is run as a formula by Excel,
LibreOffice and Google Sheets when the CSV is opened (CSV injection; a hostile file name or label can carry
`=HYPERLINK(...)`). OWASP's rule: prefix such a cell with a single quote, so it is shown as text. Plain numbers
("-1.5", "+3") are left alone. Tables the app reads back keep their data columns unescaped.
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from core.base.privacy import pseudonym

FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
GROUP_COLUMNS = ("group",)  # items-table columns that hold patient ids


def escape_cell(value: object) -> object:
    """A text cell a spreadsheet would run as a formula, prefixed with "'"; anything else unchanged."""
    if not isinstance(value, str) or not value.startswith(FORMULA_START):
        return value
    try:
        float(value)
        return value  # a signed number, not a formula
    except ValueError:
        return "'" + value


def escape_formulas(df: pd.DataFrame, columns: list[str] | None = None) -> pd.DataFrame:
    """A copy of `df` with the text cells of `columns` (default: every text column) defused."""
    out = df.copy()
    for col in columns if columns is not None else list(out.columns):
        if col in out and (out[col].dtype == object or pd.api.types.is_string_dtype(out[col])):
            out[col] = out[col].map(escape_cell)
    return out


def pseudonymised(items: pd.DataFrame) -> pd.DataFrame:
    """A copy of an items table whose patient-id columns hold keyed pseudonyms."""
    out = items.copy()
    for col in GROUP_COLUMNS:
        if col in out:
            out[col] = [pseudonym(str(g)) if isinstance(g, str) and g else g for g in out[col]]
    return out


def write_for_people(df: pd.DataFrame, path: str | os.PathLike) -> Path:
    """Write a table a person will open: patient ids pseudonymised, formula cells defused."""
    path = Path(path)
    escape_formulas(pseudonymised(df)).to_csv(path, index=False)
    return path
