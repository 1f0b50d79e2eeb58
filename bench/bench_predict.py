"""Prediction: single-image latency of a loaded model and batch images/s, vs a raw PyTorch forward pass.

The model is a saved app model (weights + manifest, random weights: no download here). The app side is
core.evaluation.predict.Predictor (decode, validation resize, normalise, forward); the raw side is the same nn.Module
on tensors already in memory, same batch size, no_grad, eval mode.
"""

from __future__ import annotations

import copy
import time
from pathlib import Path
from typing import Any

import common as c

TARGET_BATCH = 0.8


def parse() -> Any:
    """Command-line options."""
    p = c.base_parser(__doc__.splitlines()[0])
    p.add_argument("--arch", default="resnet18")
    p.add_argument("--img-size", type=int, default=224)
    p.add_argument("--n", type=int, default=64, help="images per batch-throughput pass")
    p.add_argument("--bs", type=int, default=32)
    p.add_argument("--singles", type=int, default=8, help="single-image predictions timed")
    p.add_argument("--rounds", type=int, default=2, help="raw/app passes, interleaved")
    args = p.parse_args()
    if args.smoke:
        args.img_size, args.n, args.bs, args.singles, args.rounds = 64, 8, 4, 2, 1
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


def raw_pass(model: Any, n: int, bs: int, size: int) -> float:
    """Images/s of model(x) on ready tensors, batches of bs, no_grad."""
    import torch

    x = torch.randn(bs, 3, size, size)
    t0 = time.perf_counter()
    done = 0
    with torch.no_grad():
        while done < n:
            k = min(bs, n - done)
            model(x[:k])
            done += k
    return n / (time.perf_counter() - t0)


def app_pass(pred: Any, paths: list[str], bs: int) -> float:
    """Images/s of Predictor.predict_paths on files (decode threads one batch ahead of the model)."""
    (df, problems), seconds = c.timed(lambda: pred.predict_paths(paths, batch_size=bs))
    if len(df) != len(paths):
        raise SystemExit(
            f"predict_paths predicted {len(df)} of {len(paths)} files: {problems.head(3).to_dict('records')}"
        )
    return len(paths) / seconds


def main() -> None:
    """Time load, single images and batches; print the JSON line."""
    from core.evaluation.predict import Predictor

    args = parse()
    c.setup(args)
    items = c.chest_items(max(args.n, args.singles), args.seed)
    paths = list(items["path"])[: args.n]
    with c.app_home() as home:
        model_dir = save_model(args.arch, args.img_size, home / "random_model")
        pred, load_s = c.timed(lambda: Predictor(model_dir, device="cpu"))
        import torch

        with torch.no_grad():
            pred.model(torch.randn(2, 3, args.img_size, args.img_size))  # warm-up
        one = single(pred, list(items["path"])[: args.singles])
        plain = copy.deepcopy(pred.model).to(
            memory_format=torch.contiguous_format
        )  # a script's default layout
        raw, app, nchw = [], [], []
        for r in range(args.rounds):
            raw.append(raw_pass(pred.model, len(paths), args.bs, args.img_size))
            app.append(app_pass(pred, paths, args.bs))
            nchw.append(raw_pass(plain, len(paths), args.bs, args.img_size))
            c.log(
                f"round {r + 1}: raw {raw[-1]:.1f} img/s, app {app[-1]:.1f} img/s, raw NCHW {nchw[-1]:.1f} img/s"
            )
    ratio = c.ratio(c.median(app), c.median(raw))
    c.emit(
        {
            "benchmark": "predict",
            "smoke": args.smoke,
            "machine": c.machine(),
            "arch": args.arch,
            "img_size": args.img_size,
            "bs": args.bs,
            "n": len(paths),
            "model_load_s": load_s,
            "single": one,
            "batch": {
                "app_images_per_s": c.median(app),
                "raw_forward_images_per_s": c.median(raw),
                "ratio_app_vs_raw": ratio,
                "target": TARGET_BATCH,
                "target_met": ratio >= TARGET_BATCH,
                "raw_forward_nchw_images_per_s": c.median(nchw),
                "ratio_app_vs_raw_nchw": c.ratio(c.median(app), c.median(nchw)),
            },
            "single_dominated_by_model": one["model_share"] >= 0.5,
            "notes": [
                "data: real 224 px chest X-ray JPEGs; random weights (same cost as trained ones)",
                "single: load = decode + downscale + validation Resize + to tensor; model = normalise + forward",
                "raw = the Predictor's own model (channels_last) on ready tensors; raw_nchw = the same weights "
                "in PyTorch's default layout, as a plain script runs them",
            ],
        }
    )


if __name__ == "__main__":
    main()
