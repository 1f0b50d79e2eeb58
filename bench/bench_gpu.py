"""GPU training throughput: end to end from files on disk (the app's DataLoaders and Learner) vs tensors on the GPU.

For each architecture at 224 px with mixed precision and channels_last: (1) a raw PyTorch training step on
a batch already on the GPU, (2) the app's learner's model/optimiser on that batch (framework overhead
without data loading), (3) the app's whole path: build_dataloaders (decode cache, workers, augmentation
on the GPU) + make_learner + fit, warm cache. Prints "skipped: no CUDA device" without a GPU.
"""

from __future__ import annotations

import time
from typing import Any

import common as c

TARGET = 0.7


def parse() -> Any:
    """Command-line options."""
    p = c.base_parser(__doc__.splitlines()[0])
    p.add_argument("--archs", default="resnet18,resnet34")
    p.add_argument("--img-size", type=int, default=224)
    p.add_argument("--bs", type=int, default=128)
    p.add_argument("--workers", type=int, default=-1, help="DataLoader workers (-1: the app's auto choice)")
    p.add_argument(
        "--min-items", type=int, default=6000, help="training items per epoch (the real set repeated)"
    )
    p.add_argument("--steps", type=int, default=50, help="timed steps on ready tensors")
    p.add_argument("--allow-cpu", action="store_true", help="run on CPU anyway (to test this script)")
    args = p.parse_args()
    if args.smoke:
        args.img_size, args.bs, args.min_items, args.steps, args.archs = 64, 8, 32, 2, "resnet18"
    return args


def sync(device: Any) -> None:
    """Wait for queued GPU work (no-op on CPU)."""
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize()


def amp_dtype() -> Any:
    """bf16 where supported, else fp16 (what make_learner picks)."""
    import torch

    return torch.bfloat16 if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else torch.float16


def step_rate(model: Any, opt: Any, loss_fn: Any, x: Any, y: Any, steps: int) -> float:
    """Images/s of training steps (autocast forward, backward, optimiser) on one ready batch."""
    import torch

    device = x.device
    fp16 = device.type == "cuda" and amp_dtype() == torch.float16
    scaler = torch.amp.GradScaler(enabled=fp16 and isinstance(opt, torch.optim.Optimizer))
    model.train()

    def one() -> None:
        with torch.autocast(device.type, dtype=amp_dtype(), enabled=device.type == "cuda"):
            loss = loss_fn(model(x), y)
        scaler.scale(loss).backward()  # fastai's optimiser (not a torch one): no scaler, timing only
        scaler.step(opt) if scaler.is_enabled() else opt.step()
        scaler.update()
        opt.zero_grad()

    for _ in range(3):
        one()
    sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        one()
    sync(device)
    return steps * len(x) / (time.perf_counter() - t0)


def ready_batch(args: Any, device: Any) -> tuple[Any, Any]:
    """A normalised channels_last batch and labels, already on the device."""
    import torch

    x = torch.randn(args.bs, 3, args.img_size, args.img_size, device=device)
    return x.contiguous(memory_format=torch.channels_last), torch.randint(0, 2, (args.bs,), device=device)


def raw_rate(arch: str, args: Any, device: Any) -> float:
    """Plain PyTorch: the same nn.Module, AdamW (fused on GPU), autocast, channels_last."""
    import torch

    from core.models.archs import create_model

    model = create_model(arch, 2).to(device).to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, fused=device.type == "cuda")
    x, y = ready_batch(args, device)
    return step_rate(model, opt, torch.nn.functional.cross_entropy, x, y, args.steps)


class _Clock:
    """fastai callback timing the training phase of each epoch (GPU synchronised)."""

    def __init__(self, device: Any):
        from fastai.callback.core import Callback

        clock = self

        class Cb(Callback):
            def before_train(self):
                sync(device)
                clock.t0 = time.perf_counter()

            def after_train(self):
                sync(device)
                clock.epochs.append(time.perf_counter() - clock.t0)

        self.t0, self.epochs, self.cb = 0.0, [], Cb()


def app_rates(arch: str, args: Any, device: Any, items: Any) -> dict[str, float]:
    """The app's learner: framework-only rate on a ready batch, and end to end over 2 epochs (cold, warm)."""
    from core.data.loaders import build_dataloaders, resolve_workers
    from core.train.learner import make_learner

    spec = c.TrainSpec(arch=arch, img_size=args.img_size, bs=args.bs, epochs=2, app_workers=args.workers)
    cfg = c.run_config(spec)
    cfg.train.mixed_precision = cfg.train.channels_last = "auto"
    dls = build_dataloaders(items, cfg.data, device=device, from_weights=cfg.train.fine_tunes())
    learn = make_learner(dls, cfg)
    clock = _Clock(device)
    learn.fit(2, 1e-3, cbs=[clock.cb])
    n = len(dls.train) * args.bs  # drop_last: full batches only
    x, y = ready_batch(args, device)
    framework = step_rate(learn.model, learn.opt, learn.loss_func, x, y, args.steps)
    return {
        "e2e_cold_images_per_s": n / clock.epochs[0],
        "e2e_warm_images_per_s": n / clock.epochs[1],
        "framework_ready_batch_images_per_s": framework,
        "workers": resolve_workers(args.workers, device.type == "cuda"),
    }


def repeated_items(args: Any) -> Any:
    """The real chest X-rays repeated until an epoch has at least --min-items training items."""
    import pandas as pd

    base = c.split_items(c.chest_items(None if not args.smoke else 40, args.seed), 0.1, args.seed)
    train, valid = base[base["split"] == "train"], base[base["split"] == "valid"]
    reps = max(1, -(-args.min_items // max(1, len(train))))
    return pd.concat([train] * reps + [valid], ignore_index=True)


def main() -> None:
    """Measure each architecture, or print the skip line."""
    import torch

    args = parse()
    c.setup(args)
    if not torch.cuda.is_available() and not args.allow_cpu:
        c.emit({"benchmark": "gpu", "smoke": args.smoke, "skipped": "no CUDA device", "machine": c.machine()})
        return
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.backends.cudnn.benchmark = True
    items = repeated_items(args)
    result: dict[str, Any] = {
        "benchmark": "gpu",
        "smoke": args.smoke,
        "machine": c.machine(),
        "img_size": args.img_size,
        "bs": args.bs,
        "amp": str(amp_dtype()) if device.type == "cuda" else "off",
        "train_items_per_epoch": int((items["split"] == "train").sum()),
        "archs": {},
    }
    with c.app_home():
        for arch in [a.strip() for a in args.archs.split(",") if a.strip()]:
            raw = raw_rate(arch, args, device)
            app = app_rates(arch, args, device, items)
            ratio = c.ratio(app["e2e_warm_images_per_s"], raw)
            result["archs"][arch] = {
                "raw_ready_tensors_images_per_s": raw,
                **app,
                "ratio_e2e_vs_raw": ratio,
                "target": TARGET,
                "target_met": ratio >= TARGET,
            }
            c.log(f"{arch}: {result['archs'][arch]}")
    result["notes"] = [
        "raw = torch AdamW(fused) + autocast + channels_last on one batch already on the GPU",
        "e2e = the app's DataLoaders (decode cache, workers, GPU augmentation) + Learner.fit; "
        "cold = first epoch (fills the cache), warm = second epoch",
        "framework = the app's model + fastai optimiser on the ready batch (no data loading)",
    ]
    c.emit(result)


if __name__ == "__main__":
    main()
