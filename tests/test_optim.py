"""The fused Adam computes what fastai's Adam computes; the resume state's write rule; progress.json unsynced."""

from __future__ import annotations

import copy
import os
import sys

import pytest
import torch
from fastai.optimizer import Adam

from core.base.config import RunConfig, SourceConfig
from core.runs.progress import Progress
from core.train import optim, resume_state
from core.train.optim import FusedAdam


def _model() -> torch.nn.Sequential:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(5, 7), torch.nn.BatchNorm1d(7), torch.nn.Linear(7, 3))


def _groups(m: torch.nn.Sequential) -> list[list[torch.nn.Parameter]]:
    """Two parameter groups, as fastai's splitters give (body, head)."""
    return [[*m[0].parameters(), *m[1].parameters()], list(m[2].parameters())]


def _pair(wd: float = 0.1):
    """(fastai's Adam, FusedAdam) on two copies of one model; BatchNorm without weight decay, as fastai sets it."""
    m1 = _model()
    m2 = copy.deepcopy(m1)
    opts = (Adam(_groups(m1), lr=1e-2, wd=wd), FusedAdam(_groups(m2), lr=1e-2, wd=wd))
    for o, m in zip(opts, (m1, m2)):
        for p in m[1].parameters():
            o.state[p]["do_wd"] = False
    return opts, (m1, m2)


def _steps(opts, models, n: int, seed: int = 1, frozen: bool = False) -> None:
    """n steps with planted gradients and one-cycle-like changing hyper-parameters (per group lr, mom)."""
    g = torch.Generator().manual_seed(seed)
    for k in range(n):
        grads = [torch.randn(p.shape, generator=g) for p in models[0].parameters()]
        for o, m in zip(opts, models):
            o.set_hyper("lr", [1e-3 * (k + 1), 3e-3 * (k + 1)])
            o.set_hyper("mom", 0.95 - 0.01 * k)
            for i, (p, grad) in enumerate(zip(m.parameters(), grads)):
                p.grad = None if (frozen and i < 2) else grad.clone()
            o.step()
            o.zero_grad()


def _assert_same(opts, models) -> None:
    for a, b in zip(models[0].parameters(), models[1].parameters()):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-6)
    for pa, pb in zip(models[0].parameters(), models[1].parameters()):
        sa, sb = opts[0].state[pa], opts[1].state[pb]
        assert sa.get("step") == sb.get("step")
        for key in ("grad_avg", "sqr_avg"):
            if key in sa:
                torch.testing.assert_close(sb[key], sa[key], rtol=1e-5, atol=1e-7)


def test_fused_adam_matches_fastai_adam_step_by_step():
    opts, models = _pair()
    _steps(opts, models, 20)
    _assert_same(opts, models)
    assert opts[1].state[next(models[1].parameters())]["step"] == 20
    assert all(p.grad is None for p in models[1].parameters())  # zero_grad drops gradients


def test_fused_adam_skips_parameters_without_gradients_as_fastai_does():
    opts, models = _pair()
    before = [p.detach().clone() for p in models[1].parameters()][:2]
    _steps(opts, models, 5, frozen=True)  # the first Linear never gets a gradient (a frozen body)
    _assert_same(opts, models)
    for p, b in zip(list(models[1].parameters())[:2], before):
        assert torch.equal(p, b) and "step" not in opts[1].state[p]


def test_fused_adam_state_dict_continues_in_fastai_adam_and_back():
    """A resume state written by either optimiser goes on in the other (same state keys)."""
    opts, models = _pair()
    _steps(opts, models, 4)
    fused_into_fastai = Adam(_groups(models[1]), lr=1e-2, wd=0.1)
    fused_into_fastai.load_state_dict(opts[1].state_dict())
    fastai_into_fused = FusedAdam(_groups(models[0]), lr=1e-2, wd=0.1)
    fastai_into_fused.load_state_dict(opts[0].state_dict())
    _steps((fastai_into_fused, fused_into_fastai), models, 4, seed=2)
    _assert_same((fastai_into_fused, fused_into_fastai), models)


def test_fused_adam_falls_back_to_fastais_step_where_the_kernel_cannot_run(monkeypatch):
    monkeypatch.setattr(optim, "FUSED_DEVICES", ())
    called = []
    kernels = sys.modules["torch.optim.adamw"]
    monkeypatch.setattr(kernels, "adamw", lambda *a, **k: called.append(1))  # must not be used
    opts, models = _pair()
    _steps(opts, models, 3)
    _assert_same(opts, models)
    assert not called


def test_the_apps_learner_steps_with_fused_adam_as_fastais_adam_would(tmp_path):
    """make_learner's optimiser is FusedAdam; one step of the app's resnet18 from the same gradients lands where
    fastai's Adam lands (a whole fit is not compared: batch-norm on tiny batches turns rounding into different
    gradients at the next step, as another thread count would)."""
    from core.data.loaders import build_dataloaders
    from core.train.learner import make_learner
    from tests.synth import blob_dataset

    cfg = RunConfig(source=SourceConfig(kind="folder", root=str(blob_dataset(tmp_path, n_per_class=4))))
    cfg.data.img_size, cfg.data.batch_size, cfg.train.pretrained = 32, 4, False
    learn = make_learner(build_dataloaders(_items(cfg), cfg.data, from_weights=False), cfg)
    learn.create_opt()
    assert isinstance(learn.opt, FusedAdam)
    twin = copy.deepcopy(learn.model)
    reference = Adam(learn.splitter(twin), lr=3e-3, wd=0.01)
    for p, q in zip(learn.model.parameters(), twin.parameters()):
        reference.state[q]["do_wd"] = learn.opt.state[p].get("do_wd", True)
    learn.opt.set_hypers(lr=3e-3, wd=0.01)
    x, y = learn.dls.one_batch()
    for model, opt in ((learn.model, learn.opt), (twin, reference)):
        torch.manual_seed(0)  # the same dropout masks
        model.train()
        learn.loss_func(model(x.as_subclass(torch.Tensor)), y.as_subclass(torch.Tensor)).backward()
        opt.step()
    for a, b in zip(learn.model.parameters(), twin.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def _items(cfg: RunConfig):
    from core.data.sources import load_source
    from core.data.splits import assign_splits

    return assign_splits(load_source(cfg.source).items, cfg.data.split, "single")


@pytest.mark.parametrize(
    ("epoch", "planned", "trained_s", "last_write_s", "due"),
    [
        (0, 10, None, 0.0, True),  # nothing written yet
        (9, 10, None, 0.0, False),  # the last planned epoch: its state could not be resumed
        (3, 10, 10.0, 1.0, False),  # 10 s of epochs for a 1 s write: 10 % of the time, over the 5 % share
        (3, 10, 20.0, 1.0, True),  # 20 s: 5 %
        (3, 10, 60.0, 0.5, True),  # long epochs write every time
    ],
)
def test_resume_state_is_written_unless_too_soon_or_after_the_last_epoch(
    epoch, planned, trained_s, last_write_s, due
):
    assert resume_state.due(epoch, planned, trained_s, last_write_s) is due


def test_progress_json_is_atomic_but_not_fsynced(tmp_path, monkeypatch):
    synced = []
    real = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(fd), real(fd)))
    progress = Progress(tmp_path / "run")
    progress.update(force=True, phase="training", epoch=1)
    progress.update(force=True, epoch=2)
    assert progress.folder.read_progress()["epoch"] == 2
    assert not synced
    progress.folder.write("metrics.json", {"a": 1})  # run files keep their fsync
    assert synced
