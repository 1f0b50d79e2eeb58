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
from core.base.schema import ConfigError, check_declared, setting

if typing.TYPE_CHECKING:
    from _typeshed import DataclassInstance

T = TypeVar("T", bound="DataclassInstance")

SOURCE_KINDS = ("folder", "csv", "dicom", "sample")
SPLIT_METHODS = ("random", "stratified", "group", "column", "folder", "loso")  # loso: leave one site out
RESIZE_METHODS = ("squish", "pad", "crop")
CHANNELS = ("rgb", "grey")
NORMALIZE = ("auto", "imagenet", "dataset", "none")
IMBALANCE = ("none", "weighted_loss", "oversample")
MONITORS = ("valid_loss", "accuracy", "balanced_accuracy", "roc_auc")
FINAL_WEIGHTS = ("auto", "last", "best")
AUTO_ON_OFF = ("auto", "on", "off")
TASK_TYPES = (
    "single",
    "multilabel",
    "ordinal",
)  # one label per image; any number of findings; ordered grades
ORDINAL_HEADS = (
    "ce",
    "corn",
)  # ordinal: softmax over the grades (K outputs), or CORN (K-1 conditional outputs)
UNCERTAIN_POLICIES = (
    "ignore",
    "positive",
    "negative",
)  # a per-finding column's -1 (uncertain): left out of the loss, or as 1 / 0
# The architectures the app offers, as data (a setting's choices); core.models.archs builds them by these names.
ARCHS: dict[str, dict] = {
    "resnet18": {
        "family": "torchvision",
        "label": "ResNet-18 (fast, a good first choice)",
        "params_m": 11.7,
        "cnn": True,
    },
    "resnet34": {"family": "torchvision", "label": "ResNet-34", "params_m": 21.8, "cnn": True},
    "resnet50": {
        "family": "torchvision",
        "label": "ResNet-50 (larger, slower)",
        "params_m": 25.6,
        "cnn": True,
    },
    "densenet121": {
        "family": "torchvision",
        "label": "DenseNet-121 (CheXNet's choice)",
        "params_m": 8.0,
        "cnn": True,
    },
    "efficientnet_b0": {
        "family": "timm",
        "label": "EfficientNet-B0 (small, accurate)",
        "params_m": 5.3,
        "cnn": True,
    },
    "convnext_tiny": {
        "family": "timm",
        "label": "ConvNeXt-Tiny (modern, larger)",
        "params_m": 28.6,
        "cnn": True,
    },
}
# command-line option groups of a training run, in the order `--help` lists them (each setting names its own)
MODEL, IMAGES, AUG, SPLIT, SPEED = (
    "model and schedule",
    "images and batches",
    "augmentation (training images only)",
    "split",
    "speed",
)
OPTION_GROUPS = (MODEL, IMAGES, AUG, SPLIT, SPEED)
TRAINING = "training"  # the setup page's section of settings drawn without a layout of their own

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
    # multi-label tables (core.data.labels): findings in one column split on a delimiter, or one 1/0/blank/-1 column per finding
    label_delimiter: str = ""  # "" = one label per row
    finding_cols: list[str] = field(default_factory=list)
    uncertain: str = "ignore"  # what a -1 in a finding column means (UNCERTAIN_POLICIES)
    no_finding: str = "No Finding"  # the label value that means an empty set of findings

    def validate(self) -> None:
        """Check the choice of source is one we know."""
        _choice("source kind", self.kind, SOURCE_KINDS)
        _choice("uncertain policy", self.uncertain, UNCERTAIN_POLICIES)

    def multilabel(self) -> bool:
        """True when the table gives several findings per image (a delimiter or finding columns)."""
        return bool(self.label_delimiter or self.finding_cols)


@dataclass
class SplitConfig:
    """How items are split into train / valid / test, and k-fold settings."""

    method: str = field(
        default="stratified",
        metadata=setting(
            name="split_method",
            flag="--split",
            choices=SPLIT_METHODS,
            group=SPLIT,
            help="how to split (default: folder when the folder has train/ and val/ (valid/) sub-folders, "
            "else group when --group-col/--group-tag is given, else stratified; folder = the source's "
            "train/val/test folders)",
            widget="select",
            label="Split",
        ),
    )
    valid_pct: float = field(
        default=0.2,
        metadata=setting(
            flag="--valid-pct",
            group=SPLIT,
            help="validation fraction (default {default})",
            widget="slider",
            label="Validation %",
            form="pct",
            lo=0,
            hi=90,
        ),
    )
    test_pct: float = field(
        default=0.0,
        metadata=setting(
            flag="--test-pct",
            group=SPLIT,
            help="holdout test fraction (default {default})",
            widget="slider",
            label="Test % (held out until the end)",
            form="pct",
            lo=0,
            hi=90,
        ),
    )
    k_folds: int = field(  # the setup page: a switch and a number (ui.setup_form)
        default=0,
        metadata=setting(
            flag="--k-folds",
            group=SPLIT,
            help="k-fold cross-validation with k folds (default {default} = one train/valid split)",
        ),
    )
    site_col: str = field(  # leave-one-site-out: a CSV column or a DICOM tag (dicom:InstitutionName) naming the site
        default="",
        metadata=setting(
            flag="--site-col",
            group=SPLIT,
            help="the site of each image for --split loso (leave one site out): a CSV column, or a DICOM tag "
            "such as dicom:InstitutionName (a pseudonymised site) or dicom:Manufacturer (default: none)",
            widget="text",
            label="Site column (CSV column, or dicom:InstitutionName)",
        ),
    )
    seed: int = 42  # chosen with the training seed (TrainConfig.seed); a sweep of the seed keeps it
    keep_duplicates: bool = field(  # near-duplicate images (perceptual hash) stay in one split / fold
        default=False,
        metadata=setting(
            flag="--keep-duplicates",
            bool_flag="set",
            group=SPLIT,
            help="near-duplicate images (perceptual hash) stay in one split / fold (default {default})",
            widget="checkbox",
            label="Keep near-duplicate images together (one split / fold per duplicate group)",
            state="su_keep_dups",
        ),
    )

    def validate(self) -> None:
        """Check fractions and fold counts, and the declared choices and ranges."""
        check_declared(self)
        if not 0 <= self.valid_pct < 1 or not 0 <= self.test_pct < 1 or self.valid_pct + self.test_pct >= 1:
            raise ConfigError(
                f"valid_pct={self.valid_pct} and test_pct={self.test_pct} must leave training data"
            )
        if self.k_folds == 1 or self.k_folds < 0:
            raise ConfigError(f"k_folds must be 0 (no cross-validation) or >= 2, got {self.k_folds}")
        if self.method in ("random", "stratified", "group") and not self.k_folds and self.valid_pct <= 0:
            raise ConfigError(  # else the run fails at its start: training needs validation items
                "a validation fraction of 0 leaves no validation images, and training needs them to report on "
                "(set the validation fraction, e.g. 0.2, or use k-fold cross-validation)"
            )
        if self.method == "loso" and not self.site_col.strip():
            raise ConfigError("leave-one-site-out (--split loso) needs the site column: --site-col")


@dataclass
class AugConfig:
    """Augmentation with X-ray-safe defaults (horizontal flip only, mild affine and lighting)."""

    enabled: bool = field(
        default=True,
        metadata=setting(
            name="augment",
            flag="--no-augment",
            bool_flag="negate",
            group=AUG,
            help="no augmentation at all (same as --aug-preset none; default: augmentation {default})",
            widget="toggle",
            label="Augment training images",
            state="su_aug_enabled",
        ),
    )
    flip: bool = field(
        default=True,
        metadata=setting(
            flag="--flip",
            bool_flag="both",
            group=AUG,
            help="random left-right flips (default {default})",
            widget="checkbox",
            label="Flip left-right",
        ),
    )
    vertical_flip: bool = field(
        default=False,
        metadata=setting(
            flag="--vflip",
            bool_flag="both",
            group=AUG,
            help="random up-down flips (default {default}; rarely right for X-rays)",
            widget="checkbox",
            label="Flip up-down",
            state="su_vflip",
        ),
    )
    rotate: float = field(
        default=10.0,
        metadata=setting(
            flag="--rotate",
            group=AUG,
            help="max rotation in degrees (default {default})",
            widget="slider",
            label="Rotation (max degrees)",
            lo=0.0,
            hi=180.0,
            step=1.0,
        ),
    )
    zoom: float = field(
        default=1.1,
        metadata=setting(
            flag="--zoom",
            group=AUG,
            help="max zoom scale >= 1 (default {default})",
            widget="slider",
            label="Zoom (max scale)",
            lo=1.0,
            hi=2.0,
            step=0.05,
        ),
    )
    warp: float = field(
        default=0.1,
        metadata=setting(
            flag="--warp",
            group=AUG,
            help="max perspective warp 0..1 (default {default})",
            widget="slider",
            label="Warp (perspective)",
            lo=0.0,
            hi=1.0,
            step=0.05,
        ),
    )
    brightness: float = field(
        default=0.2,
        metadata=setting(
            flag="--brightness",
            group=AUG,
            help="max brightness change 0..1 (default {default})",
            widget="slider",
            label="Brightness",
            lo=0.0,
            hi=1.0,
            step=0.05,
        ),
    )
    contrast: float = field(
        default=0.2,
        metadata=setting(
            flag="--contrast",
            group=AUG,
            help="max contrast change 0..1 (default {default})",
            widget="slider",
            label="Contrast",
            lo=0.0,
            hi=1.0,
            step=0.05,
        ),
    )
    p_affine: float = 0.75
    p_lighting: float = 0.75

    def validate(self) -> None:
        """Check ranges of augmentation strengths, and the declared choices and ranges."""
        check_declared(self)
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
class TaskConfig:
    """What a label is: one class (single), a set of findings (multilabel) or an ordered grade (ordinal)."""

    type: str = field(
        default="single",
        metadata=setting(
            name="task_type",
            flag="--task",
            choices=TASK_TYPES,
            group=MODEL,
            help="single: one class per image; multilabel: any number of findings per image; ordinal: ordered "
            "grades such as KL 0-4 (default {default})",
            widget="select",
            label="Task type",
        ),
    )
    order: list[str] = field(
        default_factory=list
    )  # ordinal: the grades, lowest first ([] = inferred from the names)
    ordinal_head: str = field(
        default="corn",
        metadata=setting(
            flag="--ordinal-head",
            choices=ORDINAL_HEADS,
            group=MODEL,
            help="ordinal: ce = cross-entropy over the grades (K outputs, softmax); corn = the CORN rank-consistent "
            "head (K-1 conditional outputs); both predict the median grade (default {default}; bench/README.md)",
            widget="select",
            label="Ordinal head",
        ),
    )
    pos_weight: bool = field(
        default=False,
        metadata=setting(
            flag="--pos-weight",
            bool_flag="set",
            group=MODEL,
            help="multilabel: weight each finding's positives by negatives/positives in training (default {default})",
            widget="checkbox",
            label="Weight rare findings (multi-label)",
            section=TRAINING,
        ),
    )

    def validate(self) -> None:
        """Check the task type is one we know, and an ordinal order names each grade once."""
        check_declared(self)
        if len(set(self.order)) != len(self.order):
            raise ConfigError(f"the grade order names a grade twice: {', '.join(self.order)}")


@dataclass
class DataConfig:
    """How items become batches: size, channels, resize, batches, augmentation, split."""

    img_size: int = field(
        default=224,
        metadata=setting(
            flag="--img-size",
            group=IMAGES,
            help="image size in pixels (default {default}; from scratch: planned from the data, see train --plan)",
            cpu=128,
            gpu=224,
            widget="number",
            label="Image size (pixels)",
            lo=16,
            hi=2048,
            step=16,
            sweep="image size in pixels",
            aliases=("size",),
        ),
    )
    channels: str = field(
        default="rgb",
        metadata=setting(
            flag="--channels",
            choices=CHANNELS,
            group=IMAGES,
            help="colour channels (default {default})",
            widget="radio",
            label="Colour",
        ),
    )
    resize: str = field(
        default="squish",
        metadata=setting(
            flag="--resize",
            choices=RESIZE_METHODS,
            group=IMAGES,
            help="squish: stretch to a square; pad: keep the aspect with black bars; crop: cut a square "
            "(default {default})",
            widget="select",
            label="Resize",
        ),
    )
    batch_size: int = field(
        default=32,
        metadata=setting(
            flag="--bs",
            group=IMAGES,
            help="batch size (default {default}; from scratch: planned from the data)",
            cpu=32,
            gpu=64,
            widget="number",
            label="Batch size",
            lo=1,
            hi=1024,
            sweep="batch size",
            aliases=("bs",),
        ),
    )
    num_workers: int = field(  # DataLoader worker processes; negative = auto (0 on CPU, several on a GPU)
        default=-1,
        metadata=setting(
            flag="--workers",
            group=SPEED,
            help="DataLoader worker processes (default {default} = auto: 0 on a CPU, where workers measured no "
            "faster, several on a GPU)",
        ),
    )
    # auto: ImageNet's statistics when starting from weights, the training images' own from scratch
    normalize: str = field(
        default="auto",
        metadata=setting(
            flag="--normalize",
            choices=NORMALIZE,
            group=IMAGES,
            help="input statistics: ImageNet's, the training images' own, or none (default {default}: ImageNet's "
            "with pretrained or given weights, the training images' own from scratch)",
        ),
    )
    window: Window | None = None
    frame: int = 0
    use_cache: bool = True
    aug: AugConfig = field(default_factory=AugConfig)
    split: SplitConfig = field(default_factory=SplitConfig)
    task: TaskConfig = field(default_factory=TaskConfig)
    train_fraction: float = (
        field(  # share of the training split used (seeded, stratified); valid/test unchanged
            default=1.0,
            metadata=setting(sweep="share of the training split used (0..1]", aliases=("fraction",)),
        )
    )

    def validate(self) -> None:
        """Check sizes, batches, the window and nested configs, and the declared choices and ranges."""
        check_declared(self)
        if not 16 <= self.img_size <= 2048:
            raise ConfigError(f"img_size must be within 16..2048, got {self.img_size}")
        if self.batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.window is not None:
            self.window.validate()
        self.aug.validate()
        self.split.validate()
        self.task.validate()
        if not 0 < self.train_fraction <= 1:
            raise ConfigError(f"train_fraction must be within (0, 1], got {self.train_fraction}")
        if self.train_fraction < 1 and self.split.k_folds >= 2:
            raise ConfigError("train_fraction below 1 is for single-split runs, not k-fold cross-validation")


@dataclass
class TrainConfig:
    """Model and optimisation settings."""

    arch: str = field(
        default="resnet18",
        metadata=setting(
            flag="--arch",
            choices=tuple(ARCHS),
            metavar="ARCH",
            group=MODEL,
            help="architecture: {choices} (default {default})",
            widget="select",
            label="Architecture",
            sweep="architecture",
        ),
    )
    pretrained: bool = field(
        default=True,
        metadata=setting(
            flag="--no-pretrained",
            bool_flag="negate",
            group=MODEL,
            help="train from scratch (random weights): no frozen phase, exactly --epochs epochs "
            "(default: ImageNet weights, fine-tuned)",
            widget="toggle",
            label="Start from ImageNet weights (pretrained)",
        ),
    )
    weights_path: str = field(
        default="",
        metadata=setting(
            flag="--weights",
            group=MODEL,
            help="local ImageNet weights file (.pth / .safetensors) to fine-tune (default: none)",
            widget="text",
            label="Or a local weights file (.pth / .safetensors, optional)",
        ),
    )
    epochs: int = field(
        default=5,
        metadata=setting(
            flag="--epochs",
            group=MODEL,
            help="epochs of the whole network (default {default}; from scratch: planned from the data); pretrained "
            "runs first add --freeze-epochs head-only epochs, from-scratch runs train exactly this many",
            cpu=3,
            gpu=5,
            widget="number",
            label="Epochs",
            lo=1,
            hi=1000,
            sweep="training epochs (after the frozen epoch when fine-tuning)",
        ),
    )
    freeze_epochs: int = field(
        default=1,
        metadata=setting(
            flag="--freeze-epochs",
            group=MODEL,
            help="head-only epochs before the whole network, pretrained only (default {default}; ignored from "
            "scratch)",
            widget="number",
            label="Frozen epochs first",
            lo=0,
            hi=100,
        ),
    )
    lr: float | None = field(  # None: the schedule's default
        default=None,
        metadata=setting(
            flag="--lr",
            group=MODEL,
            help="base learning rate of the one-cycle schedule (default 2e-3 fine-tuning, 3e-3 from scratch)",
            widget="text",
            label="Learning rate (blank: default 2e-3 pretrained, 3e-3 from scratch)",
            form="number_text",
            range=(1e-7, 10.0),
            sweep="learning rate",
        ),
    )
    weight_decay: float | None = field(
        default=None,
        metadata=setting(
            name="wd",
            flag="--wd",
            group=MODEL,
            help="weight decay (default: fastai's, 0.01)",
            range=(0.0, 10.0),
            sweep="weight decay",
            aliases=("weight_decay",),
        ),
    )
    mixed_precision: str = field(
        default="auto",
        metadata=setting(
            flag="--mixed-precision",
            choices=AUTO_ON_OFF,
            group=SPEED,
            help="bf16/fp16 training (default {default}: on a CUDA GPU only)",
        ),
    )
    channels_last: str = field(
        default="auto",
        metadata=setting(
            flag="--channels-last",
            choices=AUTO_ON_OFF,
            group=SPEED,
            help="channels_last memory layout for training (default {default}: on a CUDA GPU only)",
        ),
    )
    early_stop_patience: int = field(
        default=0,
        metadata=setting(
            flag="--patience",
            group=MODEL,
            help="early stopping: stop after this many epochs without improvement (default {default} = off)",
            widget="number",
            label="Early stopping patience (epochs, 0 = off)",
            lo=0,
            hi=100,
            state="su_patience",
            section=TRAINING,
        ),
    )
    monitor: str = field(
        default="valid_loss",
        metadata=setting(
            flag="--monitor",
            choices=MONITORS,
            group=MODEL,
            help="what the best checkpoint and early stopping watch (default {default})",
            widget="select",
            label="Monitor (best epoch, early stopping)",
            section=TRAINING,
        ),
    )
    final_weights: str = field(  # the saved model: "last" epoch, "best" checkpoint; auto = best only with early stopping
        default="auto",
        metadata=setting(
            flag="--final-weights",
            choices=FINAL_WEIGHTS,
            group=MODEL,
            help="the saved model: the last epoch, or the best checkpoint by --monitor (default {default}: "
            "best only with early stopping, else the last epoch of the schedule)",
        ),
    )
    imbalance: str = field(
        default="none",
        metadata=setting(
            flag="--imbalance",
            choices=IMBALANCE,
            group=MODEL,
            help="class imbalance (default {default})",
            widget="select",
            label="Class imbalance",
            section=TRAINING,
            sweep="class imbalance handling",
        ),
    )
    label_smoothing: float = field(
        default=0.0,
        metadata=setting(
            flag="--label-smoothing",
            range=(0.0, 0.3),
            group=MODEL,
            help="label smoothing for the cross-entropy loss (0 = off; default {default})",
            widget="slider",
            label="Label smoothing (0 = off)",
            step=0.05,
            section=TRAINING,
            sweep="label smoothing for the cross-entropy loss (0 = off)",
        ),
    )
    seed: int = field(
        default=42,
        metadata=setting(
            flag="--seed",
            group=MODEL,
            help="training and split seed (default {default})",
            also=("data.split.seed",),
            widget="number",
            label="Seed (splits and training)",
            lo=0,
            hi=2**31 - 1,
            sweep="training seed (the split keeps the base seed)",
        ),
    )
    final_model_on_all: bool = field(
        default=False,
        metadata=setting(
            flag="--final-model",
            bool_flag="set",
            group=SPLIT,
            help="with --k-folds: also train one model on all training data (default {default})",
            widget="toggle",
            label="Also train one model on all the data",
        ),
    )
    calibrate: bool = field(
        default=True,
        metadata=setting(
            flag="--no-calibrate",
            bool_flag="negate",
            group=MODEL,
            help="do not fit a temperature on the validation (k-fold: out-of-fold) predictions (default: fit one; "
            "the saved model keeps it and predict, evaluate and ONNX export apply it)",
            widget="toggle",
            label="Calibrate probabilities (temperature scaling fitted on validation)",
            section=TRAINING,
        ),
    )
    torch_threads: int = field(  # 0 = auto: $XRT_TORCH_THREADS, else every core this process may use
        default=0,
        metadata=setting(
            flag="--threads",
            group=SPEED,
            help="torch threads (default {default} = auto: $XRT_TORCH_THREADS, else every core the job may use)",
        ),
    )

    def fine_tunes(self) -> bool:
        """True when training starts from weights (ImageNet or a file): fine_tune with a frozen phase first."""
        return bool(self.pretrained or self.weights_path)

    def planned_epochs(self) -> int:
        """Epochs a run trains: `epochs`, plus `freeze_epochs` only when fine-tuning (never from scratch)."""
        return self.epochs + (self.freeze_epochs if self.fine_tunes() else 0)

    def validate(self) -> None:
        """Check epochs and threads, and the declared choices and ranges (the learning rate's among them)."""
        check_declared(self)
        if self.epochs < 1 or self.freeze_epochs < 0:
            raise ConfigError(
                f"epochs must be >= 1 and freeze_epochs >= 0 (got {self.epochs}, {self.freeze_epochs})"
            )
        if self.torch_threads < 0:
            raise ConfigError(f"torch_threads must be >= 0 (0 = auto), got {self.torch_threads}")


@dataclass
class RunConfig:
    """Everything needed to reproduce one run."""

    name: str = field(
        default="",
        metadata=setting(
            flag="--name", help="run name (default: none)", widget="text", label="Run name (optional)"
        ),
    )
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
