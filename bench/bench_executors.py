"""Executors: the Ray executor's overhead against the local one, and job slots (2 vs 1) on this machine.

Prints JSON lines. "executors_ray": local Ray cluster start-up, submit -> the job's first progress from its
own process (the supervisor's start and, for Ray, its connection included), and the total of a 2-fold job
on each executor (same machine, one after the other). "executors_slots": wall time of `--trials` tiny
training jobs with 2 slots (each job gets half the cores' threads) vs 1 slot. "executors_kfold_slots": one
`--k`-fold job with k slots (its folds run as k child jobs side by side) vs 1 slot (folds in sequence in one
job), and how far apart their out-of-fold probabilities are. Ray is reported as skipped when it is not
installed (pip install -r requirements-ray.txt -c constraints.txt).
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import Any

import common as c


def parser() -> argparse.ArgumentParser:
    """Options: data size, image size, epochs, trials."""
    p = c.base_parser(__doc__.splitlines()[0])
    p.add_argument("--n-per-class", type=int, default=16, help="generated images per class")
    p.add_argument("--img", type=int, default=32, help="image size in px")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--trials", type=int, default=4, help="jobs in the slots comparison")
    p.add_argument("--k", type=int, default=2, help="folds in the k-fold slots comparison")
    p.add_argument("--parts", default="ray,slots,kfold", help="comma list of ray,slots,kfold")
    p.add_argument(
        "--kfold-threads",
        type=int,
        default=0,
        help="torch threads of every k-fold job (0: each slot's share of the cores, all of them with 1 slot)",
    )
    p.add_argument("--no-ray", action="store_true", help="skip the Ray part")
    return p


def job_params(root: Path, args: argparse.Namespace, k_folds: int, seed: int = 42) -> dict[str, Any]:
    """A train job's params: from scratch, `--epochs` at `--img` px on the generated data."""
    from core.base.config import RunConfig, SourceConfig, to_dict

    cfg = RunConfig(
        source=SourceConfig(kind="csv", csv_path=str(root / "labels.csv"), group_col="patient_id")
    )
    cfg.data.img_size, cfg.data.batch_size, cfg.data.aug.enabled = args.img, 16, False
    cfg.data.split.k_folds = k_folds
    cfg.train.pretrained, cfg.train.freeze_epochs, cfg.train.epochs, cfg.train.seed = (
        False,
        0,
        args.epochs,
        seed,
    )
    return {"config": to_dict(cfg)}


def run_batch(params: list[dict[str, Any]], executor: Any) -> dict[str, Any]:
    """Submit jobs at once; wall time until all ended and each job's submit -> first progress of its own;
    the finished jobs' run folders."""
    from core.runs import jobs, worker
    from core.runs.progress import ProgressRecord

    store = jobs.JobStore()
    t0 = time.perf_counter()
    submitted = [jobs.submit_and_start("train", p, store=store, executor=executor) for p in params]
    first: dict[str, float] = {}
    while any(store.get(j.id).active for j in submitted):
        for j in submitted:
            if j.id not in first and ProgressRecord.read(j.run_dir).message == worker.STARTING:
                first[j.id] = time.perf_counter() - t0
        time.sleep(0.05)
    total = time.perf_counter() - t0
    deadline = time.time() + 60
    while store.live_workers() and time.time() < deadline:  # supervisors gone before the home is removed
        time.sleep(0.2)
    ended = [store.get(j.id) for j in submitted]
    bad = [f"{j.status}: {j.error}" for j in ended if j.status != "done"]
    if bad:
        raise RuntimeError("; ".join(bad))
    return {
        "total_s": total,
        "first_progress_s": [first.get(j.id) for j in submitted],
        "run_dirs": [j.run_dir for j in ended],
    }


def ray_part(data: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Cluster start, then the same 2-fold job on the Ray executor and on the local executor."""
    from core.runs import executors

    try:
        import ray
    except ImportError:
        return {"benchmark": "executors_ray", "skipped": "ray is not installed"}
    t0 = time.perf_counter()
    ray.init(
        num_cpus=os.cpu_count(),
        include_dashboard=False,
        object_store_memory=100 * 1024**2,
        log_to_driver=False,
    )
    start = time.perf_counter() - t0
    try:
        params = [job_params(data, args, k_folds=2)]
        with c.app_home("xrt-bench-ray-"):
            on_ray = run_batch(params, executors.RayExecutor(ray.get_runtime_context().gcs_address))
        with c.app_home("xrt-bench-local-"):
            local = run_batch(params, executors.LocalExecutor(1))
    finally:
        ray.shutdown()
    return {
        "benchmark": "executors_ray",
        "ray_cluster_start_s": start,
        "first_progress_s": {"local": local["first_progress_s"][0], "ray": on_ray["first_progress_s"][0]},
        "kfold2_total_s": {"local": local["total_s"], "ray": on_ray["total_s"]},
        "ray_overhead_s": on_ray["total_s"] - local["total_s"],
        "ray_total_ratio": c.ratio(on_ray["total_s"], local["total_s"]),
    }


def slots_part(data: Path, args: argparse.Namespace) -> dict[str, Any]:
    """`--trials` single-split jobs (different seeds) with 1 slot, then with 2 slots."""
    from core.base import paths
    from core.runs import executors

    params = [job_params(data, args, k_folds=0, seed=s) for s in range(args.trials)]
    out: dict[str, Any] = {}
    for slots in (1, 2):
        with c.app_home(f"xrt-bench-slots{slots}-"):
            out[slots] = run_batch(params, executors.LocalExecutor(slots))
    return {
        "benchmark": "executors_slots",
        "trials": args.trials,
        "cores": paths.cpu_cores(),
        "total_s": {"1_slot": out[1]["total_s"], "2_slots": out[2]["total_s"]},
        "threads_per_job": {"1_slot": paths.cpu_cores(), "2_slots": max(1, paths.cpu_cores() // 2)},
        "throughput_ratio_2_vs_1": c.ratio(out[1]["total_s"], out[2]["total_s"]),
    }


def kfold_part(data: Path, args: argparse.Namespace) -> dict[str, Any]:
    """One `--k`-fold job with 1 slot (folds in sequence in the job) and with k slots (folds as child jobs)."""
    import pandas as pd

    from core.runs import executors, rundir

    params = [job_params(data, args, k_folds=args.k)]
    out, oof = {}, {}
    if args.kfold_threads:
        os.environ["XRT_TORCH_THREADS"] = str(args.kfold_threads)
    for slots in (1, args.k):
        os.environ["XRT_MAX_JOBS"] = str(slots)  # the k-fold job splits into fold jobs from max_jobs() > 1
        try:
            with c.app_home(f"xrt-bench-kfold{slots}-"):
                out[slots] = run_batch(params, executors.LocalExecutor(slots))
                table = pd.read_csv(rundir.RunFolder(out[slots]["run_dirs"][0]).predictions("oof"))
                oof[slots] = table.sort_values("path").filter(like="prob_").to_numpy()
        finally:
            os.environ.pop("XRT_MAX_JOBS", None)
    os.environ.pop("XRT_TORCH_THREADS", None)
    share = args.kfold_threads or max(1, executors.cpu_cores() // args.k)
    return {
        "benchmark": "executors_kfold_slots",
        "k": args.k,
        "cores": executors.cpu_cores(),
        "total_s": {"1_slot": out[1]["total_s"], "k_slots": out[args.k]["total_s"]},
        "threads_per_job": {"1_slot": args.kfold_threads or executors.cpu_cores(), "k_slots": share},
        "speedup_k_slots_vs_1": c.ratio(out[1]["total_s"], out[args.k]["total_s"]),
        "oof_prob_max_abs_diff": float(abs(oof[1] - oof[args.k]).max()),
    }


def main() -> None:
    """Run both parts and print their JSON lines."""
    args = parser().parse_args()
    if args.smoke:
        args.n_per_class, args.trials = 8, 2
    c.setup(args, torch_needed=False)
    for name in ("XRT_TORCH_THREADS", "XRT_MAX_JOBS", "XRT_RAY_ADDRESS"):
        os.environ.pop(name, None)
    from tests.synth import blob_dataset

    with c.app_home("xrt-bench-data-") as home:
        data = blob_dataset(home / "blobs", n_per_class=args.n_per_class, size=args.img)
        size = {"n_images": 2 * args.n_per_class, "img": args.img, "epochs": args.epochs}
        parts = set(args.parts.split(",")) - ({"ray"} if args.no_ray else set())
        if "ray" in parts:
            c.emit({**ray_part(data, args), **size, "machine": c.machine()})
        if "slots" in parts:
            c.emit({**slots_part(data, args), **size, "machine": c.machine()})
        if "kfold" in parts:
            c.emit({**kfold_part(data, args), **size, "machine": c.machine()})


if __name__ == "__main__":
    main()
