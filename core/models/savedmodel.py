"""The saved-model format: a model folder holds safetensors weights + a JSON manifest, and is rebuilt from code.

The manifest names the architecture, classes, input size, channels and normalisation, the preprocessing (resize,
DICOM window, frame) and the sha256 of the weights; it never holds a patient identifier. `load_model` rebuilds the
network with core.models.archs and loads the weights strictly (core.models.weightfiles): no pickle is ever read. A run folder
stands for its final model wherever a model is asked for (`find_manifest`). File names come from core.runs.rundir.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from core.base.fsutil import atomic_writer
from core.models import archs
from core.models.weightfiles import ModelFileError, first_line, load_weights_into, read_safetensors
from core.runs.rundir import MODEL_DIR, MODEL_MANIFEST, MODEL_WEIGHTS, RunFolder, write_json

MANIFEST_VERSION = 1
FORMAT = "xray-trainer-model"
PHI_KEYS = {"patientname", "patientid", "birthdate", "patientbirthdate", "dateofbirth", "dob", "patientsname"}
# Files that hold weights (or a whole pickled model) but are no saved model of this app.
WEIGHT_SUFFIXES = {".pth", ".pt", ".bin", ".safetensors", ".ckpt", ".pkl", ".pickle", ".h5", ".onnx"}


# ---------------------------------------------------------------- saving


def save_model(model: torch.nn.Module, out_dir: str | Path, manifest: dict) -> Path:
    """Write the weights and the manifest (with their sha256) into `out_dir` atomically; return the manifest path."""
    from safetensors.torch import save_file

    _refuse_phi(manifest)
    if not manifest.get("arch"):
        raise ValueError("manifest needs 'arch'")
    if not isinstance(manifest.get("classes"), (list, tuple)) or not manifest["classes"]:
        raise ValueError("manifest needs 'classes' (an ordered list of class names)")
    out_dir = Path(out_dir)
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in model.state_dict().items()}
    with atomic_writer(out_dir / MODEL_WEIGHTS) as tmp:
        save_file(tensors, str(tmp), metadata={"format": FORMAT})
        digest = sha256_file(tmp)
    full = {
        **manifest,
        "n_in": int(manifest.get("n_in", 3)),
        "format": FORMAT,
        "manifest_version": MANIFEST_VERSION,
        "weights": MODEL_WEIGHTS,
        "sha256": digest,
    }
    full.setdefault("software", _versions())
    path = out_dir / MODEL_MANIFEST
    write_json(path, full)
    return path


def _refuse_phi(obj: Any, where: str = "manifest") -> None:
    """Refuse dicts (recursively) with keys that look like patient identifiers."""
    if isinstance(obj, Mapping):
        for k, v in obj.items():
            if re.sub(r"[^a-z]", "", str(k).lower()) in PHI_KEYS:
                raise ValueError(f"refused: {where} contains a patient-identifying key {k!r}")
            _refuse_phi(v, f"{where}.{k}")
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            _refuse_phi(v, where)


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


def read_manifest(path: str | Path) -> tuple[dict, Path]:
    """Read and check a manifest (or a model / run folder, see find_manifest); return (manifest, weights path)."""
    path = find_manifest(path)
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError):
        raise ModelFileError(f"{path.name}: not a valid JSON model manifest") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ModelFileError(f"{path.name}: not a model saved by this app (format is not {FORMAT!r})")
    try:
        version = int(manifest.get("manifest_version", 0))
    except (TypeError, ValueError):
        version = MANIFEST_VERSION + 1
    if version > MANIFEST_VERSION:
        raise ModelFileError(
            f"{path.name}: saved by a newer version of the app (manifest v{manifest['manifest_version']})"
        )
    for key in ("arch", "classes", "sha256", "weights"):
        if not manifest.get(key):
            raise ModelFileError(f"{path.name}: manifest has no {key!r}")
    wname = str(manifest["weights"])
    if Path(wname).name != wname or wname in (".", ".."):
        raise ModelFileError(f"{path.name}: weights must be a file beside the manifest, got {wname!r}")
    return manifest, path.parent / wname


# ---------------------------------------------------------------- loading


def load_model(path: str | Path) -> tuple[torch.nn.Module, dict]:
    """Rebuild a saved model (manifest, model or run folder) from code; sha256 checked, strict load, eval mode."""
    manifest, weights = read_manifest(path)
    if not weights.is_file():
        raise ModelFileError(f"weights file {weights.name} is missing beside the manifest")
    if sha256_file(weights) != manifest["sha256"]:
        raise ModelFileError(
            f"{weights.name} does not match its manifest (sha256 differs): the file was changed or is incomplete"
        )
    state = read_safetensors(weights)
    try:
        model = archs.create_model(manifest["arch"], len(manifest["classes"]), int(manifest.get("n_in", 3)))
    except (KeyError, ValueError, RuntimeError) as e:
        raise ModelFileError(f"cannot rebuild architecture {manifest['arch']!r}: {first_line(e)}") from None
    load_weights_into(model, state, strict=True)
    return model.eval(), manifest
