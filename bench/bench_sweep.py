"""Sweep search modes on real data: grid vs random vs model-based (TPE), same trial budget, N seeds.

Every sweep runs through the app's own path (`core.train.experiments.start`: ordinary training jobs in worker
processes, one at a time, the next trial asked for when one ends) on PneumoniaMNIST (its own train / val /
test, small images), in a fresh app home, and is waited for without refreshing it (nobody watching). The
swept settings are lr (log range), weight decay (log range) and augmentation strength; grid mode tries a
seeded subset of a 4x4x3 grid of the same ranges with the same budget. The sweep seed changes per repeat;
the split and the training seed do not.

Prints one JSON line: per mode the best validation metric found (mean, sd, each seed), the held-out test
metric of that best trial, the epochs spent (pruned trials count the epochs they ran), the trials pruned and
the wall time.
"""

from __future__ import annotations

import os
import statistics
import time
from typing import Any

import bench_parity as parity
import common as c

MODES = ("grid", "random", "tpe")
AXES = {
    "grid": ["lr=1e-4:1e-1:log4", "wd=1e-5:1e-1:log4", "aug_strength=0:2:3"],
    "range": ["lr=1e-4:1e-1:log", "wd=1e-5:1e-1:log", "aug_strength=0:2"],
}
SIZES = {
    "default": dict(n=(600, 270, 468), img_size=28, bs=64, epochs=4, trials=16),
    "smoke": dict(n=(24, 12, 12), img_size=28, bs=8, epochs=1, trials=1),
}


def parse() -> Any:
    """Command-line options."""
    p = c.base_parser(__doc__.splitlines()[0])
    p.add_argument("--modes", default=",".join(MODES), help="comma list of grid,random,tpe")
    p.add_argument("--seeds", type=int, default=3, help="sweeps per mode (sweep seeds 0..N-1)")
    p.add_argument("--trials", type=int, default=0, help="trial budget per sweep (default 16)")
    p.add_argument("--epochs", type=int, default=0, help="epochs per trial (default 4)")
    p.add_argument(
        "--n-train", type=int, default=0, help="training images (default 600; the val/test sets whole)"
    )
    p.add_argument(
        "--pruner", default="none", choices=("none", "median", "asha"), help="the same for every mode"
    )
    p.add_argument("--metric", default="balanced_accuracy", help="validation metric that ranks trials")
    p.add_argument("--timeout-min", type=float, default=60.0, help="give up on one sweep after this long")
    return p.parse_args()


def sizes(args: Any) -> dict[str, Any]:
    """The run's sizes: smoke or default, with the options given."""
    size = dict(SIZES["smoke" if args.smoke else "default"])
    if args.trials:
        size["trials"] = args.trials
    if args.epochs:
        size["epochs"] = args.epochs
    if args.n_train:
        size["n"] = (args.n_train, *size["n"][1:])
    return size


def base_config(size: dict[str, Any], args: Any) -> Any:
    """The base settings every trial starts from: resnet18 from scratch on PneumoniaMNIST's own split."""
    from core.base.config import RunConfig, SourceConfig

    cfg = RunConfig(source=SourceConfig(kind="folder", root=str(parity.pneumonia_folders(size["n"]))))
    cfg.data.img_size, cfg.data.batch_size, cfg.data.split.method = size["img_size"], size["bs"], "folder"
    t = cfg.train
    t.arch, t.pretrained, t.epochs, t.lr, t.seed = "resnet18", False, size["epochs"], 3e-3, args.seed
    if args.threads:
        t.torch_threads = args.threads
    return cfg.validate()


def wait_quiet(exp_id: str, trials: int, timeout_s: float) -> dict[str, Any]:
    """Wait for a sweep to reach its trial count with none active, without refreshing it (nobody watches)."""
    from core.runs import jobs
    from core.train import experiments as ex

    store, deadline = jobs.JobStore(), time.time() + timeout_s
    while time.time() < deadline:
        record = ex.read(exp_id)
        now = {**record, **ex.status(record, store)}
        if len(record["trials"]) >= trials and now["status"] not in jobs.ACTIVE:
            return now
        time.sleep(1.0)
    raise TimeoutError(f"sweep {exp_id} not finished after {timeout_s:.0f} s")


def one_sweep(mode: str, seed: int, size: dict[str, Any], args: Any) -> dict[str, Any]:
    """One sweep in a fresh app home: best valid metric, its test metric, epochs spent, pruned, seconds."""
    from core.runs import jobs, rundir
    from core.train import experiments as ex

    with c.app_home("xrt-bench-sweep-"):
        os.environ["XRT_MAX_JOBS"] = "1"
        axes = AXES["grid" if mode == "grid" else "range"]
        spec = ex.SweepSpec(
            axes=axes, mode=mode, trials=size["trials"], metric=args.metric, seed=seed, pruner=args.pruner
        )
        t0 = time.perf_counter()
        record = ex.start(spec, base_config(size, args))
        done = wait_quiet(record["id"], size["trials"], args.timeout_min * 60)
        seconds = time.perf_counter() - t0
        table = ex.trial_table(done, jobs.JobStore(), n_boot=100)
        best = ex.best_trial(table, args.metric)
        runs = {t["job"]: t["run_dir"] for t in done["trials"]}
        epochs = sum(len(_history(r)) for r in runs.values())
        test = rundir.RunFolder(runs[best]).read_metrics().get("metrics", {}).get("test", {}) if best else {}
        return {
            "best_valid": float(table.loc[table["job"] == best, args.metric].iloc[0]) if best else None,
            "best_test": test.get(args.metric),
            "best_settings": next((t["settings"] for t in done["trials"] if t["job"] == best), None),
            "epochs": epochs,
            "pruned": int((table["status"] == "pruned").sum()),
            "failed": int(table["status"].isin(["failed", "interrupted"]).sum()),
            "seconds": round(seconds, 1),
        }


def _history(run_dir: str) -> Any:
    """A trial's history rows (none when it has no history)."""
    from core.runs import rundir

    try:
        return rundir.RunFolder(run_dir).read_history()
    except (OSError, ValueError):
        return []


def stats(values: list[Any]) -> dict[str, Any]:
    """Mean, sd and each value (None values left out of the mean)."""
    vals = [float(v) for v in values if v is not None]
    return {
        "mean": statistics.fmean(vals) if vals else None,
        "sd": statistics.stdev(vals) if len(vals) > 1 else None,
        "values": values,
    }


def main() -> None:
    """Run every mode over the seeds; print the JSON line."""
    args = parse()
    c.setup(args, torch_needed=False)
    size, modes = sizes(args), [m.strip() for m in args.modes.split(",") if m.strip()]
    seeds = 1 if args.smoke else args.seeds
    out: dict[str, Any] = {}
    for mode in modes:
        runs = []
        for seed in range(seeds):
            runs.append(one_sweep(mode, seed, size, args))
            c.log(f"{mode} seed {seed}: {runs[-1]}")
        out[mode] = {
            key: stats([r[key] for r in runs]) for key in ("best_valid", "best_test", "epochs", "seconds")
        }
        out[mode].update(pruned=sum(r["pruned"] for r in runs), failed=sum(r["failed"] for r in runs))
        out[mode]["best_settings"] = [r["best_settings"] for r in runs]
    c.emit(
        {
            "benchmark": "sweep",
            "smoke": args.smoke,
            "machine": c.machine(),
            "settings": {**size, "seeds": seeds, "pruner": args.pruner, "metric": args.metric, "axes": AXES},
            "modes": out,
        }
    )


if __name__ == "__main__":
    main()
