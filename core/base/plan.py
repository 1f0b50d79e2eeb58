"""Defaults that fit the data: a from-scratch run's schedule (image size, batch size, epochs) planned from its
training set, its rough duration, and one-click quicker / better alternatives.

A pure rule on plain numbers (README "Training defaults" gives its measured basis). Fine-tuning ImageNet weights
keeps the device's own defaults; from scratch the image size follows the sources' typical size, the batch size
keeps enough batches per epoch on a small set, and the epochs give the model a budget of optimiser steps.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from core.base.config import RunConfig


class DeviceDefaults(Protocol):
    """The device's starting schedule (core.base.choices.DeviceDefaults has it)."""

    @property
    def img_size(self) -> int: ...
    @property
    def batch_size(self) -> int: ...
    @property
    def epochs(self) -> int: ...


STEP_BUDGET = 300  # optimiser steps a from-scratch model gets (within EPOCH_RANGE)
EPOCH_RANGE = (5, 10)  # from scratch: 3 epochs left models at one class; 10 is the plain notebook's schedule
# Batches per epoch a small set keeps: the batch size halves (down to MIN_BATCH) below it. 16 gave a 240-image set
# batch 8 (300 steps in 10 epochs) and 1.24-1.83x the plain script's time; batch 32 (7 batches an epoch, 70 steps)
# reached the same test AUC (0.925 / 0.937 vs 0.922 / 0.929 at batch 8, 2 seeds) in 0.79-0.98x the plain script's
# time, and 300 chest X-rays at batch 32 (~8 batches an epoch) had reached valid AUC 0.99 (bench/README.md).
MIN_BATCHES = 6
MIN_BATCH = 8
MIN_SIZE = 32  # the smallest input the architectures take (resnets reduce it 32x)
BETTER_SIZE = (
    1.5  # "better" may grow the image up to this times the device's default (never above the sources)
)
# Rough seconds per training image of a resnet18-sized model at 128 px (one core of the 2-core dev VM; a GPU):
# the estimate is for orientation only ("about"); small images cost at least PIXEL_FLOOR of a 128 px one.
# Checked 2026-12-06 (bench_defaults / bench_overhead, one torch thread, load ~3): the built-in sample at 128 px
# (170 + 56 images, 10 epochs) estimated 95 s, took 94-117 s; PneumoniaMNIST at 32 px (240 + 80) took 4.2 ms per
# training image with its share of validation, 0.084 of the 128 px cost, hence the floor 0.1 (was 0.2: 2x over).
S_PER_IMAGE_128 = {False: 0.05, True: 0.002}
PIXEL_FLOOR = 0.1
EVAL_SHARE = 0.35  # a validation image costs about this share of a training one (no backward pass)


@dataclass(frozen=True)
class DataFacts:
    """What the plan reads from the data: items per split, the typical native side in pixels, classes, folds."""

    n_train: int
    n_valid: int
    side: int | None = None  # median longer side of the source images; None when unknown
    n_classes: int = 2
    folds: int = 1  # k-fold runs train this many models


@dataclass(frozen=True)
class Plan:
    """A schedule and what it costs: optimiser steps and rough seconds on this device."""

    img_size: int
    batch_size: int
    epochs: int
    steps: int
    seconds: float
    why: str

    def choices(self) -> dict[str, int]:
        """The plan as setting values (core.base.choices names)."""
        return {"img_size": self.img_size, "batch_size": self.batch_size, "epochs": self.epochs}


def fit_size(side: int | None, cap: int) -> int:
    """The image size: the sources' typical side rounded down to a multiple of 32 (at least 32), at most `cap`."""
    if not side:
        return cap
    return max(MIN_SIZE, min(cap, int(side) // 32 * 32))


def fit_batch(n_train: int, default: int) -> int:
    """The device's batch size, halved (down to MIN_BATCH) until an epoch has MIN_BATCHES batches (very small sets)."""
    bs = default
    while bs > MIN_BATCH and n_train // bs < MIN_BATCHES:
        bs //= 2
    return bs


def steps_per_epoch(n_train: int, batch_size: int) -> int:
    """Optimiser steps in one epoch (the last partial batch is dropped in training)."""
    return max(1, n_train // batch_size)


def image_seconds(img_size: int, gpu: bool) -> float:
    """Rough seconds one training image costs at `img_size` (forward, backward, its share of the step)."""
    return S_PER_IMAGE_128[gpu] * max(PIXEL_FLOOR, (img_size / 128) ** 2)


def seconds(facts: DataFacts, img_size: int, epochs: int, gpu: bool) -> float:
    """Rough wall time of training `epochs` epochs (and validating each) at `img_size`, all folds."""
    return facts.folds * epochs * (facts.n_train + EVAL_SHARE * facts.n_valid) * image_seconds(img_size, gpu)


def lr_find_seconds(steps: int, batch_size: int, img_size: int, gpu: bool) -> float:
    """Rough wall time of the LR finder's steps (one training batch each), reading the data not included."""
    return steps * batch_size * image_seconds(img_size, gpu)


def make_plan(facts: DataFacts, img_size: int, batch_size: int, epochs: int, gpu: bool, why: str) -> Plan:
    """A Plan with its step count and rough duration."""
    steps = epochs * steps_per_epoch(facts.n_train, batch_size)
    return Plan(img_size, batch_size, epochs, steps, seconds(facts, img_size, epochs, gpu), why)


def plan_schedule(facts: DataFacts, fine_tunes: bool, dd: DeviceDefaults, gpu: bool) -> Plan:
    """The default schedule for this data: the device's defaults when fine-tuning, else fitted to the data."""
    if fine_tunes:
        why = "fine-tuning from weights (ImageNet or a file) keeps the device defaults"
        return make_plan(facts, dd.img_size, dd.batch_size, dd.epochs, gpu, why)
    size, bs = fit_size(facts.side, dd.img_size), fit_batch(facts.n_train, dd.batch_size)
    lo, hi = EPOCH_RANGE
    epochs = min(hi, max(lo, math.ceil(STEP_BUDGET / steps_per_epoch(facts.n_train, bs))))
    side = f"sources about {facts.side} px" if facts.side else "source size unknown"
    why = (
        f"from scratch: {side} -> {size} px; {facts.n_train} training images in batches of {bs}; "
        f"{epochs} epochs for a budget of about {STEP_BUDGET} optimiser steps ({lo}-{hi} epochs)"
    )
    return make_plan(facts, size, bs, epochs, gpu, why)


def alternatives(facts: DataFacts, plan: Plan, dd: DeviceDefaults, gpu: bool) -> dict[str, Plan]:
    """One-click alternatives to a plan: "quicker" (half the epochs) and "better" (twice the epochs, larger images
    where the sources are larger)."""
    quick = max(2, plan.epochs // 2)
    better_size = max(plan.img_size, fit_size(facts.side, int(dd.img_size * BETTER_SIZE) // 32 * 32))
    return {
        "quicker": make_plan(facts, plan.img_size, plan.batch_size, quick, gpu, "half the epochs"),
        "better": make_plan(
            facts,
            better_size,
            plan.batch_size,
            plan.epochs * 2,
            gpu,
            "twice the epochs, larger images if the sources are",
        ),
    }


def schedule_of(facts: DataFacts, cfg: RunConfig, dd: DeviceDefaults, gpu: bool) -> Plan:
    """The Plan of a run's settings, to show its steps and rough duration: the planned one when they match it."""
    planned = plan_schedule(facts, cfg.train.fine_tunes(), dd, gpu)
    size, bs, epochs = cfg.data.img_size, cfg.data.batch_size, cfg.train.epochs
    if planned.choices() == {"img_size": size, "batch_size": bs, "epochs": epochs}:
        return planned
    return make_plan(facts, size, bs, epochs, gpu, "the settings chosen")


def summary(facts: DataFacts, chosen: Plan, dd: DeviceDefaults, gpu: bool) -> dict[str, object]:
    """The schedule a run will use, its quicker / better alternatives and the data they come from, as plain values."""
    rows = {"schedule": chosen, **alternatives(facts, chosen, dd, gpu)}
    return {
        "data": {
            "train_items": facts.n_train,
            "valid_items": facts.n_valid,
            "typical_side_px": facts.side,
            "classes": facts.n_classes,
            "folds": facts.folds,
        },
        **{
            name: {**p.choices(), "steps": p.steps, "about_seconds": round(p.seconds), "why": p.why}
            for name, p in rows.items()
        },
        "estimate": "rough: a resnet18-sized model on one core of a 2-core VM (or a GPU); other machines differ",
    }
