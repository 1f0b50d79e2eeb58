"""Training throughput and accuracy: the app's training path vs a plain fastai script, same data and settings.

Cases: "small" = real 224 px chest X-ray JPEGs; "large" = generated 2000x2000 16-bit PNGs (the plain script
decodes every file every epoch; the app decodes each once into its cache). Prints one JSON line.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import common as c

TARGETS = {"small": 1.0, "large": 1.5}


def parse() -> Any:
    """Command-line options (sizes default to the CPU suite's)."""
    p = c.base_parser(__doc__.splitlines()[0])
    p.add_argument("--cases", default="small,large", help="comma list of small,large")
    p.add_argument("--n-small", type=int, default=200, help="real chest X-rays used (max 600)")
    p.add_argument("--large-n", type=int, default=40, help="generated large images used")
    p.add_argument(
        "--large-pool", type=int, default=60, help="size of the generated set (shared with bench_kfold)"
    )
    p.add_argument("--large-size", type=int, default=2000, help="side of the generated images")
    p.add_argument("--img-size", type=int, default=64)
    p.add_argument("--bs", type=int, default=32)
    p.add_argument("--epochs", type=int, default=2, help="epochs for the small case")
    p.add_argument("--large-epochs", type=int, default=4, help="epochs for the large case")
    p.add_argument("--arch", default="resnet18")
    p.add_argument(
        "--repeats", type=int, default=4, help="small case: runs per side, interleaved app/plain/plain/app"
    )
    p.add_argument("--large-repeats", type=int, default=1, help="large case: runs per side")
    p.add_argument("--app-workers", type=int, default=0, help="the app's DataLoader workers (DataConfig)")
    p.add_argument("--plain-workers", type=int, default=-1, help="-1: fastai's default")
    p.add_argument("--no-loader", action="store_true", help="skip the data-path-only measurement")
    p.add_argument("--plain-mode", default="fit_one_cycle", choices=["fit_one_cycle", "fine_tune"])
    args = p.parse_args()
    if args.smoke:
        args.n_small, args.large_n, args.large_pool, args.large_size, args.img_size, args.bs = (
            16,
            8,
            8,
            128,
            32,
            8,
        )
        args.epochs, args.large_epochs, args.plain_workers, args.repeats = 1, 1, 0, 1
    return args


def spec_for(args: Any, epochs: int) -> c.TrainSpec:
    """The shared settings of one case."""
    return c.TrainSpec(
        arch=args.arch,
        img_size=args.img_size,
        bs=args.bs,
        epochs=epochs,
        seed=args.seed,
        app_workers=args.app_workers,
        plain_workers=args.plain_workers,
        plain_mode=args.plain_mode,
    )


def case_items(name: str, args: Any) -> tuple[Any, float, str]:
    """(items with a patient-grouped train/valid split, seconds the app's scan took, description)."""
    t0 = time.perf_counter()
    if name == "small":
        items = c.chest_items(args.n_small, args.seed)
        what = f"{len(items)} real chest X-ray JPEGs, 224x224 RGB"
    else:
        csv = c.large_csv(args.large_n, args.large_pool, args.large_size, args.seed)
        t0 = time.perf_counter()
        items = c.large_items(csv)
        what = f"{len(items)} generated {args.large_size}x{args.large_size} 16-bit grey PNGs (12-bit values)"
    scan_s = time.perf_counter() - t0
    return c.split_items(items, 0.2, args.seed), scan_s, what


def run_case(name: str, args: Any, home: Path) -> dict[str, Any]:
    """Both sides on one data set, interleaved; medians and the throughput ratio."""
    items, scan_s, what = case_items(name, args)
    spec = spec_for(args, args.epochs if name == "small" else args.large_epochs)
    layout = c.folder_layout(items, home / f"plain-{name}")
    runs: dict[str, list[dict[str, Any]]] = {"app": [], "plain": []}
    order = c.abba(max(1, args.repeats if name == "small" else args.large_repeats))
    for i, side in enumerate(order):
        c.log(f"{name}: run {i + 1}/{len(order)}: {side}")
        if side == "app":
            c.fresh_cache(home, f"{name}{i}")  # cold cache: the app's first-epoch decoding is counted
            runs["app"].append(c.app_fit(items, spec, home / "runs" / f"{name}{i}"))
        else:
            runs["plain"].append(c.plain_script(layout, spec))
        c.log(f"{name}: {side}: {runs[side][-1]['seconds']:.1f}s acc={runs[side][-1]['accuracy']:.3f}")
    out = c.summarize(runs, spec.epochs)
    if not args.no_loader:  # small: from an empty cache; large: warm only (reusing the last app run's cache)
        if name == "small":
            c.fresh_cache(home, f"{name}-loader")
        out["loader_only"] = c.loader_only(items, layout, spec, cold=name == "small")
        c.log(f"{name}: loader only {out['loader_only']}")
    out.update(
        data=what,
        spec=c.spec_dict(spec),
        app_scan_validate_s=scan_s,
        target_ratio=TARGETS[name],
        target_met=out["ratio_app_vs_plain"] >= TARGETS[name],
    )
    return out


def main() -> None:
    """Run the chosen cases and print the JSON line."""
    args = parse()
    c.setup(args)
    c.warmup()
    cases = [s.strip() for s in args.cases.split(",") if s.strip()]
    result: dict[str, Any] = {"benchmark": "train", "smoke": args.smoke, "machine": c.machine(), "cases": {}}
    with c.app_home() as home:
        for name in cases:
            result["cases"][name] = run_case(name, args, home)
    result["machine_after"] = {"load_avg": c.machine()["load_avg"]}
    result["notes"] = NOTES
    c.emit(result)


NOTES = [
    "app: core.train.fit.fit_one, pretrained=False -> fit_one_cycle(epochs) of the whole net, cold decode cache per run",
    "plain: ImageDataLoaders.from_folder + vision_learner(pretrained=False) + fit_one_cycle(epochs), same split",
    "both: same augmentation values (flip, rotate 10, zoom 1.1, warp 0.1, lighting 0.2, p 0.75, zero padding), "
    "squish resize, ImageNet normalisation; the app applies brightness and contrast as two transforms",
    "both keep the last epoch (the app's default since the parity ablation; bench_parity.py)",
    "plain script on 16-bit PNG: PIL converts I;16 to RGB by clamping at 255 (70-93 % white), so it cannot learn",
    "images/s = training images x epochs / end-to-end seconds (DataLoaders, fit with validation, predictions)",
    "loader_only = one pass over the training DataLoader without a model (app: cold decode cache; warm cache with "
    "an empty item store = epoch 1 of a rerun; stored = the same loader's second pass, epoch 2 onwards)",
]


if __name__ == "__main__":
    main()
