"""The saved-model format: a model folder holds safetensors weights + a JSON manifest, and is rebuilt from code.

The manifest (`Manifest`, model.json) names the architecture, classes, input size, channels and normalisation, the preprocessing (resize,
DICOM window, frame) and the sha256 of the weights; it never holds a patient identifier. `load_model` rebuilds the
network with core.models.archs and loads the weights strictly (core.models.weightfiles): no pickle is ever read. A run folder
stands for its final model wherever a model is asked for (`find_manifest`). File names come from core.runs.rundir.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import torch

from core.base.config import Window
from core.base.fsutil import atomic_writer
from core.models import archs, heads
from core.models.checkpoints import check_finite
from core.models.weightfiles import ModelFileError, first_line, load_weights_into, read_safetensors
from core.runs.rundir import MODEL_DIR, MODEL_MANIFEST, MODEL_WEIGHTS, RunFolder, write_json

MANIFEST_VERSION = 1
FORMAT = "xray-trainer-model"
PHI_KEYS = {"patientname", "patientid", "birthdate", "patientbirthdate", "dateofbirth", "dob", "patientsname"}
# Files that hold weights (or a whole pickled model) but are no saved model of this app.
WEIGHT_SUFFIXES = {".pth", ".pt", ".bin", ".safetensors", ".ckpt", ".pkl", ".pickle", ".h5", ".onnx"}


# ---------------------------------------------------------------- saving


@dataclass(frozen=True)
class Manifest:
    """A saved model's manifest (model.json): what rebuilds the network and preprocesses its input, and its record.

    On disk it stays the JSON object earlier versions wrote ("normalize": {"mean", "std"}, "window": {...}); keys this
    class does not know are kept in `extra` and written back, so reading and re-saving loses nothing.
    """

    arch: str
    classes: list[str]
    n_in: int = 3
    img_size: int = 224
    channels: str = "rgb"
    resize: str = "squish"
    mean: list[float] | None = None  # the normalisation the model was trained with (None: none)
    std: list[float] | None = None
    window: Window | None = None  # the DICOM window training decoded with
    frame: int = 0
    train_config: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    best_epoch: int | None = None
    model_epoch: int | None = None
    model_weights: str = ""  # "best" or "last": which epoch's weights these are
    finished_from_checkpoint: dict[str, Any] | None = (
        None  # set when made from an interrupted run's checkpoint
    )
    # multi-label / ordinal: {"type", "thresholds" per finding | "order", "head"}; {} = single-label (core.models.heads)
    task: dict[str, Any] = field(default_factory=dict)
    # written by save_model
    format: str = FORMAT
    manifest_version: int = MANIFEST_VERSION
    weights: str = MODEL_WEIGHTS
    sha256: str = ""
    software: dict[str, str] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Manifest:
        """The manifest of a model.json object; missing keys take their defaults (read_manifest checks the rest)."""
        d = dict(data)
        known = {f.name for f in fields(cls)} - {"mean", "std", "extra"}
        norm = d.get("normalize") if isinstance(d.get("normalize"), Mapping) else {}
        window = d.get("window")
        return cls(
            arch=str(d.get("arch") or ""),
            classes=[str(c) for c in d.get("classes") or []],
            n_in=int(d.get("n_in") or 3),
            img_size=int(d.get("img_size") or 224),
            channels=str(d.get("channels") or "rgb"),
            resize=str(d.get("resize") or "squish"),
            mean=[float(v) for v in norm["mean"]] if norm and norm.get("mean") is not None else None,
            std=[float(v) for v in norm["std"]] if norm and norm.get("std") is not None else None,
            window=Window(**window) if isinstance(window, Mapping) else None,
            frame=int(d.get("frame") or 0),
            train_config=dict(d.get("train_config") or {}),
            metrics=dict(d.get("metrics") or {}),
            best_epoch=_maybe_int(d.get("best_epoch")),
            model_epoch=_maybe_int(d.get("model_epoch")),
            model_weights=str(d.get("model_weights") or ""),
            finished_from_checkpoint=d.get("finished_from_checkpoint"),
            task=dict(d.get("task") or {}),
            format=str(d.get("format") or ""),
            manifest_version=_maybe_int(d.get("manifest_version")) or 0,
            weights=str(d.get("weights") or ""),
            sha256=str(d.get("sha256") or ""),
            software=dict(d.get("software") or {}),
            extra={k: v for k, v in d.items() if k not in known and k != "normalize"},
        )

    def to_dict(self) -> dict[str, Any]:
        """The JSON object model.json holds (the format earlier versions wrote and read)."""
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("mean", "std", "extra")}
        out["normalize"] = {"mean": self.mean, "std": self.std} if self.mean is not None else None
        out["window"] = dataclasses.asdict(self.window) if self.window else None
        if self.finished_from_checkpoint is None:  # only a model finished from a checkpoint says so
            del out["finished_from_checkpoint"]
        if not self.task:  # a single-label model's manifest stays as it was
            del out["task"]
        return {**out, **self.extra}

    @property
    def task_type(self) -> str:
        """single, multilabel or ordinal (a manifest without a task record is single-label)."""
        return str(self.task.get("type") or "single")

    @property
    def ordinal_head(self) -> str:
        """An ordinal model's head, ce or corn (a record without one is CORN, the only head before ce)."""
        return str(self.task.get("head") or heads.CORN)

    @property
    def stats(self) -> tuple[list[float], list[float]] | None:
        """(mean, std) of the normalisation, None when the model was trained without one."""
        return (self.mean, self.std) if self.mean is not None and self.std is not None else None


def _maybe_int(v: Any) -> int | None:
    """An int from a JSON value, None when absent or not a number."""
    try:
        return None if v is None or isinstance(v, bool) else int(v)
    except (TypeError, ValueError):
        return None


def save_model(model: torch.nn.Module, out_dir: str | Path, manifest: Manifest | Mapping[str, Any]) -> Path:
    """Write the weights and the manifest (with their sha256) into `out_dir` atomically; return the manifest path."""
    from safetensors.torch import save_file

    given = manifest.to_dict() if isinstance(manifest, Manifest) else dict(manifest)
    refuse_phi(given)
    if not given.get("arch"):
        raise ValueError("manifest needs 'arch'")
    if not isinstance(given.get("classes"), (list, tuple)) or not given["classes"]:
        raise ValueError("manifest needs 'classes' (an ordered list of class names)")
    out_dir = Path(out_dir)
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in model.state_dict().items()}
    with atomic_writer(out_dir / MODEL_WEIGHTS) as tmp:
        save_file(tensors, str(tmp), metadata={"format": FORMAT})
        digest = sha256_file(tmp)
    full = dataclasses.replace(
        Manifest.from_dict(given),
        format=FORMAT,
        manifest_version=MANIFEST_VERSION,
        weights=MODEL_WEIGHTS,
        sha256=digest,
    )
    if not given.get("software"):  # the versions it is saved with, unless the record names them
        full = dataclasses.replace(full, software=_versions())
    path = out_dir / MODEL_MANIFEST
    write_json(path, full.to_dict())
    return path


def refuse_phi(obj: Any, where: str = "manifest") -> None:
    """Refuse dicts (recursively) with keys that look like patient identifiers."""
    if isinstance(obj, Mapping):
        for k, v in obj.items():
            if re.sub(r"[^a-z]", "", str(k).lower()) in PHI_KEYS:
                raise ValueError(f"refused: {where} contains a patient-identifying key {k!r}")
            refuse_phi(v, f"{where}.{k}")
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            refuse_phi(v, where)


def _versions() -> dict[str, str]:
    """Library versions the model was saved with (for the record)."""
    out: dict[str, str] = {"torch": torch.__version__}
    for mod in ("torchvision", "timm", "fastai"):
        try:
            out[mod] = __import__(mod).__version__
        except Exception:
            pass
    return out


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# ---------------------------------------------------------------- finding and reading


def find_manifest(path: str | Path) -> Path:
    """The manifest a path stands for: a manifest, a model folder, a run folder (its final model), or an error saying why."""
    p = Path(path)
    if p.is_file():
        if p.suffix.lower() in WEIGHT_SUFFIXES:
            raise ModelFileError(
                f"{p.name} is a weights file, not a model saved by this app: the app loads its own model folders "
                f"({MODEL_MANIFEST} + {MODEL_WEIGHTS}, e.g. <run folder>/{MODEL_DIR}). To use a weights file, train "
                f"from it: choose it as the starting weights on the setup page, or `python -m core train --weights {p} ...`"
            )
        return p
    if not p.is_dir():
        raise ModelFileError(
            f"no model at {p} (give a run folder, its {MODEL_DIR}/ folder or a {MODEL_MANIFEST})"
        )
    run = RunFolder(p)
    for cand in (p / MODEL_MANIFEST, run.model_dir / MODEL_MANIFEST):
        if cand.is_file():
            return cand
    raise ModelFileError(_why_no_model(run))


def _why_no_model(run: RunFolder) -> str:
    """Why a folder holds no model: a k-fold run without a final model, an unfinished run, or no run at all."""
    p = run.path
    if run.folds_dir.is_dir():
        folds = [d.relative_to(p).as_posix() for _, d in run.fold_models()]
        which = (
            f"give one of its fold models ({', '.join(folds)})"
            if folds
            else "none of its fold models is saved yet"
        )
        return (
            f"{p.name} is a k-fold run without a final model: {which}, "
            "or train with --final-model to get one model on all the data"
        )
    if run.config.is_file():
        return (
            f"the run {p.name} has no saved model ({run.model_dir / MODEL_MANIFEST} is missing: it did not finish)"
            + (
                f"; make one from its best checkpoint with `python -m core finish {p}`"
                if run.has_checkpoint()
                else ""
            )
        )
    return (
        f"no model in {p}: expected {p / MODEL_MANIFEST} or a run folder holding {MODEL_DIR}/{MODEL_MANIFEST}"
    )


def read_manifest(path: str | Path) -> tuple[Manifest, Path]:
    """Read and check a manifest (or a model / run folder, see find_manifest); return (manifest, weights path)."""
    path = find_manifest(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError):
        raise ModelFileError(f"{path.name}: not a valid JSON model manifest") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ModelFileError(f"{path.name}: not a model saved by this app (format is not {FORMAT!r})")
    try:
        version = int(data.get("manifest_version", 0))
    except (TypeError, ValueError):
        version = MANIFEST_VERSION + 1
    if version > MANIFEST_VERSION:
        raise ModelFileError(
            f"{path.name}: saved by a newer version of the app (manifest v{data['manifest_version']})"
        )
    for key in ("arch", "classes", "sha256", "weights"):
        if not data.get(key):
            raise ModelFileError(f"{path.name}: manifest has no {key!r}")
    wname = str(data["weights"])
    if Path(wname).name != wname or wname in (".", ".."):
        raise ModelFileError(f"{path.name}: weights must be a file beside the manifest, got {wname!r}")
    try:
        manifest = Manifest.from_dict(data)
    except (TypeError, ValueError) as e:
        raise ModelFileError(f"{path.name}: manifest has a malformed field ({first_line(e)})") from None
    return manifest, path.parent / wname


# ---------------------------------------------------------------- loading


def load_model(path: str | Path) -> tuple[torch.nn.Module, Manifest]:
    """Rebuild a saved model (manifest, model or run folder) from code; sha256 checked, strict load, eval mode."""
    manifest, weights = read_manifest(path)
    if not weights.is_file():
        raise ModelFileError(f"weights file {weights.name} is missing beside the manifest")
    if sha256_file(weights) != manifest.sha256:
        raise ModelFileError(
            f"{weights.name} does not match its manifest (sha256 differs): the file was changed or is incomplete"
        )
    state = read_safetensors(weights)
    check_finite(state, weights.name)
    try:
        n_out = heads.n_outputs(manifest.task_type, len(manifest.classes), manifest.ordinal_head)
        model = archs.create_model(manifest.arch, n_out, manifest.n_in)
    except (KeyError, ValueError, RuntimeError) as e:
        raise ModelFileError(f"cannot rebuild architecture {manifest.arch!r}: {first_line(e)}") from None
    load_weights_into(model, state, strict=True)
    return model.eval(), manifest


def record(model_dir: str | Path, key: str, value: Any) -> None:
    """Set (value None: remove) one record of a saved model's manifest, e.g. its calibration; weights untouched."""
    manifest, _ = read_manifest(model_dir)
    extra = {k: v for k, v in manifest.extra.items() if k != key}
    if value is not None:
        extra[key] = value
    refuse_phi(extra)
    write_json(find_manifest(model_dir), dataclasses.replace(manifest, extra=extra).to_dict())
