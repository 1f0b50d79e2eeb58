"""Ingest: files/s to scan and validate an image folder and a DICOM folder, and peak memory against size.

Each folder is scanned at 1x and 4x its size (hard-linked copies of real files); the peak resident memory
(VmHWM, reset before each scan) must grow only by about the items table, not by the images.
The CSV case checks the rows of a large table (1 M rows by default, hard links to tiny PNGs): the app's
row checks against the per-row implementation they replaced (which resolved the root for every row),
measured on the same rows in this run, then a whole `from_df` (row checks + each file's header).
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import common as c

BOUNDED_SHARE = 0.25  # bounded: peak growth 1x -> 4x < 25 % of keeping every added image decoded (8 bit)


def parse() -> Any:
    """Command-line options."""
    p = c.base_parser(__doc__.splitlines()[0])
    p.add_argument("--n-images", type=int, default=600, help="image files at 1x (real chest X-rays, reused)")
    p.add_argument("--n-dicom", type=int, default=60, help="DICOM files at 1x (the real 1024x1024 DX)")
    p.add_argument("--n-j2k", type=int, default=6, help="JPEG 2000 DICOM files (1955x1841 CR)")
    p.add_argument("--scale", type=int, default=4, help="the larger folder is this many times the 1x one")
    p.add_argument("--workers", type=int, default=4, help="the scanner's validation threads")
    p.add_argument("--csv-rows", type=int, default=1_000_000, help="rows of the large CSV (row checks)")
    p.add_argument(
        "--csv-ref-rows", type=int, default=50_000, help="rows timed with the old per-row checks too"
    )
    p.add_argument(
        "--csv-full-rows", type=int, default=100_000, help="rows of the whole from_df (headers read)"
    )
    args = p.parse_args()
    if args.smoke:
        args.n_images, args.n_dicom, args.n_j2k, args.scale = 12, 4, 1, 2
        args.csv_rows, args.csv_ref_rows, args.csv_full_rows = 3000, 1000, 500
    return args


# ---------------------------------------------------------------- memory


def _status(key: str) -> int:
    """A /proc/self/status value in bytes (0 where /proc is missing)."""
    try:
        text = Path("/proc/self/status").read_text()
    except OSError:
        return 0
    m = re.search(rf"{key}:\s+(\d+)", text)
    return int(m.group(1)) * 1024 if m else 0


def _reset_peak() -> bool:
    """Reset the peak-RSS counter (Linux clear_refs); False when not possible."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def measured(fn: Callable[[], Any]) -> tuple[Any, float, int]:
    """(result, seconds, peak RSS growth in bytes during fn)."""
    import gc

    gc.collect()
    ok = _reset_peak()
    base = _status("VmRSS")
    out, seconds = c.timed(fn)
    return out, seconds, (_status("VmHWM") - base) if ok else -1


# ---------------------------------------------------------------- folders


def linked_folder(dest: Path, sources: list[tuple[Path, str]], n: int) -> Path:
    """dest/<class>/fNNNNN<ext>: n hard links cycling over (file, class) sources (copies when links fail)."""
    shutil.rmtree(dest, ignore_errors=True)
    for i in range(n):
        src, label = sources[i % len(sources)]
        target = dest / label / f"f{i:05d}{src.suffix}"
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(src, target)
        except OSError:
            shutil.copyfile(src, target)
    return dest


def local_copies(files: list[tuple[Path, str]], dest: Path) -> list[tuple[Path, str]]:
    """Copies of the source files in our temp folder (hard links need one file system and our own files)."""
    dest.mkdir(parents=True, exist_ok=True)
    out = []
    for i, (src, label) in enumerate(files):
        target = dest / f"{i:05d}{src.suffix}"
        shutil.copyfile(src, target)
        out.append((target, label))
    return out


def chest_files(n: int) -> list[tuple[Path, str]]:
    """(file, class) of up to n real chest X-rays."""
    import pandas as pd

    table = pd.read_csv(c.require(c.CHEST, "chest_xray_224") / "labels.csv").head(n)
    return [(c.CHEST / p, str(lab)) for p, lab in zip(table["path"], table["label"])]


# ---------------------------------------------------------------- scans


def scan_case(
    name: str, scan: Callable[[Path], Any], make: Callable[[int], Path], n: int, scale: int
) -> dict[str, Any]:
    """files/s at 1x and scale x, peak memory growth, and the items table's own size."""
    rows = {}
    warm = make(n * scale)
    scan(warm)  # first-call costs and the allocator's working set are not the scan's: growth = retention
    shutil.rmtree(warm, ignore_errors=True)
    for size in (n, n * scale):
        root = make(size)
        ds, seconds, peak = measured(lambda root=root: scan(root))
        items_bytes = int(ds.items.memory_usage(deep=True).sum() + ds.problems.memory_usage(deep=True).sum())
        pixels = int((ds.items["width"] * ds.items["height"]).sum())
        rows[size] = {
            "files": size,
            "items": len(ds.items),
            "problems": len(ds.problems),
            "seconds": seconds,
            "files_per_s": c.ratio(size, seconds),
            "peak_rss_growth_mb": peak / 2**20,
            "items_table_mb": items_bytes / 2**20,
            "_peak": peak,
            "_items": items_bytes,
            "_pix": pixels,
        }
        shutil.rmtree(root, ignore_errors=True)
        c.log(f"{name} {size} files: {seconds:.2f}s, peak +{peak / 2**20:.1f} MB")
    small, big = rows[n], rows[n * scale]
    extra = c.ratio(big["_peak"] - small["_peak"], big["files"] - small["files"])
    table = c.ratio(big["_items"] - small["_items"], big["files"] - small["files"])
    decoded = big["_pix"] - small["_pix"]  # bytes to keep every added image decoded as 8-bit grey
    growth = big["_peak"] - small["_peak"]
    bounded = small["_peak"] >= 0 and big["_peak"] >= 0 and growth < BOUNDED_SHARE * decoded
    for r in rows.values():
        r.pop("_peak"), r.pop("_items"), r.pop("_pix")
    return {
        "runs": list(rows.values()),
        "extra_peak_bytes_per_file": extra,
        "items_table_bytes_per_file": table,
        "growth_vs_keeping_images_pct": 100 * c.ratio(growth, decoded),
        "memory_bounded": bool(bounded),
    }


# ---------------------------------------------------------------- large CSV

LINKS_PER_FILE = 50_000  # ext4 allows 65,000 hard links to one file


def csv_tree(dest: Path, n: int) -> tuple[Any, Path]:
    """dest/d<k>/<i>.png (1000 per folder, hard links to tiny PNGs) and the table listing them."""
    import pandas as pd
    from PIL import Image

    (dest / "src").mkdir(parents=True, exist_ok=True)
    rel = []
    for i in range(n):
        src = dest / "src" / f"{i // LINKS_PER_FILE}.png"
        if i % LINKS_PER_FILE == 0:
            Image.new("L", (8, 8), i % 255).save(src)
        if i % 1000 == 0:
            (dest / f"d{i // 1000}").mkdir(exist_ok=True)
        rel.append(f"d{i // 1000}/{i}.png")
        os.link(src, dest / rel[-1])
    table = pd.DataFrame(
        {
            "path": rel,
            "label": ["a", "b"] * (n // 2) + ["a"] * (n % 2),
            "patient": [f"p{i // 3}" for i in range(n)],
        }
    )
    return table, dest


def per_row_reference(df: Any, root: Path, cols: dict[str, str]) -> tuple[list[Any], list[dict]]:
    """The row checks as they were: one safe_join (root and path resolved) + resolve + is_file per row."""
    from core.sources import SPLIT_NAMES, UnsafePathError, _cell, _display, _problem, safe_join

    seen, cands, problems = {}, [], []
    for n, row in enumerate(df.to_dict("records"), start=1):
        raw = _cell(row[cols["path"]])
        try:
            path = safe_join(root, raw)
        except UnsafePathError as e:
            problems.append(_problem(raw, f"row {n}: {e}"))
            continue
        key = os.path.normcase(str(path.resolve()))
        if key in seen:
            problems.append(_problem(path, f"row {n}: duplicate of row {seen[key]}"))
            continue
        seen[key] = n
        label = _cell(row[cols["label"]])
        if not path.is_file():
            problems.append(_problem(path, f"row {n}: file not found"))
            continue
        cands.append(
            (
                str(path),
                _display(path, root),
                label,
                _cell(row[cols["group"]]),
                SPLIT_NAMES.get("", ""),
                {c: row[c] for c in df.columns if c not in cols.values()},
            )
        )
    return cands, problems


def _csv_child(what: str, csv_path: str, root: str, rows: int, workers: int, conn: Any) -> None:
    """In a fresh process: read the table, then time and measure the row checks or a whole from_df."""
    from core.sources import _table_cands, from_df, read_table

    table = read_table(csv_path).head(rows)
    cols = {"path": "path", "label": "label", "group": "patient", "split": ""}
    if what == "rows":
        (out, *_), seconds, peak = measured(lambda: _table_cands(table, Path(root), cols))
    else:
        ds, seconds, peak = measured(
            lambda: from_df(table, root, group_col="patient", validate=False, workers=workers)
        )
        out = ds.items
    conn.send(
        {
            "seconds": seconds,
            "peak_mb": peak / 2**20,
            "n": len(out),
            "mb": out.memory_usage(deep=True).sum() / 2**20,
            "table_mb": table.memory_usage(deep=True).sum() / 2**20,
        }
    )
    conn.close()


def measured_apart(what: str, csv_path: Path, root: Path, rows: int, workers: int) -> dict[str, Any]:
    """_csv_child in a spawned interpreter: a fresh heap, so memory freed by earlier cases cannot hide its peak."""
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    recv, send = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_csv_child, args=(what, str(csv_path), str(root), rows, workers, send))
    proc.start()
    send.close()
    try:
        result = recv.recv()  # EOFError when the child died
    finally:
        proc.join()
    return result


def csv_case(tmp: Path, args: Any) -> dict[str, Any]:
    """Row checks old vs new on the same rows, new at the full size, and a whole from_df with its memory."""
    from core.sources import _table_cands

    table, root = csv_tree(tmp / "csv", args.csv_rows)
    csv_path = root / "labels.csv"
    table.to_csv(csv_path, index=False)
    cols = {"path": "path", "label": "label", "group": "patient", "split": ""}
    ref = table.head(args.csv_ref_rows)
    (old, old_bad), old_s = c.timed(lambda: per_row_reference(ref, root.resolve(), cols))
    (new, new_bad, *_), new_s = c.timed(lambda: _table_cands(ref, root, cols))
    same = [x[1] for x in old] == new["relpath"].tolist() and len(old_bad) == len(new_bad) == 0
    c.log(f"csv row checks {len(ref)} rows: per-row {old_s:.2f}s, app {new_s:.2f}s")
    table = ref = old = new = None  # freed before the measured children start
    big = measured_apart("rows", csv_path, root, args.csv_rows, args.workers)
    c.log(
        f"csv row checks {big['n']} rows: {big['seconds']:.2f}s, peak +{big['peak_mb']:.0f} MB "
        f"(table {big['table_mb']:.0f} MB, candidates {big['mb']:.0f} MB)"
    )
    full = measured_apart("from_df", csv_path, root, args.csv_full_rows, args.workers)
    c.log(
        f"csv from_df {full['n']} rows: {full['seconds']:.2f}s, peak +{full['peak_mb']:.0f} MB "
        f"(table {full['table_mb']:.0f} MB, items {full['mb']:.0f} MB)"
    )
    return {
        "rows": args.csv_rows,
        "ref_rows": args.csv_ref_rows,
        "same_result": bool(same),
        "row_checks_per_row_reference_ms_per_row": 1e3 * c.ratio(old_s, args.csv_ref_rows),
        "row_checks_app_ms_per_row": 1e3 * c.ratio(new_s, args.csv_ref_rows),
        "row_checks_speedup": c.ratio(old_s, new_s),
        "row_checks_full_size_s": big["seconds"],
        "row_checks_full_size_ms_per_row": 1e3 * c.ratio(big["seconds"], big["n"]),
        "row_checks_full_size_peak_rss_growth_mb": big["peak_mb"],
        "table_mb": big["table_mb"],
        "candidates_mb": big["mb"],
        "row_checks_peak_vs_table": c.ratio(big["peak_mb"], big["table_mb"]),
        "from_df_rows": full["n"],
        "from_df_s": full["seconds"],
        "from_df_ms_per_row": 1e3 * c.ratio(full["seconds"], full["n"]),
        "from_df_peak_rss_growth_mb": full["peak_mb"],
        "from_df_items_mb": full["mb"],
        "from_df_peak_vs_items": c.ratio(full["peak_mb"], full["mb"]),
    }


def main() -> None:
    """Scan an image folder (validated and header-only) and DICOM folders; print the JSON line."""
    from core.sources import scan_dicom_folder, scan_folder

    args = parse()
    c.setup(args, torch_needed=False)
    tmp = Path(tempfile.mkdtemp(prefix="xrt-bench-ingest-"))
    try:
        jpgs = local_copies(chest_files(min(args.n_images, 600)), tmp / "src-jpg")
        dx = local_copies(
            [(c.require(c.DICOM_SAMPLES, "dicom_samples") / "dx_chest_nih_mono2.dcm", "a")], tmp / "src-dx"
        )
        j2k = local_copies([(c.DICOM_SAMPLES / "cr_chest_mono1_j2k.dcm", "a")], tmp / "src-j2k")
        dcm_sources = [(dx[0][0], "a"), (dx[0][0], "b")]
        cases = {
            "images_validated": scan_case(
                "images",
                lambda r: scan_folder(r, workers=args.workers),
                lambda k: linked_folder(tmp / f"img{k}", jpgs, k),
                args.n_images,
                args.scale,
            ),
            "images_headers_only": scan_case(
                "images(headers)",
                lambda r: scan_folder(r, validate=False, workers=args.workers),
                lambda k: linked_folder(tmp / f"imh{k}", jpgs, k),
                args.n_images,
                args.scale,
            ),
            "dicom_dx_1024": scan_case(
                "dicom",
                lambda r: scan_dicom_folder(r, workers=args.workers),
                lambda k: linked_folder(tmp / f"dcm{k}", dcm_sources, k),
                args.n_dicom,
                args.scale,
            ),
        }
        root = linked_folder(tmp / "j2k", [(j2k[0][0], "a"), (j2k[0][0], "b")], args.n_j2k)
        ds, seconds, peak = measured(lambda: scan_dicom_folder(root, workers=args.workers))
        cases["dicom_j2k_1955x1841"] = {
            "files": args.n_j2k,
            "items": len(ds.items),
            "seconds": seconds,
            "files_per_s": c.ratio(args.n_j2k, seconds),
            "peak_rss_growth_mb": peak / 2**20,
        }
        cases["csv_large"] = csv_case(tmp, args)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    c.emit(
        {
            "benchmark": "ingest",
            "smoke": args.smoke,
            "machine": c.machine(),
            "workers": args.workers,
            "cases": cases,
            "memory_bounded": all(v.get("memory_bounded", True) for v in cases.values()),
            "notes": [
                "validated = every file fully decoded (truncation caught); headers only = validate=False",
                "memory: peak RSS growth from 1x to 4x files (after a warm-up scan); bounded = growth < 25 % of keeping every "
                "added image decoded (8-bit grey) would take; the rest is the decoders' working set",
                "csv_large: row checks = paths, links, duplicates, labels, splits, existence (no file opened); "
                "speedup = the replaced per-row checks / the app's on the same rows; from_df also reads each "
                "file's header (validate=False); memory = peak RSS growth vs the table's / items' own size",
            ],
        }
    )


if __name__ == "__main__":
    main()
