"""fastai's Adam with PyTorch's fused update: the optimiser fastai computes, a fraction of the time on a CPU.

fastai's `Adam` runs five Python callbacks per parameter per step (weight decay, two moment averages,
the step count, the update), a dozen tensor operations and three temporaries of the parameter's size each. On a CPU
with small images that cost as much as the forward and backward passes together (resnet18, batch 8, 32 px: ~250 ms
a step against ~35 ms for the fused kernel, bench/README.md). `FusedAdam` keeps fastai's Optimizer (hyper-parameters
and their one-cycle schedules, parameter groups, frozen groups, no weight decay where `do_wd` is off, its state and
`state_dict`, so a resume state reads either way) and updates each group in one call of
`torch.optim.adamw.adamw(fused=True)`: the same formulas (moments with dampening, bias correction, eps added after
the square root, decoupled decay), equal to fastai's up to float rounding (tests/test_optim.py). Where the fused
kernel cannot run (another device or dtype) the step is fastai's own.
"""

from __future__ import annotations

from functools import partial
from typing import Any, cast

import torch
from fastai.optimizer import Optimizer, adam_step, average_grad, average_sqr_grad, step_stat, weight_decay

FUSED_DEVICES = ("cpu", "cuda")  # where torch's fused Adam(W) kernel runs (others take fastai's step)
FUSED_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)


class FusedAdam(Optimizer):
    """fastai's `Adam(decouple_wd=True)`, its update done by torch's fused AdamW kernel per parameter group."""

    def __init__(self, params, lr, mom=0.9, sqr_mom=0.99, eps=1e-5, wd=0.01):
        cbs = [weight_decay, partial(average_grad, dampening=True), average_sqr_grad, step_stat, adam_step]
        super().__init__(params, cbs, lr=lr, mom=mom, sqr_mom=sqr_mom, eps=eps, wd=wd)

    def step(self, closure=None):
        """One Adam step of every parameter with a gradient (fastai's own step where fusing is not possible)."""
        if closure is not None:
            raise TypeError(
                "FusedAdam.step takes no closure (as fastai's optimizers: the loss is computed before)"
            )
        todo = [(p, h) for p, _, _, h in self.all_params(with_grad=True)]
        if not all(fusable(p) for p, _ in todo):
            return super().step()
        for batch in _batches(todo, self.state):
            self._fused(batch.params, batch.hyper, batch.wd)
        return None

    def zero_grad(self):
        """Drop the gradients (None, as torch's optimisers do) instead of zeroing them in place: the next backward
        writes the same values afresh, without a pass over every gradient (a parameter without a gradient is
        skipped by the step either way)."""
        for p, *_ in self.all_params(with_grad=True):
            p.grad = None

    def _fused(self, params: list[torch.Tensor], hyper: dict[str, Any], wd: float) -> None:
        """Update `params` (one group, one weight decay) in one fused call; fastai's state keys stay the same."""
        from torch.optim.adamw import adamw

        states = [self.state[p] for p in params]
        for p, s in zip(params, states):
            if s.get("grad_avg") is None:
                s["grad_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            if s.get("sqr_avg") is None:
                s["sqr_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        steps = [
            torch.full((), float(s.get("step", 0)), dtype=torch.float32, device=p.device)
            for p, s in zip(params, states)
        ]
        with torch.no_grad():
            adamw(
                [p.data for p in params],
                [cast(torch.Tensor, p.grad) for p in params],
                [s["grad_avg"] for s in states],
                [s["sqr_avg"] for s in states],
                [],
                steps,
                fused=True,
                amsgrad=False,
                beta1=float(hyper["mom"]),
                beta2=float(hyper["sqr_mom"]),
                lr=float(hyper["lr"]),
                weight_decay=float(wd),
                eps=float(hyper["eps"]),
                maximize=False,
            )
        for s in states:
            s["step"] = int(s.get("step", 0)) + 1


class _Batch:
    """Parameters of one group sharing one weight decay: one fused call."""

    def __init__(self, hyper: dict[str, Any], wd: float):
        self.hyper, self.wd = hyper, wd
        self.params: list[torch.Tensor] = []


def _batches(todo: list[tuple[torch.Tensor, dict[str, Any]]], state) -> list[_Batch]:
    """Parameters grouped by their hyper-parameters (one dict per fastai group) and whether they are decayed."""
    out: dict[tuple[int, bool], _Batch] = {}
    for p, hyper in todo:
        decay = bool(state[p].get("do_wd", True)) and hyper["wd"] != 0
        key = (id(hyper), decay)
        if key not in out:
            out[key] = _Batch(hyper, hyper["wd"] if decay else 0.0)
        out[key].params.append(p)
    return list(out.values())


def fusable(p: torch.Tensor) -> bool:
    """Whether torch's fused kernel can update this parameter (device, dtype, dense gradient)."""
    g = p.grad
    return (
        p.device.type in FUSED_DEVICES
        and p.dtype in FUSED_DTYPES
        and g is not None
        and not g.is_sparse
        and g.dtype == p.dtype
        and g.device == p.device
    )
