"""Prediction from files vs the same model on tensors decoded beforehand, on 1 core and on 2; single-image latency.

The model is a saved app model (weights + manifest, random weights: no download here; same cost as trained ones),
resnet18 at the size the app plans from scratch for each set (chest X-ray JPEGs 224 px -> 128 px, PneumoniaMNIST
28 px PNGs -> 32 px). Files side: `Predictor.predict_paths`, the path the CLI `predict` and the Predict page take
(on a CPU, threads that each decode a batch, resize as in validation, normalise and run the model on it
with their share of the torch threads; one thread: all in turn). Tensors side: `Predictor.probs`
on the same images decoded and batched beforehand (channels_last, ready in memory): the ceiling. The two alternate
A B A B in one process per (set, cores). "1 core": the process is pinned to one CPU (as `taskset -c 0`) with
1 torch thread; "2 cores": 2 CPUs (`taskset -c 0,1`) and 2 threads.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import common as c

TARGET_BATCH = 0.85  # files >= 0.85x the model on decoded tensors (issue 27)
SETS = "chest:128,pneumonia:32"


def parse() -> Any:
    """Command-line options."""
    p = c.base_parser(__doc__.splitlines()[0])
    p.add_argument("--arch", default="resnet18")
    p.add_argument("--sets", default=SETS, help="comma list of data:img_size (data: chest, pneumonia)")
    p.add_argument("--cores", default="1,2", help="comma list of core counts (pinned CPUs = torch threads)")
    p.add_argument(
        "--workers",
        default="auto",
        help="comma list of loading threads to compare (each decodes a batch and runs the model on it; auto: the "
        "app's choice)",
    )
    p.add_argument("--n", type=int, default=600, help="images per throughput pass")
    p.add_argument("--bs", type=int, default=32)
    p.add_argument("--singles", type=int, default=8, help="single-image predictions timed")
    p.add_argument("--rounds", type=int, default=2, help="files/tensors passes, interleaved A B A B")
    p.add_argument("--child", default="", help="internal: run one (set, cores) measurement, given as JSON")
    args = p.parse_args()
    if args.smoke:
        args.sets, args.n, args.bs, args.singles, args.rounds = "chest:64,pneumonia:32", 16, 4, 2, 1
    return args


def save_model(arch: str, img_size: int, out: Path) -> Path:
    """A randomly initialised app model on disk (core.models.savedmodel format)."""
    from core.data.loaders import IMAGENET_STATS
    from core.models import savedmodel
    from core.models.archs import create_model

    model = create_model(arch, 2)
    manifest = savedmodel.Manifest(
        arch=arch,
        classes=["NORMAL", "PNEUMONIA"],
        img_size=img_size,
        mean=list(IMAGENET_STATS[0]),
        std=list(IMAGENET_STATS[1]),
    )
    savedmodel.save_model(model, out, manifest)
    return out


def single(pred: Any, paths: list[str]) -> dict[str, Any]:
    """Median ms of predict_one, and of its parts: loading (decode + resize) and the model."""
    total, load, model = [], [], []
    pred.predict_one(paths[0])  # first call: lazy imports
    for p in paths:
        _, t = c.timed(lambda p=p: pred.predict_one(p))
        x, t_load = c.timed(lambda p=p: pred.tensor_for(p))
        _, t_model = c.timed(lambda x=x: pred.probs(x[None]))
        total.append(t), load.append(t_load), model.append(t_model)
    ms = {k: 1000 * c.median(v) for k, v in {"total": total, "load": load, "model": model}.items()}
    return {
        "total_ms": ms["total"],
        "load_ms": ms["load"],
        "model_ms": ms["model"],
        "model_share": c.ratio(ms["model"], ms["load"] + ms["model"]),
    }


def set_paths(data: str, n: int, seed: int) -> list[str]:
    """n files of a data set: the chest X-ray JPEGs, or PneumoniaMNIST written as PNG folders (bench_parity)."""
    if data == "chest":
        return list(c.chest_items(n, seed)["path"])[:n]
    if data == "pneumonia":
        import bench_parity as bp

        root = bp.pneumonia_folders(None)
        return sorted(str(p) for p in root.rglob("*.png"))[:n]
    raise SystemExit(f"unknown data set {data!r}: chest or pneumonia")


def tensors_pass(pred: Any, batches: list[Any]) -> tuple[float, float]:
    """(images/s, CPU s per image) of Predictor.probs on batches decoded beforehand (the model's own speed)."""
    t0, cpu0 = time.perf_counter(), time.process_time()
    for x in batches:
        pred.probs(x)
    n = sum(len(x) for x in batches)
    return n / (time.perf_counter() - t0), (time.process_time() - cpu0) / n


def files_pass(pred: Any, paths: list[str], bs: int, workers: int | None = None) -> tuple[float, float]:
    """(images/s, CPU s per image) of Predictor.predict_paths on the files (the app's path; workers None: its
    own choice)."""
    t0, cpu0 = time.perf_counter(), time.process_time()
    df, problems = pred.predict_paths(paths, batch_size=bs, workers=workers)
    seconds, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    if len(df) != len(paths):
        raise SystemExit(
            f"predict_paths predicted {len(df)} of {len(paths)} files: {problems.head(3).to_dict('records')}"
        )
    return len(paths) / seconds, cpu / len(paths)


def files_vs_tensors(
    pred: Any, paths: list[str], bs: int, rounds: int, workers: int | None = None
) -> dict[str, Any]:
    """Files and decoded-tensor passes alternated `rounds` times: medians and their ratio, in wall time and in
    CPU time (CPU seconds per image, tensors / files: what the ratio would be on a core no one else uses)."""
    import numpy as np

    from core.evaluation.predict import as_batch

    batches = [
        as_batch(np.stack([pred.checked_pixels(p) for p in paths[i : i + bs]]))
        for i in range(0, len(paths), bs)
    ]
    pred.predict_paths(paths[:bs], batch_size=bs)  # warm-up: threads, lazy imports, allocator
    tensors_pass(pred, batches[:2])
    files, tensors = [], []
    for _ in range(rounds):
        files.append(files_pass(pred, paths, bs, workers))
        tensors.append(tensors_pass(pred, batches))
    ips = {k: c.median([r[0] for r in v]) for k, v in (("files", files), ("tensors", tensors))}
    cpu = {k: c.median([r[1] for r in v]) for k, v in (("files", files), ("tensors", tensors))}
    return {
        "files_images_per_s": ips["files"],
        "tensors_images_per_s": ips["tensors"],
        "ratio": c.ratio(ips["files"], ips["tensors"]),
        "cpu_ms_per_image": {k: 1000 * v for k, v in cpu.items()},
        "cpu_ratio": c.ratio(cpu["tensors"], cpu["files"]),
        "rounds_files": [r[0] for r in files],
        "rounds_tensors": [r[0] for r in tensors],
    }


def pin(cores: int) -> list[int]:
    """Pin this process to its first `cores` allowed CPUs (as taskset does; before torch starts threads)."""
    allowed = sorted(os.sched_getaffinity(0))
    if len(allowed) < cores:
        raise SystemExit(f"{cores} cores asked, {len(allowed)} available")
    os.sched_setaffinity(0, allowed[:cores])
    return allowed[:cores]


def child(spec: dict[str, Any]) -> None:
    """One (set, cores) measurement in this process; prints its JSON line."""
    cpus = pin(spec["cores"])
    import torch

    torch.set_num_threads(spec["cores"])
    from core.data import prefetch
    from core.evaluation.predict import Predictor

    paths = set_paths(spec["data"], spec["n"], spec["seed"])
    with c.app_home() as home:
        pred = Predictor(save_model(spec["arch"], spec["img_size"], home / "fixed-model"), device="cpu")
        workers = None if spec["workers"] == "auto" else int(spec["workers"])
        out = files_vs_tensors(pred, paths, spec["bs"], spec["rounds"], workers)
        plan = prefetch.cpu_plan(torch.get_num_threads(), spec["bs"] * spec["img_size"] ** 2)
        used = plan.workers if workers is None else workers
    c.emit(
        {**spec, "cpus": cpus, "n": len(paths), **out, "decode_threads": used, "load_avg": os.getloadavg()}
    )


def measure(spec: dict[str, Any]) -> dict[str, Any]:
    """Run `child` in a fresh process (its own CPU pinning and thread count)."""
    env = {**os.environ, "OMP_NUM_THREADS": str(spec["cores"]), "MKL_NUM_THREADS": str(spec["cores"])}
    cmd = [sys.executable, __file__, "--child", json.dumps(spec)]
    done = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def throughput(args: Any) -> list[dict[str, Any]]:
    """files vs tensors for every (set, cores)."""
    rows = []
    for item in args.sets.split(","):
        data, size = item.split(":")
        for cores in (int(k) for k in args.cores.split(",")):
            for workers in args.workers.split(","):
                spec = dict(data=data, img_size=int(size), cores=cores, workers=workers, arch=args.arch)
                row = measure({**spec, "n": args.n, "bs": args.bs, "rounds": args.rounds, "seed": args.seed})
                c.log(
                    f"{data} {size} px, {cores} core(s), {row['decode_threads']} loading thread(s): files "
                    f"{row['files_images_per_s']:.1f} img/s, tensors {row['tensors_images_per_s']:.1f} img/s, "
                    f"ratio {row['ratio']:.2f} (CPU time: {row['cpu_ratio']:.2f}), load {row['load_avg'][0]:.1f}"
                )
                rows.append(row)
    return rows


def main() -> None:
    """Time single images, then files vs tensors per (set, cores); print the JSON line."""
    args = parse()
    if args.child:
        c.setup(args)
        return child(json.loads(args.child))
    c.setup(args)
    from core.evaluation.predict import Predictor

    items = c.chest_items(args.singles, args.seed)
    with c.app_home() as home:
        pred, load_s = c.timed(lambda: Predictor(save_model(args.arch, 224, home / "m"), device="cpu"))
        one = single(pred, list(items["path"])[: args.singles])
    rows = throughput(args)
    app = [r for r in rows if r["workers"] == "auto"] or rows  # the target is the app's own choice
    worst = min(app, key=lambda r: r["ratio"])
    c.emit(
        {
            "benchmark": "predict",
            "smoke": args.smoke,
            "machine": c.machine(),
            "arch": args.arch,
            "model_load_s": load_s,
            "single": one,
            "throughput": rows,
            "batch": {
                "worst": f"{worst['data']} {worst['img_size']} px, {worst['cores']} core(s), "
                f"{worst['decode_threads']} loading thread(s)",
                "app_images_per_s": worst["files_images_per_s"],
                "raw_forward_images_per_s": worst["tensors_images_per_s"],
                "ratio_app_vs_raw": worst["ratio"],
                "target": TARGET_BATCH,
                "target_met": all(r["ratio"] >= TARGET_BATCH for r in app),
            },
            "single_dominated_by_model": one["model_share"] >= 0.5,
            "notes": [
                "files = Predictor.predict_paths on the files; tensors = Predictor.probs on the same images "
                "decoded and batched beforehand; ratio = files / tensors; batch = the worst (set, cores) at the app's "
                "own choice of loading threads (workers auto) when measured",
                "single (224 px chest JPEG): load = decode + downscale + validation resize + to tensor; "
                "model = normalise + forward",
            ],
        }
    )


if __name__ == "__main__":
    main()
