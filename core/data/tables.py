"""CSV tables -> candidates for the items table: encoding and delimiter sniffing, chunked parsing, row checks."""

from __future__ import annotations

import csv
import os
import posixpath
import stat
import warnings
from collections import Counter
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pandas as pd

from core.base.steps import OnStep
from core.data import imaging
from core.data.items import (
    DELIMITERS,
    ITEM_COLUMNS,
    PROBE_SEED,
    SPLIT_NAMES,
    Dataset,
    Decode,
    SourceError,
    UnsafePathError,
    _inspect,
    _make,
    _problem,
    _relative,
    _root_dir,
    _run_chunked,
    probe_max,
)

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


class _Columns(NamedTuple):
    """A table's path, label, group and split cells as strings (blank where a column is not given)."""

    raw: pd.Series
    norm: pd.Series  # normalised relative paths
    unsafe: dict[int, str]  # row -> why its path is refused (absolute, escapes the root ...)
    label: pd.Series
    group: pd.Series
    split: pd.Series
    split_low: pd.Series  # lower-case split values (the blank split cells when there is no split column)


class _Verdicts(NamedTuple):
    """Per-row results of the whole-column checks."""

    ok: np.ndarray  # a usable path inside the root
    state: np.ndarray  # OK / MISSING / OUTSIDE / ... of each row's file
    first: np.ndarray  # the first row naming the same file (-1 for unusable paths)
    bad: np.ndarray  # refused, for whatever reason


def _columns(df: pd.DataFrame, cols: dict[str, str]) -> _Columns:
    """The table's cells as strings, its paths normalised and checked for safety."""
    blank = pd.Series("", index=pd.RangeIndex(len(df)), dtype="str")
    raw, label, group, split = (
        _cells(df[cols[k]]) if cols[k] else blank for k in ("path", "label", "group", "split")
    )
    norm, unsafe = _relatives(raw)
    return _Columns(raw, norm, unsafe, label, group, split, split.str.lower() if cols["split"] else split)


def _verdicts(base: str, c: _Columns, need_label: bool, has_split: bool) -> _Verdicts:
    """Which rows are refused, decided on whole columns (the root resolved once, each folder listed once)."""
    n = len(c.raw)
    ok = np.ones(n, bool)
    ok[list(c.unsafe)] = False
    state, first = _locate_all(base, c.norm, ok)
    ok &= state != OUTSIDE
    first[~ok] = -1
    bad = ~ok | (first != np.arange(n)) | (state != OK)
    if need_label:
        bad |= (c.label == "").to_numpy(dtype=bool)
    if has_split:
        bad |= ~c.split_low.isin(list(SPLIT_NAMES)).to_numpy(dtype=bool)
    return _Verdicts(ok, state, first, bad)


def _row_problems(
    base: str, c: _Columns, v: _Verdicts, need_label: bool, has_split: bool
) -> tuple[list[dict], list[str]]:
    """The problem of each refused row (its first reason by precedence) and the paths listed with two labels."""
    problems, conflicts = [], []
    for i in np.flatnonzero(v.bad).tolist():
        r, where, full = int(i) + 1, f"row {int(i) + 1}: ", str(Path(base) / c.norm.iat[i]) if v.ok[i] else ""
        if not c.raw.iat[i]:
            problems.append(_problem(f"row {r}", where + "empty path"))
        elif i in c.unsafe:
            problems.append(_problem(c.raw.iat[i], where + c.unsafe[i]))
        elif v.state[i] == OUTSIDE:
            problems.append(
                _problem(c.raw.iat[i], where + f"link points outside the image folder: {c.raw.iat[i]}")
            )
        elif v.first[i] != i:
            f = int(v.first[i])
            reason = _duplicate_reason(r, f + 1, c.label.iat[i], c.label.iat[f])
            problems.append(_problem(full, reason))
            if "different labels" in reason:
                conflicts.append(c.norm.iat[f])
        elif need_label and not c.label.iat[i]:
            problems.append(_problem(full, where + "empty label"))
        elif has_split and c.split_low.iat[i] not in SPLIT_NAMES:
            problems.append(
                _problem(full, where + f"unknown split value '{c.split.iat[i]}' (use train, valid or test)")
            )
        else:
            problems.append(
                _problem(full, where + ("file not found" if v.state[i] == MISSING else "not a file"))
            )
    return problems, conflicts


def _kept(col: pd.Series, keep: np.ndarray) -> pd.Series:
    """The kept rows of a column (the column itself, uncopied, when every row is kept)."""
    return col.reset_index(drop=True) if len(keep) == len(col) else col.iloc[keep].reset_index(drop=True)


def _candidates(base: str, c: _Columns, keep: np.ndarray, has_split: bool) -> pd.DataFrame:
    """The kept rows: full and relative path, label, group, split name and `_row` (1-based row of the table)."""
    rel = _kept(c.norm, keep)
    return pd.DataFrame(
        {
            "path": _joined(base, rel),
            "relpath": rel,
            "label": _kept(c.label, keep),
            "group": _kept(c.group, keep),
            "split": _kept(c.split_low, keep).map(SPLIT_NAMES).fillna("")
            if has_split
            else _kept(c.split, keep),
            "_row": keep + 1,
        }
    )


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
    base, has_split = str(Path(root).resolve()), bool(cols["split"])
    c = _columns(df, cols)
    v = _verdicts(base, c, need_label, has_split)
    problems, conflicts = _row_problems(base, c, v, need_label, has_split)
    keep = np.flatnonzero(~v.bad)
    del v  # the per-row verdicts are done with before the candidates are built
    cands = _candidates(base, c, keep, has_split)
    for col, new in rename.items():
        cands[new] = _kept(df[col], keep)
    return cands, problems, rename, list(dict.fromkeys(conflicts))


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
    progress: OnStep | None = None,
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

    _run_chunked(fn, m, workers, progress=progress)
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
    progress: OnStep | None = None,
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
    items, bad, unread = _probe_frame(
        cands, validate, workers, source == "dicom", decode=decode, limit=limit, progress=progress
    )
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
    progress: OnStep | None = None,
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
        progress,
    )
