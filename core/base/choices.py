"""A user's training choices -> RunConfig: the defaults and the one mapping shared by the CLI, the UI and benchmarks.

Both doors (CLI flags, setup-page widgets) turn what the user chose into `Choices` (setting name -> value, the names of
the schema declared beside RunConfig's fields) and call `build_config`; device-dependent defaults (CPU vs GPU) are
declared on their fields (cpu=, gpu=) and read through `device_defaults` only.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from core.base.config import ConfigError, RunConfig, SourceConfig, aug_preset
from core.base.fsutil import split_layout
from core.base.plan import DataFacts, plan_schedule
from core.base.schema import put, walk


@dataclass(frozen=True)
class DeviceDefaults:
    """Starting sizes that suit the machine a run trains on."""

    img_size: int
    epochs: int
    batch_size: int
    lr_find_steps: int  # LR finder steps: about a minute on a CPU at the CPU defaults


SETTINGS = walk(RunConfig)  # every user setting, declared beside its field in core.base.config
DEVICE_SETTINGS = [s for s in SETTINGS.values() if s.meta.cpu is not None]  # img_size, epochs, batch_size
CPU_DEFAULTS = DeviceDefaults(**{s.name: s.meta.cpu for s in DEVICE_SETTINGS}, lr_find_steps=30)
GPU_DEFAULTS = DeviceDefaults(**{s.name: s.meta.gpu for s in DEVICE_SETTINGS}, lr_find_steps=100)
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
    """The folders' own split when a folder has train/ and valid/ (val/) sub-folders; else by patient when patient
    ids are known (a group column or DICOM tag); else stratified."""
    by_folder = source.kind == "folder" or (source.kind == "dicom" and not source.label_tag)
    if by_folder and str(source.root).strip() and {"train", "valid"} <= split_layout(source.root):
        return "folder"
    return "group" if source.group_col or source.group_tag else "stratified"


def default_config(
    source: SourceConfig | None = None,
    gpu: bool | None = None,
    pretrained: bool = True,
    facts: DataFacts | None = None,
) -> RunConfig:
    """Starting values of a run: device defaults (from scratch with `facts`: the schedule planned for the data,
    core.base.plan), ImageNet weights (or from scratch), the folders' split or by patient when known."""
    cfg = RunConfig(source=copy.deepcopy(source) if source is not None else SourceConfig())
    gpu = has_gpu() if gpu is None else gpu
    dd = device_defaults(gpu)
    planned = plan_schedule(facts, pretrained, dd, gpu).choices() if facts is not None else {}
    for s in DEVICE_SETTINGS:
        put(cfg, s.path, planned.get(s.name, getattr(dd, s.name)))
    cfg.train.pretrained = pretrained
    if not pretrained:
        cfg.train.freeze_epochs = 0  # no frozen phase from scratch
    cfg.data.split.method = default_split(cfg.source)
    return cfg


Choices = dict[str, Any]  # setting name (SETTINGS) or an EXTRAS name -> value; None keeps the base's value
EXTRAS = {  # choices that are no single field, with their own rules in build_config
    "aug_preset": "a named augmentation preset, applied before the single augmentation settings",
    "default_lr": "True: no learning rate of one's own (the schedule's default), even over a base's",
}


def check_names(choices: Mapping[str, Any]) -> None:
    """Refuse a choice that names no setting, listing the known ones."""
    unknown = sorted(set(choices) - set(SETTINGS) - set(EXTRAS))
    if unknown:
        raise ConfigError(
            f"unknown setting(s) {', '.join(unknown)}; known: {', '.join([*SETTINGS, *EXTRAS])}"
        )


def build_config(
    choices: Mapping[str, Any],
    base: RunConfig | None = None,
    source: SourceConfig | None = None,
    gpu: bool | None = None,
    facts: DataFacts | None = None,
) -> RunConfig:
    """The validated RunConfig of `choices` over `base` (None: this machine's defaults for `source`, planned for
    the data when its `facts` are given)."""
    pretrained = choices.get("pretrained") is not False or bool(choices.get("weights_path"))
    cfg = copy.deepcopy(base) if base is not None else default_config(source, gpu, pretrained, facts)
    if base is not None and source is not None:
        cfg.source = copy.deepcopy(source)
    check_names(choices)
    if choices.get("aug_preset") is not None:
        cfg.data.aug = aug_preset(choices["aug_preset"])
    for name, value in choices.items():
        if value is None or name in EXTRAS:
            continue
        s = SETTINGS[name]
        value = s.check(value.strip() if isinstance(value, str) else value)
        for path in (s.path, *s.meta.also):
            put(cfg, path, value)
    if choices.get("default_lr"):
        cfg.train.lr = None
    if not cfg.train.fine_tunes():
        cfg.train.freeze_epochs = 0  # from scratch there is no frozen phase: the config says what runs
    return cfg.validate()
