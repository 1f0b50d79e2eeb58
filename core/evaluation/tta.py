"""Test-time augmentation (TTA): a model's probabilities averaged over a few views of each image.

The views are the image itself, its mirror images where training allowed them (the setup's left-right / up-down
flips: a model trained without flips never sees a mirrored chest, so it is not shown one), four shifts of
`SHIFT` of the image size (left, right, up, down) and a zoom out / in by `SCALES`. Shifts and zooms are applied to
the 0..1 image before normalisation and pad with black, as training's augmentation does. What a model may be shown
is recorded in its manifest under `KEY` when it is saved; an older model reads it from its run's config.json, and
a stand-alone model without either gets no flips.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from core.base.config import AugConfig

KEY = "tta"  # the manifest's record: {"flip": bool, "vertical_flip": bool}
SHIFT = 0.04  # a shift, as a fraction of the image's width / height
SCALES = (0.9, 1.1)  # zoom out / in


@dataclass(frozen=True)
class View:
    """One transformed view: flips, a shift (fraction of the size; + = right / down) and a zoom (> 1 = in)."""

    name: str
    hflip: bool = False
    vflip: bool = False
    dx: float = 0.0
    dy: float = 0.0
    scale: float = 1.0


IDENTITY = View("image")


def allowed(aug: AugConfig) -> dict[str, bool]:
    """The flips a training setup allows (and so TTA may use): those its augmentation applied."""
    return {"flip": bool(aug.enabled and aug.flip), "vertical_flip": bool(aug.enabled and aug.vertical_flip)}


def flips_for(extra: Mapping[str, Any], model_path: str | Path | None = None) -> dict[str, bool]:
    """The flips recorded in a manifest's extra keys; else in the run's config.json; else none."""
    record = extra.get(KEY)
    if isinstance(record, Mapping):
        return {k: bool(record.get(k)) for k in ("flip", "vertical_flip")}
    if model_path is not None:
        from core.base.config import RunConfig, from_dict
        from core.runs import rundir

        run = rundir.of_model(model_path)
        if run is not None:
            try:
                return allowed(from_dict(RunConfig, run.read_config_dict()).data.aug)
            except (OSError, ValueError, TypeError):
                pass
    return {"flip": False, "vertical_flip": False}


def views(flips: Mapping[str, bool]) -> list[View]:
    """The views TTA averages over, for a model whose training allowed these flips."""
    out = [IDENTITY]
    if flips.get("flip"):
        out.append(View("mirror left-right", hflip=True))
    if flips.get("vertical_flip"):
        out.append(View("mirror up-down", vflip=True))
    for name, dx, dy in (("left", -1, 0), ("right", 1, 0), ("up", 0, -1), ("down", 0, 1)):
        out.append(View(f"shift {name}", dx=dx * SHIFT, dy=dy * SHIFT))
    out += [View(f"zoom {s:g}", scale=s) for s in SCALES]
    return out


def describe(vs: list[View]) -> str:
    """A short sentence of what TTA averages, for help texts and captions."""
    return f"{len(vs)} views averaged: " + ", ".join(v.name for v in vs) + f" ({len(vs)}x slower)"


def apply(batch: torch.Tensor, view: View) -> torch.Tensor:
    """One view of a batch (N x C x H x W, 0..1): flipped, then shifted / zoomed about the centre, black outside."""
    x = batch
    if view.hflip:
        x = torch.flip(x, dims=[3])
    if view.vflip:
        x = torch.flip(x, dims=[2])
    if view.dx == 0 and view.dy == 0 and view.scale == 1:
        return x
    theta = torch.tensor(
        [[1 / view.scale, 0.0, -2 * view.dx], [0.0, 1 / view.scale, -2 * view.dy]],
        dtype=x.dtype,
        device=x.device,
    )
    grid = F.affine_grid(theta.expand(len(x), 2, 3), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
