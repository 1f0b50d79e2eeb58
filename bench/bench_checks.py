"""Checks of the data: shortcut check + hashing time on N images against the scan of the same images.

The scan is the explorer's (every file validated by a full decode). The checks read the decode cache at the
training size: "cold" (empty cache: each file decoded again and stored), "warm" (entries exist, e.g. after a
training run or a scan that fills the cache), and "scan filling the cache" (the training run's validating
scan, load_source(decode=DecodeCache.warm)) followed by the checks. Target: warm checks within 2x of the scan.
"""

from __future__ import annotations

import time
from functools import partial
from typing import Any

import common as c


def parse() -> Any:
    """Command-line options."""
    p = c.base_parser(__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=10_000, help="generated images (16-bit PNG)")
    p.add_argument("--size", type=int, default=256, help="image side in pixels")
    p.add_argument("--cache-size", type=int, default=224, help="decode-cache size the checks read")
    p.add_argument("--workers", type=int, default=4, help="threads of the scan and of the feature reader")
    p.add_argument("--n-boot", type=int, default=1000)
    args = p.parse_args()
    if args.smoke:
        args.n, args.size, args.n_boot = 40, 64, 50
    return args


def checks_once(items, args) -> dict[str, float]:
    """Seconds of each part of the checks (features, shortcut, duplicates) and a few results."""
    from core.evaluation import checks

    t0 = time.perf_counter()
    feats = checks.image_features(items, size=args.cache_size, workers=args.workers)
    t1 = time.perf_counter()
    sc = checks.shortcut_check(items, feats, n_boot=args.n_boot)
    t2 = time.perf_counter()
    dups = checks.find_duplicates(items, feats)
    t3 = time.perf_counter()
    return {
        "seconds": t3 - t0,
        "features_s": t1 - t0,
        "shortcut_s": t2 - t1,
        "duplicates_s": t3 - t2,
        "auc": sc["auc"]["value"] if sc["auc"] else None,
        "flagged": sc["flagged"],
        "pairs": len(dups),
    }


def main() -> None:
    """Run the benchmark and print one JSON line."""
    args = parse()
    c.setup(args, torch_needed=False)
    from core.data.decode_cache import DecodeCache
    from core.data.tables import from_csv

    csv = c.large_csv(args.n, args.n, args.size, args.seed)
    with c.app_home("xrt-bench-checks-") as home:
        scan = partial(from_csv, csv, group_col="patient_id", workers=args.workers)
        ds, scan_s = c.timed(scan)
        c.log(f"scan of {len(ds.items)} images: {scan_s:.1f} s")
        c.fresh_cache(home, "cold")
        cold = checks_once(ds.items, args)
        c.log(f"checks, cold cache: {cold['seconds']:.1f} s")
        warm = checks_once(ds.items, args)
        c.log(f"checks, warm cache: {warm['seconds']:.1f} s")
        c.fresh_cache(home, "filled")
        fill = partial(DecodeCache().warm, size=args.cache_size)
        _, fill_s = c.timed(lambda: from_csv(csv, group_col="patient_id", workers=args.workers, decode=fill))
        after = checks_once(ds.items, args)
    c.emit(
        {
            "benchmark": "checks",
            "smoke": args.smoke,
            "machine": c.machine(),
            "n_images": len(ds.items),
            "image_size": args.size,
            "scan_s": scan_s,
            "cold": cold,
            "warm": warm,
            "scan_filling_cache_s": fill_s,
            "after_filling_scan": after,
            "ratio_warm_vs_scan": c.ratio(warm["seconds"], scan_s),
            "ratio_cold_vs_scan": c.ratio(cold["seconds"], scan_s),
            "ratio_filling_scan_plus_checks_vs_scan": c.ratio(fill_s + after["seconds"], scan_s),
            "within_2x": warm["seconds"] <= 2 * scan_s,
        }
    )


if __name__ == "__main__":
    main()
