"""A user's training choices -> RunConfig: the defaults and the one mapping shared by the CLI, the UI and benchmarks.

Both doors (CLI flags, setup-page widgets) turn what the user chose into a `Choices` and call `build_config`;
device-dependent defaults (CPU vs GPU) come from `device_defaults` only.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, fields

from core.base.config import RunConfig, SourceConfig, aug_preset


@dataclass(frozen=True)
class DeviceDefaults:
    """Starting sizes that suit the machine a run trains on."""

    img_size: int
    epochs: int
    batch_size: int
    lr_find_steps: int  # LR finder steps: about a minute on a CPU at the CPU defaults


CPU_DEFAULTS = DeviceDefaults(img_size=128, epochs=3, batch_size=32, lr_find_steps=30)
GPU_DEFAULTS = DeviceDefaults(img_size=224, epochs=5, batch_size=64, lr_find_steps=100)
KFOLD_DEFAULT = 5  # folds when k-fold cross-validation is asked for without a number


def on_devices(field: str) -> str:
    """A device-dependent default as words for help texts: '128 on a CPU, 224 on a GPU'."""
    return f"{getattr(CPU_DEFAULTS, field)} on a CPU, {getattr(GPU_DEFAULTS, field)} on a GPU"


def has_gpu() -> bool:
    """True when PyTorch sees a CUDA GPU."""
    import torch

    return torch.cuda.is_available()


def device_defaults(gpu: bool | None = None) -> DeviceDefaults:
    """Small and quick on a CPU, the usual ImageNet size on a GPU (`gpu` None: ask PyTorch)."""
    return GPU_DEFAULTS if (has_gpu() if gpu is None else gpu) else CPU_DEFAULTS


def default_split(source: SourceConfig) -> str:
    """Split by patient when patient ids are known (a group column or DICOM tag), else stratified."""
    return "group" if source.group_col or source.group_tag else "stratified"


def default_config(
    source: SourceConfig | None = None, gpu: bool | None = None, pretrained: bool = True
) -> RunConfig:
    """Starting values of a run: device defaults, ImageNet weights (or from scratch), split by patient when known."""
    cfg = RunConfig(source=copy.deepcopy(source) if source is not None else SourceConfig())
    dd = device_defaults(gpu)
    cfg.data.img_size, cfg.train.epochs, cfg.data.batch_size = dd.img_size, dd.epochs, dd.batch_size
    cfg.train.pretrained = pretrained
    if not pretrained:
        cfg.train.freeze_epochs = 0  # no frozen phase from scratch
    cfg.data.split.method = default_split(cfg.source)
    return cfg


@dataclass
class Choices:
    """What a user chose at either door; None keeps the base config's value."""

    name: str | None = None
    arch: str | None = None
    pretrained: bool | None = None
    weights_path: str | None = None
    epochs: int | None = None
    freeze_epochs: int | None = None
    lr: float | None = None
    default_lr: bool = (
        False  # True: no learning rate of one's own (the schedule's default), even over a base's
    )
    weight_decay: float | None = None
    early_stop_patience: int | None = None
    monitor: str | None = None
    final_weights: str | None = None
    imbalance: str | None = None
    seed: int | None = None  # training and split seed
    final_model_on_all: bool | None = None
    img_size: int | None = None
    channels: str | None = None
    resize: str | None = None
    batch_size: int | None = None
    normalize: str | None = None
    num_workers: int | None = None
    aug_preset: str | None = None  # applied first; the single augmentation choices below override it
    augment: bool | None = None
    flip: bool | None = None
    vertical_flip: bool | None = None
    rotate: float | None = None
    zoom: float | None = None
    warp: float | None = None
    brightness: float | None = None
    contrast: float | None = None
    split_method: str | None = None
    valid_pct: float | None = None
    test_pct: float | None = None
    k_folds: int | None = None
    keep_duplicates: bool | None = None
    torch_threads: int | None = None
    mixed_precision: str | None = None
    channels_last: str | None = None


_TARGETS = {  # Choices field -> (RunConfig section, attribute); fields not listed have rules of their own
    "arch": ("train", "arch"),
    "pretrained": ("train", "pretrained"),
    "weights_path": ("train", "weights_path"),
    "epochs": ("train", "epochs"),
    "freeze_epochs": ("train", "freeze_epochs"),
    "lr": ("train", "lr"),
    "weight_decay": ("train", "weight_decay"),
    "early_stop_patience": ("train", "early_stop_patience"),
    "monitor": ("train", "monitor"),
    "final_weights": ("train", "final_weights"),
    "imbalance": ("train", "imbalance"),
    "final_model_on_all": ("train", "final_model_on_all"),
    "torch_threads": ("train", "torch_threads"),
    "mixed_precision": ("train", "mixed_precision"),
    "channels_last": ("train", "channels_last"),
    "img_size": ("data", "img_size"),
    "channels": ("data", "channels"),
    "resize": ("data", "resize"),
    "batch_size": ("data", "batch_size"),
    "normalize": ("data", "normalize"),
    "num_workers": ("data", "num_workers"),
    "augment": ("aug", "enabled"),
    "flip": ("aug", "flip"),
    "vertical_flip": ("aug", "vertical_flip"),
    "rotate": ("aug", "rotate"),
    "zoom": ("aug", "zoom"),
    "warp": ("aug", "warp"),
    "brightness": ("aug", "brightness"),
    "contrast": ("aug", "contrast"),
    "split_method": ("split", "method"),
    "valid_pct": ("split", "valid_pct"),
    "test_pct": ("split", "test_pct"),
    "k_folds": ("split", "k_folds"),
    "keep_duplicates": ("split", "keep_duplicates"),
}


def _sections(cfg: RunConfig) -> dict[str, object]:
    """The parts of a RunConfig that choices land in, by name."""
    return {"train": cfg.train, "data": cfg.data, "aug": cfg.data.aug, "split": cfg.data.split}


def build_config(
    choices: Choices,
    base: RunConfig | None = None,
    source: SourceConfig | None = None,
    gpu: bool | None = None,
) -> RunConfig:
    """The validated RunConfig of `choices` over `base` (None: this machine's defaults for `source`)."""
    cfg = copy.deepcopy(base) if base is not None else default_config(source, gpu)
    if base is not None and source is not None:
        cfg.source = copy.deepcopy(source)
    if choices.aug_preset is not None:
        cfg.data.aug = aug_preset(choices.aug_preset)
    parts = _sections(cfg)
    for f in fields(choices):
        value = getattr(choices, f.name)
        if value is not None and f.name in _TARGETS:
            section, attr = _TARGETS[f.name]
            setattr(parts[section], attr, value)
    if choices.default_lr:
        cfg.train.lr = None
    if choices.seed is not None:
        cfg.train.seed = cfg.data.split.seed = choices.seed
    if choices.name is not None:
        cfg.name = choices.name.strip()
    if not cfg.train.fine_tunes():
        cfg.train.freeze_epochs = 0  # from scratch there is no frozen phase: the config says what runs
    return cfg.validate()
