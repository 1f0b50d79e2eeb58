"""Ingest: files/s to scan and validate an image folder and a DICOM folder, and peak memory against size.

Each folder is scanned at 1x and 4x its size (hard-linked copies of real files); the peak resident memory
(VmHWM, reset before each scan) must grow only by about the items table, not by the images.
The CSV case loads a large table (hard links to tiny PNGs; 1 M rows for the README numbers) as the CLI's
`scan` and the explorer do (`load_source`: row checks, then at most XRT_PROBE_MAX files opened and decoded)
in a fresh process: seconds and peak RSS growth against the items frame. The old load (row checks that
resolved the root for every row, then every file opened and decoded) is measured in the same run on a
subset and extrapolated linearly.
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
    p.add_argument("--csv-rows", type=int, default=200_000, help="rows of the large CSV (README: 1000000)")
    p.add_argument(
        "--csv-ref-rows", type=int, default=10_000, help="rows loaded the old way too (README: 50000)"
    )
    p.add_argument("--csv-only", action="store_true", help="only the large CSV case (no folder scans)")
    p.add_argument(
        "--probe-max", type=int, default=0, help="XRT_PROBE_MAX for the load (0 = the app's default)"
    )
    args = p.parse_args()
    if args.smoke:
        args.n_images, args.n_dicom, args.n_j2k, args.scale = 12, 4, 1, 2
        args.csv_rows, args.csv_ref_rows, args.probe_max = 3000, 1000, 500
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
CSV_COLS = {"path": "path", "label": "label", "group": "patient", "split": ""}


def csv_tree(dest: Path, n: int) -> tuple[Any, Path]:
    """dest/d<k>/<i>.png (1000 per folder, hard links to tiny non-blank PNGs) and the table listing them."""
    import numpy as np
    import pandas as pd
    from PIL import Image

    (dest / "src").mkdir(parents=True, exist_ok=True)
    rel = []
    for i in range(n):
        src = dest / "src" / f"{i // LINKS_PER_FILE}.png"
        if i % LINKS_PER_FILE == 0:
            ramp = np.add.outer(np.arange(8), np.arange(8)) * 8 + i // LINKS_PER_FILE
            Image.fromarray(ramp.astype(np.uint8)).save(src)
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
    from core.data.items import SPLIT_NAMES, UnsafePathError, _display, _problem, safe_join
    from core.data.tables import _cell

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


def _load_child(csv_path: str, warm_csv: str, root: str, bound: int, conn: Any) -> None:
    """In a fresh process: load the table as the CLI's scan does and measure it (after a warm-up load)."""
    if bound:
        os.environ["XRT_PROBE_MAX"] = str(bound)
    from core.base.config import SourceConfig
    from core.data.items import probe_max
    from core.data.sources import load_source
    from core.data.tables import read_table

    def cfg(path: str) -> SourceConfig:
        """The CSV source as the CLI builds it."""
        return SourceConfig(kind="csv", csv_path=path, root=root, group_col="patient")

    load_source(cfg(warm_csv))  # imports and first-call costs are not the load's
    ds, seconds, peak = measured(lambda: load_source(cfg(csv_path)))
    out = {
        "seconds": seconds,
        "peak": peak,
        "items_bytes": int(ds.items.memory_usage(deep=True).sum()),
        "items": len(ds.items),
        "problems": len(ds.problems),
        "unread": ds.unread,
        "probe_max": probe_max(),
    }
    del ds
    out["table_bytes"] = int(read_table(csv_path).memory_usage(deep=True).sum())
    conn.send(out)
    conn.close()


def measured_apart(csv_path: Path, warm_csv: Path, root: Path, probe_max: int) -> dict[str, Any]:
    """_load_child in a spawned interpreter: a fresh heap, so memory freed by earlier cases cannot hide its peak."""
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    recv, send = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_load_child, args=(str(csv_path), str(warm_csv), str(root), probe_max, send))
    proc.start()
    send.close()
    try:
        result = recv.recv()  # EOFError when the child died
    finally:
        proc.join()
    return result


def old_load_reference(ref: Any, root: Path, workers: int) -> dict[str, Any]:
    """The old load on `ref` rows: its per-row checks, plus every file opened and decoded as the app's probe does.

    The opening cost is the app's from_df(every_file=True) minus its own row checks on the same rows; also
    with headers only (validate=False), the cheapest the old load could have been.
    """
    from core.data.tables import _table_cands, from_df

    (old, old_bad), old_rows_s = c.timed(lambda: per_row_reference(ref, root.resolve(), CSV_COLS))
    (new, new_bad, *_), new_rows_s = c.timed(lambda: _table_cands(ref, root, CSV_COLS))
    same = [x[1] for x in old] == new["relpath"].tolist() and len(old_bad) == len(new_bad) == 0
    every, every_s = c.timed(
        lambda: from_df(ref, root, group_col="patient", workers=workers, every_file=True)
    )
    _, headers_s = c.timed(
        lambda: from_df(ref, root, group_col="patient", validate=False, workers=workers, every_file=True)
    )
    open_s, head_s = max(every_s - new_rows_s, 0.0), max(headers_s - new_rows_s, 0.0)
    c.log(
        f"csv old load {len(ref)} rows: per-row checks {old_rows_s:.2f}s (app {new_rows_s:.2f}s), "
        f"opening every file {open_s:.2f}s (headers only {head_s:.2f}s)"
    )
    return {
        "rows": len(ref),
        "same_result": bool(same and len(every.items) == len(ref)),
        "row_checks_old_ms_per_row": 1e3 * c.ratio(old_rows_s, len(ref)),
        "row_checks_app_ms_per_row": 1e3 * c.ratio(new_rows_s, len(ref)),
        "row_checks_speedup": c.ratio(old_rows_s, new_rows_s),
        "open_ms_per_file": 1e3 * c.ratio(open_s, len(ref)),
        "headers_only_ms_per_file": 1e3 * c.ratio(head_s, len(ref)),
        "old_load_ms_per_row": 1e3 * c.ratio(old_rows_s + open_s, len(ref)),
        "old_load_headers_only_ms_per_row": 1e3 * c.ratio(old_rows_s + head_s, len(ref)),
    }


def csv_case(tmp: Path, args: Any) -> dict[str, Any]:
    """The load at full size in a fresh process against the old load on a subset, extrapolated linearly."""
    table, root = csv_tree(tmp / "csv", args.csv_rows)
    csv_path, warm_csv = root / "labels.csv", root / "warm.csv"
    table.to_csv(csv_path, index=False)
    table.head(10).to_csv(warm_csv, index=False)
    old = old_load_reference(table.head(args.csv_ref_rows), root, 4)  # load_source opens files in 4 threads
    table = None  # freed before the measured child starts
    new = measured_apart(csv_path, warm_csv, root, args.probe_max)
    old_s = old["old_load_ms_per_row"] * args.csv_rows / 1e3
    old_headers_s = old["old_load_headers_only_ms_per_row"] * args.csv_rows / 1e3
    mb = 2**20
    c.log(
        f"csv load {args.csv_rows} rows: {new['seconds']:.2f}s (old, extrapolated: {old_s:.0f}s), "
        f"peak +{new['peak'] / mb:.0f} MB, items {new['items_bytes'] / mb:.0f} MB, "
        f"table {new['table_bytes'] / mb:.0f} MB, {new['unread']} rows not opened"
    )
    return {
        "rows": args.csv_rows,
        "files": args.csv_rows,  # the run_all summary's files/s column: rows loaded per second
        "files_per_s": c.ratio(args.csv_rows, new["seconds"]),
        "probe_max": new["probe_max"],
        "files_opened": new["items"] + new["problems"] - new["unread"],  # every row here passes its checks
        "items": new["items"],
        "problems": new["problems"],
        "unread": new["unread"],
        "load_s": new["seconds"],
        "load_ms_per_row": 1e3 * c.ratio(new["seconds"], args.csv_rows),
        "load_peak_rss_growth_mb": new["peak"] / mb,
        "items_frame_mb": new["items_bytes"] / mb,
        "table_mb": new["table_bytes"] / mb,
        "peak_vs_items": c.ratio(new["peak"], new["items_bytes"]),
        "memory_within_2x_items": bool(0 <= new["peak"] <= 2 * new["items_bytes"]),
        "old_load_extrapolated_s": old_s,
        "speedup_end_to_end": c.ratio(old_s, new["seconds"]),
        "old_load_headers_only_extrapolated_s": old_headers_s,
        "speedup_vs_old_headers_only": c.ratio(old_headers_s, new["seconds"]),
        "old_reference": old,
    }


def folder_cases(tmp: Path, args: Any) -> dict[str, Any]:
    """Scan an image folder (validated and header-only) and DICOM folders at 1x and scale x."""
    from core.data.folders import scan_dicom_folder, scan_folder

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
    return cases


def main() -> None:
    """The folder scans (unless --csv-only) and the large CSV load; print the JSON line."""
    args = parse()
    c.setup(args, torch_needed=False)
    tmp = Path(tempfile.mkdtemp(prefix="xrt-bench-ingest-"))
    try:
        cases = {} if args.csv_only else folder_cases(tmp, args)
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
                "csv_large: load = load_source of a CSV source as the CLI's scan and the explorer use it (row checks: "
                "paths, links, duplicates, labels, splits, existence; then at most probe_max files opened and "
                "decoded, a seeded sample above it), in a fresh process after a warm-up load; memory = peak RSS "
                "growth vs the items frame (memory_usage(deep=True)); old = per-row checks + every file opened, "
                "timed on ref rows in the same run and extrapolated linearly (headers_only: the old checks + "
                "only each file's header read, a lower bound of the old load)",
            ],
        }
    )


if __name__ == "__main__":
    main()
