"""Shared benchmark helpers: data sets, the app's and a plain fastai script's training, timing, JSON output.

Every benchmark script prints exactly one JSON line on stdout; logs go to stderr.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import gc
import json
import math
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from core.base import fmt  # noqa: E402
from core.runs.rundir import json_safe  # noqa: E402

SHARED = Path(os.environ.get("XRT_SHARED_DATA", REPO.parent / "shared" / "data"))
CHEST = SHARED / "chest_xray_224"
DICOM_SAMPLES = SHARED / "dicom_samples"
DATA_CACHE = Path(os.environ.get("XRT_BENCH_DATA", Path(tempfile.gettempdir()) / "xrt-bench-data"))
LARGE_VERSION = 2  # bump when the generated large data set changes


# ---------------------------------------------------------------- output and timing


def log(*parts: Any) -> None:
    """A progress line on stderr (stdout is reserved for the JSON result)."""
    print("[bench]", *parts, file=sys.stderr, flush=True)


def _clean(x: Any) -> Any:
    """Valid, readable JSON values: core.runs.rundir.json_safe (NaN -> None, numpy -> Python), paths as text, floats to 4 places."""
    return json.loads(json.dumps(json_safe(x), default=str), parse_float=lambda s: round(float(s), 4))


def emit(result: dict[str, Any]) -> None:
    """Print the one JSON line of results on the real stdout."""
    print(json.dumps(_clean(result)), file=sys.__stdout__, flush=True)


def machine() -> dict[str, Any]:
    """Where and when the numbers were taken (load average included: the machine is shared)."""
    out = {
        "date": dt.datetime.now().isoformat(timespec="seconds"),
        "cpus": os.cpu_count(),
        "load_avg": [round(v, 2) for v in os.getloadavg()],
        "python": platform.python_version(),
    }
    torch = sys.modules.get("torch")  # not imported just for this: the ingest and app scripts do not need it
    if torch is not None:
        cuda = torch.cuda.is_available()
        out.update(
            torch=torch.__version__,
            torch_threads=torch.get_num_threads(),
            device=torch.cuda.get_device_name(0) if cuda else "cpu",
        )
    return out


def ratio(num: float, den: float) -> float:
    """num / den, NaN when den is 0."""
    return num / den if den else math.nan


def median(values: list[float]) -> float:
    """Median (NaN for an empty list)."""
    return statistics.median(values) if values else math.nan


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    """(result, wall seconds) of fn()."""
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def base_parser(description: str) -> argparse.ArgumentParser:
    """argparse with the options every benchmark has."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--smoke", action="store_true", help="tiny sizes, seconds: checks the script still works")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument(
        "--threads",
        type=int,
        default=int(os.environ.get("XRT_BENCH_THREADS", "0")),
        help="torch intra-op threads (0 = torch default)",
    )
    return p


def setup(args: argparse.Namespace, torch_needed: bool = True) -> None:
    """Quiet warnings/logging, keep stdout for the JSON line, apply --threads (importing torch only if needed)."""
    import logging

    warnings.filterwarnings("ignore")
    sys.stdout = sys.stderr  # libraries that print (fastai's Recorder) must not break the one JSON line
    logging.getLogger("core").setLevel(logging.ERROR)
    if args.threads:
        os.environ["OMP_NUM_THREADS"] = str(args.threads)
        if torch_needed:
            import torch

            torch.set_num_threads(args.threads)


@contextlib.contextmanager
def app_home(prefix: str = "xrt-bench-") -> Iterator[Path]:
    """A throw-away $XRT_HOME (runs, jobs, decode cache) for the duration of a benchmark."""
    old = {k: os.environ.get(k) for k in ("XRT_HOME", "XRT_CACHE_DIR")}
    home = Path(tempfile.mkdtemp(prefix=prefix))
    os.environ["XRT_HOME"] = str(home)
    os.environ.pop("XRT_CACHE_DIR", None)
    try:
        yield home
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        shutil.rmtree(home, ignore_errors=True)


def fresh_cache(home: Path, name: str) -> Path:
    """Point the app's decode cache at a new, empty folder (a cold cache)."""
    path = home / f"cache-{name}"
    shutil.rmtree(path, ignore_errors=True)
    os.environ["XRT_CACHE_DIR"] = str(path)
    return path


def free_memory() -> None:
    """Collect garbage between runs (learners hold a lot)."""
    gc.collect()


# ---------------------------------------------------------------- data sets


def require(path: Path, what: str) -> Path:
    """`path`, or exit with a clear message when the shared data is missing."""
    if not path.exists():
        raise SystemExit(f"{what} not found at {path} (set XRT_SHARED_DATA)")
    return path


def chest_items(n: int | None, seed: int) -> pd.DataFrame:
    """The real chest X-rays as an app items table (path, label, group=patient), `n` rows class-balanced."""
    from core.data.tables import from_df

    table = pd.read_csv(require(CHEST, "chest_xray_224") / "labels.csv")
    if n and n < len(table):
        rng = np.random.default_rng(seed)
        per = n // table["label"].nunique()
        keep = [
            rng.choice(idx, min(per, len(idx)), replace=False)
            for idx in table.groupby("label").indices.values()
        ]
        table = table.iloc[np.sort(np.concatenate(keep))]
    items = from_df(table.reset_index(drop=True), CHEST, group_col="patient_id").items
    return items.sort_values("path").reset_index(drop=True)


def split_items(items: pd.DataFrame, valid_pct: float, seed: int) -> pd.DataFrame:
    """Train/valid split by patient (the app's own splitter), so both sides use the same split."""
    from core.base.config import SplitConfig
    from core.data.splits import assign_splits

    return assign_splits(items, SplitConfig(method="group", valid_pct=valid_pct, seed=seed))


def folder_layout(items: pd.DataFrame, dest: Path, valid_idx: np.ndarray | None = None) -> Path:
    """dest/{train,valid}/<label>/<file> symlinks: the layout a plain fastai script reads (same split)."""
    shutil.rmtree(dest, ignore_errors=True)
    split = items["split"].to_numpy().copy()
    if valid_idx is not None:
        split[:] = "train"
        split[np.asarray(valid_idx, dtype=int)] = "valid"
    for i, (path, label, part) in enumerate(zip(items["path"], items["label"].astype(str), split)):
        if part not in ("train", "valid"):
            continue
        target = dest / part / label / f"{i:05d}_{Path(path).name}"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.symlink_to(Path(path).resolve())
    return dest


def large_dataset(n: int, size: int, seed: int) -> Path:
    """`n` generated size x size 16-bit (12-bit values) grey PNG X-ray-like pictures + labels.csv (kept on disk)."""
    root = DATA_CACHE / f"large-v{LARGE_VERSION}-n{n}-s{size}-seed{seed}"
    if (root / "labels.csv").is_file():
        return root
    log(f"generating {n} {size}x{size} 16-bit PNGs under {root} (once)")
    tmp = Path(tempfile.mkdtemp(prefix=".build-", dir=_mkdir(DATA_CACHE)))
    rows = ["path,label,patient_id"]
    for i, pic in enumerate(_large_pictures(n, seed)):
        rel = f"{pic.label}/img{i:04d}.png"
        _write_large_png(pic.pixels, tmp / rel, size, np.random.default_rng([seed, 9, i]))
        rows.append(f"{rel},{pic.label},P{pic.patient:04d}")
    (tmp / "labels.csv").write_text("\n".join(rows) + "\n")
    shutil.rmtree(root, ignore_errors=True)
    os.replace(tmp, root)
    return root


def _mkdir(path: Path) -> Path:
    """path, created."""
    path.mkdir(parents=True, exist_ok=True)
    return path


def _large_pictures(n: int, seed: int) -> list:
    """`n` pictures of the app's synthetic sample generator, one per patient (classes alternate)."""
    from core.data.sample import _pictures

    firsts: dict[int, Any] = {}
    for p in _pictures(n, seed):
        firsts.setdefault(p.patient, p)
    return list(firsts.values())[:n]


def _write_large_png(pixels: np.ndarray, path: Path, size: int, rng: np.random.Generator) -> None:
    """Upscale a [0, 1] picture to size x size, add fine detector noise, save as 16-bit PNG (12-bit values)."""
    from PIL import Image

    big = np.asarray(
        Image.fromarray(pixels.astype(np.float32), "F").resize((size, size), Image.Resampling.BILINEAR)
    )
    big = np.clip(big + rng.normal(0, 0.01, big.shape).astype(np.float32), 0, 1)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.round(big * 4095).astype(np.uint16)).save(path, compress_level=1)


def large_csv(n: int, pool: int, size: int, seed: int) -> Path:
    """A labels CSV of the first `n` images of the generated set of `pool` (shared by the benchmarks)."""
    root = large_dataset(max(n, pool), size, seed)
    if n >= max(n, pool):
        return root / "labels.csv"
    csv = root / f"labels-first{n}.csv"
    csv.write_text("\n".join((root / "labels.csv").read_text().splitlines()[: n + 1]) + "\n")
    return csv


def large_items(csv: Path) -> pd.DataFrame:
    """Items table of a generated large data set (through the app's CSV source, validated)."""
    from core.data.tables import from_csv

    return from_csv(csv, group_col="patient_id").items


# ---------------------------------------------------------------- the two training sides


@dataclass
class TrainSpec:
    """Settings both sides share (same data, size, architecture, epochs, batch size, seed)."""

    arch: str = "resnet18"
    img_size: int = 64
    bs: int = 32
    epochs: int = 2
    lr: float = 3e-3
    seed: int = 42
    app_workers: int = 0
    plain_workers: int = -1  # -1: fastai's default (defaults.cpus)
    plain_mode: str = "fit_one_cycle"  # or "fine_tune" (freezes a random body first: not like for like)


def spec_dict(spec: TrainSpec) -> dict[str, Any]:
    """The spec as plain values for the JSON output."""
    return asdict(spec)


def run_config(spec: TrainSpec, source: Any = None) -> Any:
    """The app's RunConfig for this spec (core.base.choices): from scratch, fit_one_cycle(epochs), default augmentation."""
    from core.base.choices import Choices, build_config
    from core.base.config import RunConfig, SourceConfig

    chosen = Choices(
        name="bench",
        arch=spec.arch,
        pretrained=False,
        epochs=spec.epochs,
        lr=spec.lr,
        seed=spec.seed,
        img_size=spec.img_size,
        batch_size=spec.bs,
        num_workers=spec.app_workers,
        split_method="group",
    )
    return build_config(chosen, base=RunConfig(), source=source or SourceConfig())


def app_fit(items: pd.DataFrame, spec: TrainSpec, run_dir: Path, valid_idx: Any = None) -> dict[str, Any]:
    """The app's training path (core.train.fit.fit_one): DataLoaders through the decode cache, fit, best epoch, preds."""
    from core.evaluation import evaluate
    from core.runs.progress import Progress
    from core.train.fit import fit_one

    cfg = run_config(spec)
    classes = sorted(items["label"].astype(str).unique())
    t0 = time.perf_counter()
    out = fit_one(items, cfg, run_dir, Progress(run_dir), valid_idx=valid_idx, classes=classes)
    seconds = time.perf_counter() - t0
    m = evaluate.metrics_from_frame(out.valid, classes)
    epochs = [r["time_s"] for r in out.rows]
    n_train, n_valid = len(out.learn.dls.train_ds), len(out.valid)
    out.learn.dls = None
    del out
    free_memory()
    return {
        "seconds": seconds,
        "epoch_s": list(np.diff([0.0, *epochs])),
        "accuracy": m["accuracy"],
        "roc_auc": m["roc_auc"],
        "n_train": n_train,
        "n_valid": n_valid,
    }


def plain_dls(path: Path, spec: TrainSpec) -> Any:
    """The plain script's DataLoaders: from_folder with Resize + aug_transforms + Normalize."""
    from fastai.data.transforms import Normalize
    from fastai.vision.all import ImageDataLoaders, Resize, ResizeMethod, aug_transforms, imagenet_stats

    kw = {} if spec.plain_workers < 0 else {"num_workers": spec.plain_workers}
    return ImageDataLoaders.from_folder(
        path,
        train="train",
        valid="valid",
        bs=spec.bs,
        seed=spec.seed,
        item_tfms=Resize(spec.img_size, method=ResizeMethod.Squish),
        batch_tfms=[
            *aug_transforms(
                max_rotate=10,
                max_zoom=1.1,
                max_warp=0.1,
                max_lighting=0.2,
                p_affine=0.75,
                p_lighting=0.75,
                pad_mode="zeros",
            ),
            Normalize.from_stats(*imagenet_stats),
        ],
        **kw,
    )


def plain_script(path: Path, spec: TrainSpec) -> dict[str, Any]:
    """What a user writes in a notebook: ImageDataLoaders.from_folder + vision_learner + fit_one_cycle/fine_tune."""
    from fastai.callback.core import Callback
    from fastai.metrics import accuracy
    from fastai.torch_core import set_seed
    from fastai.vision.learner import vision_learner
    from torchvision.models import resnet18, resnet34

    class EpochTimer(Callback):
        def before_fit(self):
            self.marks = [time.perf_counter()]

        def after_epoch(self):
            self.marks.append(time.perf_counter())

    set_seed(spec.seed, reproducible=True)
    t0 = time.perf_counter()
    dls = plain_dls(path, spec)
    arch = {"resnet18": resnet18, "resnet34": resnet34}[spec.arch]
    learn = vision_learner(dls, arch, pretrained=False, metrics=accuracy)
    timer = EpochTimer()
    with learn.no_bar(), learn.no_logging():
        if spec.plain_mode == "fine_tune":
            learn.fine_tune(spec.epochs - 1 or 1, base_lr=spec.lr, freeze_epochs=1, cbs=[timer])
        else:
            learn.fit_one_cycle(spec.epochs, spec.lr, cbs=[timer])
        probs, y = learn.get_preds()
    seconds = time.perf_counter() - t0
    out = _score(y.numpy(), probs.float().numpy(), list(dls.vocab))
    out.update(
        seconds=seconds,
        epoch_s=list(np.diff(timer.marks)),
        n_train=len(dls.train_ds),
        n_valid=len(dls.valid_ds),
    )
    del learn, dls
    free_memory()
    return out


def loader_images_per_s(dl: Any) -> float:
    """Images/s of one pass over a training DataLoader (decode, item and batch transforms; no model)."""
    t0 = time.perf_counter()
    n = sum(len(b[0]) for b in dl)
    return ratio(n, time.perf_counter() - t0)


def loader_only(items: pd.DataFrame, layout: Path, spec: TrainSpec, cold: bool = True) -> dict[str, float]:
    """Data path alone: the app's loader (cold = filling an empty decode cache; warm = a new loader on a warm cache,
    i.e. epoch 1 of a rerun; stored = that loader's second pass, epoch 2 onwards from the in-memory item store), and
    the plain script's loader."""
    from core.data.loaders import build_dataloaders

    def fresh():
        cfg = run_config(spec)
        return build_dataloaders(items, cfg.data, from_weights=cfg.train.fine_tunes()).train

    out = {"app_cold_images_per_s": loader_images_per_s(fresh())} if cold else {}
    dl = fresh()
    out["app_warm_images_per_s"] = warm = loader_images_per_s(dl)
    out["app_stored_images_per_s"] = stored = loader_images_per_s(dl)
    out["plain_images_per_s"] = plain = loader_images_per_s(plain_dls(layout, spec).train)
    return {
        **out,
        "ratio_app_warm_vs_plain": ratio(warm, plain),
        "ratio_app_stored_vs_plain": ratio(stored, plain),
    }


def _score(y: np.ndarray, probs: np.ndarray, classes: list[str]) -> dict[str, float]:
    """Accuracy and ROC AUC with the app's own metric functions."""
    from core.evaluation import evaluate

    m = evaluate.basic_metrics(y, probs, classes)
    return {"accuracy": m["accuracy"], "roc_auc": m["roc_auc"]}


def throughput(run: dict[str, Any], epochs: int) -> float:
    """Training images per second, end to end (DataLoaders, fit incl. validation, final predictions)."""
    return ratio(run["n_train"] * epochs, run["seconds"])


def warmup() -> None:
    """Import both sides' modules and run one forward/backward pass, so neither side pays first-call costs."""
    import fastai.vision.all  # noqa: F401
    import torch
    from torchvision.models import resnet18

    import core.evaluation.evaluate  # noqa: F401
    import core.train.tasks  # noqa: F401

    m = resnet18(num_classes=2)
    m(torch.randn(4, 3, 64, 64)).sum().backward()


def abba(n: int) -> list[str]:
    """Side order for n repeats: app, plain, plain, app, app, plain, ... (cancels drift in load)."""
    pattern = ["app", "plain", "plain", "app"]
    return [pattern[i % 4] for i in range(2 * n)]


def summarize(runs: dict[str, list[dict[str, Any]]], epochs: int) -> dict[str, Any]:
    """Median images/s and accuracy/AUC per side, and the app/plain throughput ratio."""
    out: dict[str, Any] = {}
    for side, rs in runs.items():
        out[side] = {
            "images_per_s": median([throughput(r, epochs) for r in rs]),
            "images_per_s_each": [throughput(r, epochs) for r in rs],
            "seconds": median([r["seconds"] for r in rs]),
            "accuracy": median([r["accuracy"] for r in rs]),
            "roc_auc": median([r["roc_auc"] for r in rs]),
            "n_train": rs[0]["n_train"],
            "n_valid": rs[0]["n_valid"],
            "epoch_s": rs[0]["epoch_s"],
            "runs": len(rs),
        }
    out["ratio_app_vs_plain"] = ratio(out["app"]["images_per_s"], out["plain"]["images_per_s"])
    return out


def smoke_job_task(params: dict, run_dir: Path, progress: Any) -> dict:
    """A job task for bench_app --smoke: reports one training batch at once (no torch import, so seconds).

    It then stays in that batch until cancelled (at most 30 s), as a real epoch would, so the poller cannot
    miss the batch between two reads of progress.json.
    """
    import time

    progress.update(force=True, phase="training", epoch=0, n_epochs=1, batch=1, n_batches=1)
    deadline = time.monotonic() + 30
    while not progress.cancelled() and time.monotonic() < deadline:
        time.sleep(0.05)
    return {}


# ---------------------------------------------------------------- summary of a results folder


def _f(x: Any, digits: int = 2) -> str:
    """A number for the table (core.base.fmt, 2 decimals, '-' when missing)."""
    return fmt.number(x, digits, missing="-")


def _load_all(folder: Path, name: str) -> list[dict[str, Any]]:
    """Every JSON line of a benchmark that prints one per data set ([] when it did not run)."""
    try:
        return [json.loads(ln) for ln in (folder / f"{name}.json").read_text().splitlines() if ln.strip()]
    except (OSError, ValueError):
        return []


def parity_rows(results: list[dict[str, Any]]) -> list[list[str]]:
    """Summary rows of bench_parity: test ACC / AUC mean +- sd of app and plain, and the time ratio."""
    rows = []
    for d in results:
        a, p, v = d["sides"].get("app"), d["sides"].get("plain"), d.get("vs_plain", {}).get("app")
        if not (a and p and v):
            continue
        ms = "{:.3f} ± {:.3f}"
        name = f"parity {d['dataset']} ({d['size']}, {d['settings']['seeds']} seeds)"
        for key, label in (("accuracy", "test ACC"), ("roc_auc", "test AUC")):
            rows.append(
                [
                    name,
                    label,
                    ms.format(a[key]["mean"], a[key]["sd"]),
                    ms.format(p[key]["mean"], p[key]["sd"]),
                    f"{v['acc_diff' if key == 'accuracy' else 'auc_diff']:+.3f}",
                    ">= -0.01",
                    "yes" if v["accuracy_target_met"] else "no",
                ]
            )
        rows.append(
            [
                name,
                "seconds per run (ratio: plain / app)",
                _f(a["seconds"]["mean"], 1),
                _f(p["seconds"]["mean"], 1),
                _f(v["time_ratio_plain_over_app"]),
                ">= 1.0",
                "yes" if v["speed_target_met"] else "no",
            ]
        )
    return rows


def _load(folder: Path, name: str) -> dict[str, Any]:
    """One benchmark's JSON line ({} when it did not run or failed)."""
    try:
        return json.loads((folder / f"{name}.json").read_text().strip().splitlines()[-1])
    except (OSError, ValueError, IndexError):
        return {}


def summary_rows(folder: Path) -> list[list[str]]:
    """Markdown table rows: benchmark, measure, app, reference, ratio, target, met."""
    rows: list[list[str]] = []
    train, kfold, ingest = (
        _load(folder, "bench_train"),
        _load(folder, "bench_kfold"),
        _load(folder, "bench_ingest"),
    )
    predict, app, gpu = _load(folder, "bench_predict"), _load(folder, "bench_app"), _load(folder, "bench_gpu")
    for case, d in train.get("cases", {}).items():
        a, p = d["app"], d["plain"]
        rows.append(
            [
                f"train {case}",
                "images/s end to end",
                _f(a["images_per_s"]),
                _f(p["images_per_s"]),
                _f(d["ratio_app_vs_plain"]),
                f">= {d['target_ratio']}",
                "yes" if d["target_met"] else "no",
            ]
        )
        rows.append(
            [
                f"train {case}",
                "valid accuracy / AUC",
                f"{_f(a['accuracy'])} / {_f(a['roc_auc'])}",
                f"{_f(p['accuracy'])} / {_f(p['roc_auc'])}",
                "",
                "within noise",
                "",
            ]
        )
        lo = d.get("loader_only")
        if lo:
            rows.append(
                [
                    f"train {case}",
                    "data path only, images/s (app warm; cold)",
                    f"{_f(lo['app_warm_images_per_s'], 1)}; {_f(lo.get('app_cold_images_per_s'), 1)}",
                    _f(lo["plain_images_per_s"], 1),
                    _f(lo["ratio_app_warm_vs_plain"]),
                    "",
                    "",
                ]
            )
    rows += parity_rows(_load_all(folder, "bench_parity"))
    for name, d in kfold.get("datasets", {}).items():
        rows.append(
            [
                f"{d['k']}-fold {name}",
                "wall s in process (app incl. scan)",
                _f(d["app"]["seconds"], 1),
                _f(d["plain"]["seconds"], 1),
                _f(d["speedup_app_vs_plain"]),
                f">= {d['target']}x faster",
                "yes" if d["target_met"] else "no",
            ]
        )
        sep = d.get("separate_runs")
        if sep:
            rows.append(
                [
                    f"{d['k']}-fold {name}",
                    f"wall s as separate runs (1 app job vs {d['k']} scripts)",
                    _f(sep["app_seconds"], 1),
                    _f(sep["plain_seconds"], 1),
                    _f(sep["speedup_app_vs_plain"]),
                    f">= {d['target']}x faster",
                    "yes" if sep["target_met"] else "no",
                ]
            )
    for name, d in ingest.get("cases", {}).items():
        runs = d.get("runs", [d])
        rate = " / ".join(f"{_f(r['files_per_s'], 0)} ({r['files']})" for r in runs)
        mem = d.get("memory_bounded")
        rows.append(
            [
                f"ingest {name}",
                "files/s (files)",
                rate,
                "",
                "",
                "bounded memory" if mem is not None else "",
                "" if mem is None else ("yes" if mem else "no"),
            ]
        )
    if predict:
        b, s = predict["batch"], predict["single"]
        for t in predict.get("throughput") or [{**b, "files_images_per_s": b["app_images_per_s"]}]:
            what = f"{t['data']} {t['img_size']} px, {t['cores']} core(s): " if "data" in t else ""
            rows.append(
                [
                    "predict batch",
                    f"{what}images/s, files vs decoded tensors",
                    _f(t["files_images_per_s"], 1),
                    _f(t.get("tensors_images_per_s", b["raw_forward_images_per_s"]), 1),
                    _f(t.get("ratio", b["ratio_app_vs_raw"])),
                    f">= {b['target']}",
                    "yes" if t.get("ratio", b["ratio_app_vs_raw"]) >= b["target"] else "no",
                ]
            )
        if "raw_forward_nchw_images_per_s" in b:
            rows.append(
                [
                    "predict batch",
                    "images/s vs raw forward in default NCHW layout",
                    _f(b["app_images_per_s"], 1),
                    _f(b["raw_forward_nchw_images_per_s"], 1),
                    _f(b["ratio_app_vs_raw_nchw"]),
                    "",
                    "",
                ]
            )
        rows.append(
            [
                "predict single",
                "ms (load + model)",
                f"{_f(s['total_ms'], 0)} ({_f(s['load_ms'], 0)} + {_f(s['model_ms'], 0)})",
                "",
                f"model {_f(100 * s['model_share'], 0)} %",
                "model dominates",
                "yes" if predict["single_dominated_by_model"] else "no",
            ]
        )
    if app:
        fp, st = app.get("first_page", {}), app.get("start_to_progress", {})
        rows.append(
            [
                "app",
                f"streamlit run -> healthy / title / page done, s ({app.get('client')})",
                f"{_f(fp.get('server_healthy_s'), 1)} / {_f(fp.get('title_s'), 1)} / "
                f"{_f(fp.get('page_complete_s'), 1)}",
                "",
                "",
                "",
                "",
            ]
        )
        rows.append(
            [
                "app",
                "Start -> first progress / first batch, s",
                f"{_f(st.get('first_progress_s'), 1)} / {_f(st.get('first_batch_s'), 1)}",
                "",
                "",
                "",
                "",
            ]
        )
    if gpu.get("skipped"):
        rows.append(["gpu", "", f"skipped: {gpu['skipped']}", "", "", "", ""])
    for arch, d in gpu.get("archs", {}).items():
        rows.append(
            [
                f"gpu {arch}",
                "images/s e2e warm (cold) vs ready tensors",
                f"{_f(d['e2e_warm_images_per_s'], 0)} ({_f(d['e2e_cold_images_per_s'], 0)})",
                _f(d["raw_ready_tensors_images_per_s"], 0),
                _f(d["ratio_e2e_vs_raw"]),
                f">= {d['target']}",
                "yes" if d["target_met"] else "no",
            ]
        )
    return rows


def print_summary(folder: str | Path) -> None:
    """The results of a run_all.sh folder as a markdown table (stdout)."""
    head = ["benchmark", "measure", "app", "plain / raw", "ratio", "target", "met"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(r) + " |" for r in summary_rows(Path(folder))]
    print("\n".join(lines), file=sys.__stdout__, flush=True)
