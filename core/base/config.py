"""Typed run configuration: dataclasses with a JSON round-trip (one config per run)."""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from core.base.fsutil import atomic_write_text

if typing.TYPE_CHECKING:
    from _typeshed import DataclassInstance

T = TypeVar("T", bound="DataclassInstance")

SOURCE_KINDS = ("folder", "csv", "dicom", "sample")
SPLIT_METHODS = ("random", "stratified", "group", "column", "folder")
RESIZE_METHODS = ("squish", "pad", "crop")
CHANNELS = ("rgb", "grey")
NORMALIZE = ("auto", "imagenet", "dataset", "none")
IMBALANCE = ("none", "weighted_loss", "oversample")
MONITORS = ("valid_loss", "accuracy", "balanced_accuracy", "roc_auc")
FINAL_WEIGHTS = ("auto", "last", "best")


class ConfigError(ValueError):
    """A configuration value that cannot work, with a message for the user."""


# a fixed centre/width; each image's 1st-99th percentiles; each image's min-max
WINDOW_MODES = ("fixed", "auto", "full")


@dataclass
class Window:
    """A DICOM display window: centre/width in modality units (after rescale), or one set per image ("auto", "full")."""

    center: float = 0.0
    width: float = 1.0
    mode: str = "fixed"

    def validate(self) -> None:
        """Refuse an unknown mode, and a fixed window narrower than DICOM allows (PS3.3 C.11.2.1.2: LINEAR >= 1)."""
        _choice("window mode", self.mode, WINDOW_MODES)
        if self.mode == "fixed" and not self.width >= 1:
            raise ConfigError(f"window width must be at least 1, got {self.width}")


@dataclass
class SourceConfig:
    """Where the images and labels come from."""

    kind: str = "folder"
    root: str = ""
    csv_path: str = ""
    path_col: str = "path"
    label_col: str = "label"
    group_col: str = ""
    split_col: str = ""
    label_tag: str = ""
    group_tag: str = ""
    test_root: str = ""

    def validate(self) -> None:
        """Check the choice of source is one we know."""
        _choice("source kind", self.kind, SOURCE_KINDS)


@dataclass
class SplitConfig:
    """How items are split into train / valid / test, and k-fold settings."""

    method: str = "stratified"
    valid_pct: float = 0.2
    test_pct: float = 0.0
    k_folds: int = 0
    seed: int = 42
    keep_duplicates: bool = False  # near-duplicate images (perceptual hash) stay in one split / fold

    def validate(self) -> None:
        """Check fractions and fold counts."""
        _choice("split method", self.method, SPLIT_METHODS)
        if not 0 <= self.valid_pct < 1 or not 0 <= self.test_pct < 1 or self.valid_pct + self.test_pct >= 1:
            raise ConfigError(
                f"valid_pct={self.valid_pct} and test_pct={self.test_pct} must leave training data"
            )
        if self.k_folds == 1 or self.k_folds < 0:
            raise ConfigError(f"k_folds must be 0 (no cross-validation) or >= 2, got {self.k_folds}")


@dataclass
class AugConfig:
    """Augmentation with X-ray-safe defaults (horizontal flip only, mild affine and lighting)."""

    enabled: bool = True
    flip: bool = True
    vertical_flip: bool = False
    rotate: float = 10.0
    zoom: float = 1.1
    warp: float = 0.1
    brightness: float = 0.2
    contrast: float = 0.2
    p_affine: float = 0.75
    p_lighting: float = 0.75

    def validate(self) -> None:
        """Check ranges of augmentation strengths."""
        if self.rotate < 0 or self.rotate > 180:
            raise ConfigError(f"rotate must be within 0..180 degrees, got {self.rotate}")
        if self.zoom < 1:
            raise ConfigError(f"zoom is a maximum scale >= 1, got {self.zoom}")
        for name in ("warp", "brightness", "contrast", "p_affine", "p_lighting"):
            if not 0 <= getattr(self, name) <= 1:
                raise ConfigError(f"{name} must be within 0..1, got {getattr(self, name)}")


AUG_PRESETS: dict[
    str, dict[str, Any]
] = {  # name -> AugConfig overrides ("fastai": aug_transforms() defaults; lighting as brightness+contrast)
    "default": {},
    "fastai": {"warp": 0.2},
    "none": {"enabled": False},
}


def aug_preset(name: str) -> AugConfig:
    """The augmentation settings of a named preset."""
    _choice("augmentation preset", name, tuple(AUG_PRESETS))
    return AugConfig(**AUG_PRESETS[name])


@dataclass
class DataConfig:
    """How items become batches: size, channels, resize, batches, augmentation, split."""

    img_size: int = 224
    channels: str = "rgb"
    resize: str = "squish"
    batch_size: int = 32
    num_workers: int = -1  # DataLoader worker processes; negative = auto (0 on CPU, several on a GPU)
    # auto: ImageNet's statistics when starting from weights, the training images' own from scratch
    normalize: str = "auto"
    window: Window | None = None
    frame: int = 0
    use_cache: bool = True
    aug: AugConfig = field(default_factory=AugConfig)
    split: SplitConfig = field(default_factory=SplitConfig)
    train_fraction: float = 1.0  # share of the training split used (seeded, stratified); valid/test unchanged

    def validate(self) -> None:
        """Check every field and nested config."""
        if not 16 <= self.img_size <= 2048:
            raise ConfigError(f"img_size must be within 16..2048, got {self.img_size}")
        if self.batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {self.batch_size}")
        _choice("channels", self.channels, CHANNELS)
        _choice("resize", self.resize, RESIZE_METHODS)
        _choice("normalize", self.normalize, NORMALIZE)
        if self.window is not None:
            self.window.validate()
        self.aug.validate()
        self.split.validate()
        if not 0 < self.train_fraction <= 1:
            raise ConfigError(f"train_fraction must be within (0, 1], got {self.train_fraction}")
        if self.train_fraction < 1 and self.split.k_folds >= 2:
            raise ConfigError("train_fraction below 1 is for single-split runs, not k-fold cross-validation")


@dataclass
class TrainConfig:
    """Model and optimisation settings."""

    arch: str = "resnet18"
    pretrained: bool = True
    weights_path: str = ""
    epochs: int = 5
    freeze_epochs: int = 1
    lr: float | None = None
    weight_decay: float | None = None
    mixed_precision: str = "auto"
    channels_last: str = "auto"
    early_stop_patience: int = 0
    monitor: str = "valid_loss"
    final_weights: str = (
        "auto"  # the saved model: "last" epoch, "best" checkpoint; auto = best only with early stopping
    )
    imbalance: str = "none"
    seed: int = 42
    final_model_on_all: bool = False
    torch_threads: int = 0  # 0 = auto: $XRT_TORCH_THREADS, else every core this process may use

    def fine_tunes(self) -> bool:
        """True when training starts from weights (ImageNet or a file): fine_tune with a frozen phase first."""
        return bool(self.pretrained or self.weights_path)

    def planned_epochs(self) -> int:
        """Epochs a run trains: `epochs`, plus `freeze_epochs` only when fine-tuning (never from scratch)."""
        return self.epochs + (self.freeze_epochs if self.fine_tunes() else 0)

    def validate(self) -> None:
        """Check epochs, learning rate and choices."""
        if self.epochs < 1 or self.freeze_epochs < 0:
            raise ConfigError(
                f"epochs must be >= 1 and freeze_epochs >= 0 (got {self.epochs}, {self.freeze_epochs})"
            )
        if self.torch_threads < 0:
            raise ConfigError(f"torch_threads must be >= 0 (0 = auto), got {self.torch_threads}")
        if self.lr is not None and not 0 < self.lr < 10:
            raise ConfigError(f"learning rate must be within (0, 10), got {self.lr}")
        _choice("monitor", self.monitor, MONITORS)
        _choice("final_weights", self.final_weights, FINAL_WEIGHTS)
        _choice("imbalance", self.imbalance, IMBALANCE)
        _choice("mixed_precision", self.mixed_precision, ("auto", "on", "off"))
        _choice("channels_last", self.channels_last, ("auto", "on", "off"))


@dataclass
class RunConfig:
    """Everything needed to reproduce one run."""

    name: str = ""
    source: SourceConfig = field(default_factory=SourceConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def validate(self) -> RunConfig:
        """Validate every section; return self for chaining."""
        self.source.validate()
        self.data.validate()
        self.train.validate()
        return self


def _choice(name: str, value: str, allowed: tuple[str, ...]) -> None:
    """Refuse a value outside a fixed set of choices."""
    if value not in allowed:
        raise ConfigError(f"{name} must be one of {', '.join(allowed)}; got {value!r}")


def to_dict(cfg: Any) -> dict[str, Any]:
    """A dataclass config as plain JSON-able values."""
    return dataclasses.asdict(cfg)


def from_dict(cls: type[T], data: dict[str, Any]) -> T:
    """Build a (nested) dataclass from plain values; unknown keys are an error."""
    if not isinstance(data, dict):
        raise ConfigError(f"{cls.__name__} expects a JSON object, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(data) - names
    if unknown:
        raise ConfigError(f"unknown {cls.__name__} field(s): {', '.join(sorted(unknown))}")
    kwargs = {k: _convert(hints[k], v) for k, v in data.items()}
    return cls(**kwargs)


def _convert(tp: Any, value: Any) -> Any:
    """Convert a plain value to the annotated type (nested dataclasses, Optional)."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None:
            return None
        inner = [a for a in typing.get_args(tp) if a is not type(None)]
        return _convert(inner[0], value)
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return from_dict(tp, value)
    if tp is float and isinstance(value, int):
        return float(value)
    return value


def save_json(cfg: Any, path: str | Path) -> None:
    """Write a config as indented JSON."""
    atomic_write_text(path, json.dumps(to_dict(cfg), indent=2))


def load_json(cls: type[T], path: str | Path) -> T:
    """Read a config written by save_json."""
    return from_dict(cls, json.loads(Path(path).read_text()))
