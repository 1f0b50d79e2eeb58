"""The state a run resumes from: one safetensors file per run (checkpoints/resume.safetensors), rewritten
atomically at the end of an epoch, never a pickle.

When it is written (`due`): at the end of every epoch but the last planned one (a state after it cannot be resumed:
core.train.resume.read_state), unless the epochs since the last write were so short that writing again would
spend more than WRITE_SHARE of the training time on it. Epochs of a minute write every time; epochs of a few
seconds (small images on a CPU, where the ~140 MB write of a resnet18 took 8 % of each epoch, bench/README.md)
every few epochs. A crash loses the epochs after the last write; resume cuts their history rows and trains them
again.

Tensors: the model's weights (`model.*`), the optimiser's per-parameter state (`opt.<i>.<name>`: Adam's moments),
the smoothed training loss and the torch / CUDA / numpy RNG states (`rng.*`). Everything else (the epoch, the fit of
fine_tune it belongs to, step counts and other per-parameter scalars, the hyper-parameters of each parameter group,
Python's and the DataLoaders' RNG states, the loss scaler) is JSON inside the file's own metadata. The file carries
the checksum of its tensors (core.models.checkpoints) and one of its JSON, so a damaged file is refused.
"""

from __future__ import annotations

import hashlib
import json
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from fastai.callback.core import Callback, CancelEpochException

from core.base.fsutil import atomic_writer
from core.models.weightfiles import ModelFileError
from core.train.callbacks import BestCheckpoint, EpochClock
from core.train.learner import TrainingError

FORMAT = 1
WRITE_SHARE = 0.05  # the resume state's writes take at most about this share of the training time
STATE_KEY = "xrt_resume"
STATE_SHA_KEY = "xrt_resume_sha256"


@dataclass
class ResumeState:
    """A run's state at the end of epoch `epoch` (0-based, counted over every fit): tensors + JSON."""

    tensors: dict[str, torch.Tensor]
    info: dict[str, Any]
    rows: list[dict[str, Any]] = field(default_factory=list)  # history rows of epochs 0..epoch, to replay

    @property
    def epoch(self) -> int:
        return int(self.info["epoch"])


# ---------------------------------------------------------------- capture and restore


def _optimizer_state(opt) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """fastai Optimizer state, flattened: tensors by parameter index and name; scalars and hypers as JSON."""
    tensors, scalars = {}, []
    for i, (p, *_) in enumerate(opt.all_params()):
        plain = {}
        for k, v in opt.state[p].items():
            if isinstance(v, torch.Tensor):
                tensors[f"opt.{i}.{k}"] = v.detach().to("cpu").contiguous()
            else:
                plain[k] = v
        scalars.append(plain)
    return tensors, {"state": scalars, "hypers": [dict(h) for h in opt.hypers]}


def _load_optimizer(opt, tensors: dict[str, torch.Tensor], info: dict[str, Any], device) -> None:
    """Put the flattened state back into a fastai Optimizer built for the same model."""
    state = [dict(s) for s in info["state"]]
    for name, t in tensors.items():
        if name.startswith("opt."):
            _, i, k = name.split(".", 2)
            state[int(i)][k] = t.to(device)
    opt.load_state_dict({"state": state, "hypers": [dict(h) for h in info["hypers"]]})


def _rng_state(learn) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """torch, CUDA, numpy, Python and each DataLoader's RNG state (DataLoaders shuffle with their own)."""
    np_state: tuple[Any, ...] = tuple(np.random.get_state())
    tensors = {
        "rng.torch": torch.get_rng_state(),
        "rng.numpy": torch.from_numpy(np_state[1].astype(np.int64)),
    }
    if torch.cuda.is_available():
        tensors.update({f"rng.cuda.{i}": s for i, s in enumerate(torch.cuda.get_rng_state_all())})
    info = {
        "python": random.getstate(),
        "numpy": [np_state[0], *np_state[2:]],
        "dls": [dl.rng.getstate() for dl in learn.dls.loaders],
    }
    return tensors, json.loads(json.dumps(info))  # tuples -> lists, as read back


def _py_state(s: list) -> tuple:
    """A random.getstate() tuple from its JSON form."""
    return (s[0], tuple(s[1]), s[2])


def _load_rng(learn, tensors: dict[str, torch.Tensor], info: dict[str, Any]) -> None:
    """Set every RNG back to the saved state."""
    torch.set_rng_state(tensors["rng.torch"])
    cuda = [tensors[k] for k in sorted(tensors) if k.startswith("rng.cuda.")]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda[: torch.cuda.device_count()])
    name, pos, has_gauss, gauss = info["numpy"]
    np.random.set_state((name, tensors["rng.numpy"].numpy().astype(np.uint32), pos, has_gauss, gauss))
    random.setstate(_py_state(info["python"]))
    for dl, s in zip(learn.dls.loaders, info["dls"]):
        dl.rng.setstate(_py_state(s))


def _scaler(learn):
    """The fp16 loss scaler of the learner (None without mixed precision or with bf16)."""
    return getattr(getattr(learn, "mixed_precision", None), "scaler", None)


def capture(learn, epoch: int, fit: int, planned: int) -> ResumeState:
    """The learner's whole training state at the end of `epoch`."""
    opt_t, opt_info = _optimizer_state(learn.opt)
    rng_t, rng_info = _rng_state(learn)
    model = {f"model.{k}": v.detach().to("cpu").contiguous() for k, v in learn.model.state_dict().items()}
    smooth = learn.recorder.smooth_loss
    scaler = _scaler(learn)
    info = {
        "format": FORMAT,
        "epoch": epoch,
        "fit": fit,
        "planned_epochs": planned,
        "optimizer": opt_info,
        "rng": rng_info,
        "smooth_loss_count": int(smooth.count),
        "scaler": scaler.state_dict() if scaler is not None else None,
    }
    loss = torch.as_tensor(smooth.val).detach().to("cpu").reshape(1).clone()
    return ResumeState({**model, **opt_t, **rng_t, "recorder.smooth_val": loss}, info)


def restore(learn, state: ResumeState, same_fit: bool) -> None:
    """Put weights and RNGs back; in the fit the state was saved in, the optimiser, smoothed loss and scaler too
    (a new fit of fine_tune starts those afresh, as the uninterrupted run did)."""
    device = next(learn.model.parameters()).device
    weights = {k[len("model.") :]: v for k, v in state.tensors.items() if k.startswith("model.")}
    learn.model.load_state_dict({k: v.to(device) for k, v in weights.items()})
    if same_fit:
        _load_optimizer(learn.opt, state.tensors, state.info["optimizer"], device)
        smooth = learn.recorder.smooth_loss
        smooth.val, smooth.count = (
            state.tensors["recorder.smooth_val"][0].clone(),
            state.info["smooth_loss_count"],
        )
        if (scaler := _scaler(learn)) is not None and state.info.get("scaler"):
            scaler.load_state_dict(state.info["scaler"])
    _load_rng(learn, state.tensors, state.info["rng"])


# ---------------------------------------------------------------- the file


def _json_text(info: dict[str, Any]) -> str:
    return json.dumps(info, sort_keys=True, allow_nan=False)


def write(state: ResumeState, path: Path) -> None:
    """Write the state as one safetensors file through a synced temp file and a rename."""
    from safetensors.torch import save_file

    from core.models.checkpoints import checkpoint_metadata

    text = _json_text(state.info)
    meta = {
        **checkpoint_metadata(state.tensors),
        STATE_KEY: text,
        STATE_SHA_KEY: hashlib.sha256(text.encode()).hexdigest(),
    }
    try:
        with atomic_writer(path) as tmp:
            save_file(state.tensors, str(tmp), metadata=meta)
    except OSError as err:
        raise TrainingError(
            f"could not write the resume state {Path(path).name}: {err.strerror or err}"
        ) from err


def read(path: Path) -> ResumeState:
    """The state after every check (structure, tensor checksum, JSON checksum, finite values, format); else a
    ModelFileError with one plain reason."""
    from safetensors import safe_open

    from core.models.checkpoints import read_checkpoint

    tensors = read_checkpoint(path)
    with safe_open(str(path), framework="pt", device="cpu") as f:
        meta = f.metadata() or {}
    text = meta.get(STATE_KEY, "")
    if not text or hashlib.sha256(text.encode()).hexdigest() != meta.get(STATE_SHA_KEY):
        raise ModelFileError(f"the resume state {Path(path).name} is incomplete or was changed")
    info = json.loads(text)
    if info.get("format") != FORMAT:
        raise ModelFileError(
            f"the resume state {Path(path).name} was written by another version (format {info.get('format')})"
        )
    return ResumeState(tensors, info)


# ---------------------------------------------------------------- callbacks


def due(epoch: int, planned: int, trained_s: float | None, last_write_s: float) -> bool:
    """Whether to write the state after `epoch` (0-based): not after the last planned epoch; else when nothing was
    written yet, or the epochs trained since the last write took at least that write's duration / WRITE_SHARE."""
    if epoch + 1 >= planned:
        return False
    return trained_s is None or trained_s * WRITE_SHARE >= last_write_s


class SaveResumeState(Callback):
    """At an epoch's end (after the best checkpoint), the state to resume from when `due`; not for replayed epochs."""

    order = 62.5

    def __init__(self, path: Path, clock: EpochClock, planned: int):
        self.path, self.clock, self.planned = Path(path), clock, planned
        self.trained_s: float | None = (
            None  # seconds of epochs since the last write (None: nothing written yet)
        )
        self.last_s, self.t0 = 0.0, 0.0  # how long the last write took; when this epoch began

    def before_epoch(self):
        """Note when the epoch begins."""
        self.t0 = time.perf_counter()

    def after_epoch(self):
        """Capture and write the state of the epoch that just ended, when due."""
        if self.clock.replaying():
            return
        start = time.perf_counter()
        if self.trained_s is not None:
            self.trained_s += start - self.t0
        if due(self.clock.now(), self.planned, self.trained_s, self.last_s):
            # the best checkpoint on disk must not be older than the state resumed from
            for cb in self.learn.cbs:
                if isinstance(cb, BestCheckpoint):
                    cb.flush()
            write(capture(self.learn, self.clock.now(), self.clock.fits, self.planned), self.path)
            self.trained_s, self.last_s = 0.0, time.perf_counter() - start


class ResumeFrom(Callback):
    """Skips the epochs the state covers (their history rows replay through the clock) and restores the state
    before the first epoch that trains."""

    order = 56  # after the clock, before anything that reads the epoch

    def __init__(self, state: ResumeState, clock: EpochClock):
        self.state, self.clock, self.done = state, clock, False

    def before_epoch(self):
        """Skip a covered epoch; at the first one that is not, load the state."""
        if self.clock.replaying():
            raise CancelEpochException()
        if not self.done:
            restore(self.learn, self.state, same_fit=self.state.info["fit"] == self.clock.fits)
            self.done = True


def callbacks(run, clock: EpochClock, t, resume: ResumeState | None) -> list[Callback]:
    """A single run's resume callbacks (run: RunFolder, t: TrainConfig): save the state at each epoch's end,
    and when resuming, skip the epochs it covers and restore it."""
    saving: list[Callback] = [SaveResumeState(run.resume_state, clock, t.planned_epochs())]
    return saving + ([ResumeFrom(resume, clock)] if resume is not None else [])
