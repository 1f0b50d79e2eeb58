"""Predict with a saved model (weights + manifest, never a pickle): one image, many, a folder or a CSV of paths."""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from core.base import steps
from core.base.config import SourceConfig
from core.base.steps import OnStep
from core.data import decode_cache, imaging, prefetch
from core.data.labels import finding_names
from core.data.loaders import ImageReader
from core.data.resize import valid_pixels
from core.evaluation import bytask, conformal, evaluate
from core.evaluation import tta as tta_views
from core.models import heads, savedmodel, site_temperature, temperature

DEFAULT_THRESHOLD = 0.5


def as_batch(pixels: np.ndarray, device: torch.device | str = "cpu") -> torch.Tensor:
    """N x H x W x C uint8 pixels -> N x C x H x W floats 0..1 on `device`, laid out channels_last (no copy to
    NCHW: a channels_last model takes it as is). Moved as uint8 (a quarter of the bytes), then scaled."""
    return torch.from_numpy(pixels).to(device, non_blocking=True).permute(0, 3, 1, 2).float().div_(255.0)


class Predictor:
    """A loaded model plus the exact preprocessing it was trained with; reuse it for many calls."""

    def __init__(
        self,
        model_path: str | Path,
        device: str | None = None,
        channels_last: bool = True,
        calibrated: bool = True,
        site: str = "",
    ):
        """Load weights + manifest; channels_last (same outputs) measured ~25 % faster on CPU at 224 px.

        calibrated: divide the logits by the temperature the model carries (core.models.temperature), if any;
        site: by the temperature it carries for that site instead (core.models.site_temperature).
        """
        self.model, self.manifest = savedmodel.load_model(model_path)
        self.temperature = temperature.divisor(self.manifest) if calibrated else 1.0
        self.site = site
        if site:
            if not calibrated:
                raise ValueError("a site's temperature is a calibration: drop --uncalibrated to use --site")
            self.temperature = site_temperature.divisor(self.manifest, site)
        self.conformal = conformal.of_manifest(self.manifest)
        self.set_rule: conformal.SetRule | None = None  # set by use_sets: `set` and `refer` columns
        self.tta_views = tta_views.views(tta_views.flips_for(self.manifest.extra, model_path))
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.model.to(self.device).eval()
        if channels_last:
            self.model.to(memory_format=torch.channels_last)
        m = self.manifest
        self.classes: list[str] = list(m.classes)
        self.task = m.task_type  # single, multilabel (a sigmoid per finding) or ordinal (grades)
        self.reader = ImageReader(m.img_size, m.channels, m.window, m.frame, use_cache=False)
        norm = m.stats
        self.mean = torch.tensor(norm[0]).view(1, -1, 1, 1) if norm else None
        self.std = torch.tensor(norm[1]).view(1, -1, 1, 1) if norm else None

    @property
    def head(self) -> str:
        """The ordinal head the manifest names (ce: softmax over grades, corn); ignored by other task types."""
        return self.manifest.ordinal_head

    @property
    def binary(self) -> bool:
        """True for a two-class single-label model (a threshold on the second class applies)."""
        return len(self.classes) == 2 and self.task == "single"

    @property
    def img_size(self) -> int:
        """The side of the square images the model takes."""
        return int(self.reader.size or self.manifest.img_size)

    def use_sets(self, rule: conformal.SetRule | None) -> None:
        """Add conformal prediction sets (`set`, `refer`) to every table from now on (None: stop)."""
        if rule is not None and self.conformal is None:
            raise ValueError(
                "this model carries no conformal calibration (saved before it existed, or too few validation "
                "images): run `python -m core calibrate <run>` to add it"
            )
        if rule is not None and self.site:
            raise ValueError(
                "prediction sets were calibrated at the training site: they are not offered with a site's temperature"
            )
        if rule is not None and self.temperature != temperature.divisor(self.manifest):
            raise ValueError(
                "prediction sets are calibrated on the calibrated probabilities: drop --uncalibrated"
            )
        self.set_rule = rule

    def pixels_for(self, path: str | Path) -> np.ndarray:
        """Decode, downscale as training's cache does, resize as in validation: H x W x C uint8 pixels."""
        img = decode_cache.downscale(self.reader.load(str(path)), self.reader.size)
        return valid_pixels(img, self.img_size, self.manifest.resize, self.reader.channels)

    def checked_pixels(self, path: str | Path) -> np.ndarray:
        """pixels_for, with every failure of the file as an ImageError of one plain sentence."""
        try:
            return self.pixels_for(path)
        except imaging.ImageError:
            raise
        except Exception as err:  # noqa: BLE001 - whatever a decoder raises for one file is that file's reason
            raise imaging.ImageError(imaging.user_reason(err)) from None

    def tensor_for(self, path: str | Path) -> torch.Tensor:
        """Decode, resize as in validation, scale to 0..1: a C x H x W float tensor."""
        return as_batch(self.pixels_for(path)[None])[0].contiguous()

    def checked_tensor(self, path: str | Path) -> torch.Tensor:
        """tensor_for, with every failure of the file as an ImageError of one plain sentence."""
        return as_batch(self.checked_pixels(path)[None])[0].contiguous()

    def normalized(self, batch: torch.Tensor) -> torch.Tensor:
        """A batch of 0..1 tensors on the model's device, normalised as in training."""
        x = batch.to(self.device, non_blocking=True)
        if self.mean is not None and self.std is not None:
            x = (x - self.mean.to(self.device)) / self.std.to(self.device)
        return x

    @torch.no_grad()
    def probs(self, batch: torch.Tensor, tta: bool = False) -> np.ndarray:
        """Probabilities for a batch of 0..1 tensors (tta: the mean over `tta_views`, core.evaluation.tta): softmax
        of the logits / the model's temperature, a sigmoid per finding (multilabel) or the grade probabilities
        (ordinal, by the model's head), core.models.heads. Only single-label models carry a temperature (else 1)."""
        x, t = batch.to(self.device, non_blocking=True), self.temperature
        if self.device.type == "cpu":  # the forward's blocks reused batch after batch, not mapped afresh
            imaging.keep_heap_blocks(prefetch.BLOCK_BYTES_PER_PIXEL * x.shape[0] * x.shape[-1] * x.shape[-2])
        views = self.tta_views if tta else [tta_views.IDENTITY]
        p = [
            heads.activation(
                self.task, self.model(self.normalized(tta_views.apply(x, v))).float() / t, self.head
            )
            for v in views
        ]
        return torch.stack(p).mean(0).cpu().numpy()

    def decide(self, probs: np.ndarray, threshold: float | None = None) -> np.ndarray:
        """Predicted class indices: binary -> second class when p >= threshold (default 0.5); else argmax."""
        return evaluate.predict_labels(
            probs, (DEFAULT_THRESHOLD if threshold is None else threshold) if self.binary else None
        )

    def predict_one(
        self, path: str | Path, tta: bool = False, threshold: float | None = None
    ) -> dict[str, Any]:
        """Class probabilities, the predicted class and the threshold used, for one file."""
        p = self.probs(self.checked_tensor(path)[None], tta=tta)
        if self.task != "single":  # the findings decided / the predicted grade, and the table's other columns
            row = self._frame([str(path)], p, threshold).iloc[0]
            extra = {k: row[k].item() for k in row.index if k.startswith("pred_") or k == "expected_grade"}
            return {"pred": row["pred"], "probs": dict(zip(self.classes, map(float, p[0]))), **extra}
        return {
            "pred": self.classes[int(self.decide(p, threshold)[0])],
            "probs": dict(zip(self.classes, map(float, p[0]))),
            "threshold": self.threshold_used(threshold),
        }

    def threshold_used(self, threshold: float | None) -> float | str:
        """What the threshold column says: the binary threshold, or "argmax" for multi-class."""
        if self.task == "ordinal":  # the grade rule, no threshold
            return "grade"
        if self.task == "multilabel":  # each finding's own, or one given for all
            return "per finding" if threshold is None else float(threshold)
        return float(DEFAULT_THRESHOLD if threshold is None else threshold) if self.binary else "argmax"

    def _load_batch(self, paths: Sequence[str]) -> tuple[list[str], np.ndarray | None, list[dict[str, str]]]:
        """(paths decoded, their N x H x W x C uint8 pixels, problem rows) of one batch; a bad file is its row."""
        good, pixels, bad = [], [], []
        for p in paths:
            try:
                pixels.append(self.checked_pixels(p))
                good.append(p)
            except imaging.ImageError as err:  # a batch never stops for one file
                bad.append({"path": p, "reason": str(err)})
        return good, np.stack(pixels) if pixels else None, bad

    def _loads(
        self, workers: int | None, tta: bool, batch_size: int
    ) -> tuple[_BatchLoad, Callable[[], object] | None, int]:
        """(the per-batch load for predict_paths, the loading threads' initialiser, this thread's torch threads).

        CPU (prefetch.cpu_plan; `workers` given: that many threads running the model): a load decodes and runs
        the model (probabilities out), each thread on its share of the torch threads; or, for batches too large
        to run several at once, it decodes (pixels out) and the caller runs the model. GPU: a load decodes and
        the caller runs the model on the device.
        """
        caller_threads = torch.get_num_threads()
        if self.device.type != "cpu":
            n = prefetch.decode_workers() if workers is None else workers
            return _BatchLoad(self, n, run_model=False, tta=tta), None, caller_threads
        threads = min(caller_threads, prefetch.usable_cores())
        if workers is None:
            plan = prefetch.cpu_plan(threads, batch_size * self.img_size**2)
        else:
            plan = prefetch.LoadPlan(workers, True, max(1, threads // max(1, workers)))
        own = plan.run_model and plan.workers > 0  # threads with their own torch thread count
        init = functools.partial(torch.set_num_threads, plan.torch_threads) if own else None
        return _BatchLoad(self, plan.workers, run_model=plan.run_model, tta=tta), init, caller_threads

    def predict_paths(
        self,
        paths: list[str],
        batch_size: int = 32,
        labels: list[str] | None = None,
        tta: bool = False,
        threshold: float | None = None,
        workers: int | None = None,
        progress: OnStep | None = None,
    ) -> tuple[pd.DataFrame, pd.DataFrame]:
        """(predictions, problems) for many files; a broken file is reported, the rest are predicted.

        On a CPU, `workers` threads (default: prefetch.cpu_plan of this thread's torch threads; 0: all in this
        thread) each decode a batch and run the model on it with their share of the torch threads, in order; on
        a GPU (or, by default, for batches too large to run several at once) they only decode, a few batches
        ahead of the model (default prefetch.decode_workers; 0: in this thread). The table has every class probability, the predicted class and the threshold used; with
        `labels` (unknown or empty ones are left blank) it also has `label`.
        """
        paths = [str(p) for p in paths]
        good, probs, problems = [], [], []
        steps.report(progress, "files", 0, len(paths))
        per_image = self.img_size**2 * (1 if self.reader.channels == "grey" else 3)
        batches, init, caller_threads = self._loads(workers, tta, batch_size)
        workers = batches.workers
        ahead = prefetch.batches_ahead(workers, batch_size * per_image)
        try:
            for ok, out, bad in prefetch.prefetched(paths, batches, batch_size, workers, ahead, init):
                problems += bad
                if out is not None:
                    probs.append(
                        out if batches.run_model else self.probs(as_batch(out, self.device), tta=tta)
                    )
                    good += ok
                steps.report(progress, "files", len(good) + len(problems), len(paths))
        finally:
            if init is not None:  # a thread's set_num_threads also sets the count new threads start with
                torch.set_num_threads(caller_threads)
            if self.device.type == "cpu":  # the blocks the forward passes kept go back to the OS
                imaging.release_heap()
        probs_arr = np.concatenate(probs) if probs else np.zeros((0, len(self.classes)))
        df = self._frame(good, probs_arr, threshold)
        if labels is not None:
            label_of = dict(
                zip(
                    paths,
                    ["" if v is None or (isinstance(v, float) and math.isnan(v)) else str(v) for v in labels],
                )
            )
            df.insert(1, "label", [label_of.get(p, "") for p in good])
        return df, pd.DataFrame(problems, columns=["path", "reason"])

    def _frame(self, paths: list[str], probs: np.ndarray, threshold: float | None) -> pd.DataFrame:
        """The predictions table: path, pred, prob_pred, prob_<class>..., threshold."""
        if (
            self.task != "single"
        ):  # multilabel: each finding at its threshold from validation unless one is given
            given = threshold if threshold is not None else self.manifest.task.get("thresholds")
            return bytask.predictions_table(paths, probs, self.classes, self.task, given)
        pred = self.decide(probs, threshold) if len(probs) else np.zeros(0, dtype=int)
        df = evaluate.predictions_frame(paths, None, probs, self.classes)
        df["pred"] = [self.classes[i] for i in pred]
        df["prob_pred"] = probs[np.arange(len(probs)), pred].astype(float) if len(probs) else []
        df["threshold"] = self.threshold_used(threshold)
        if self.set_rule is not None and self.conformal is not None:
            df = conformal.add_sets(df, self.classes, self.conformal, self.set_rule)
        return df


@dataclass
class _BatchLoad:
    """One batch of paths -> (paths decoded, their probabilities, or their pixels for the caller's model, problems)."""

    pred: Predictor
    workers: int
    run_model: bool
    tta: bool

    def __call__(self, paths: Sequence[str]) -> tuple[list[str], np.ndarray | None, list[dict[str, str]]]:
        """Decode the batch; run the model on it here when this load owns the model (CPU)."""
        ok, pixels, bad = self.pred._load_batch(paths)
        if pixels is None or not self.run_model:
            return ok, pixels, bad
        return ok, self.pred.probs(as_batch(pixels, self.pred.device), tta=self.tta), bad


def as_predictor(model: str | Path | Predictor) -> Predictor:
    """A Predictor from a model path, or the given one (so callers can reuse a loaded model)."""
    return model if isinstance(model, Predictor) else Predictor(model)


def folder_paths(folder: str | Path) -> list[str]:
    """Every image/DICOM file under a folder (recursively; hidden files and folders skipped), sorted."""
    from core.data.folders import walk_files

    root = Path(folder).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"folder not found: {folder}")
    exts = imaging.IMAGE_EXTS | imaging.DICOM_EXTS
    return sorted(str(p) for p in walk_files(root.resolve()) if p.suffix.lower() in exts)


def predict_folder(
    model_path: str | Path | Predictor,
    folder: str | Path,
    batch_size: int = 32,
    tta: bool = False,
    threshold: float | None = None,
    progress: OnStep | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Predict every image/DICOM under a folder (recursively; hidden files skipped); when every file sits in a
    folder named after a class of the model (class sub-folders, also inside train/val/test), with that label."""
    from core.data.folders import class_folder_labels

    pred, paths = as_predictor(model_path), folder_paths(folder)
    labels = class_folder_labels(folder, paths, pred.classes)
    return pred.predict_paths(
        paths, batch_size=batch_size, labels=labels, tta=tta, threshold=threshold, progress=progress
    )


def read_path_table(
    csv_path: str | Path, path_col: str = "path", label_col: str = "label", image_root: str | Path = ""
) -> tuple[list[str], list[str] | None, pd.DataFrame]:
    """(files, labels or None, problems) from a CSV of paths relative to image_root (default: the CSV's folder).

    The label column is optional: without it (or with --label-col "") the table is names only. Paths that
    leave the image folder (../, absolute, UNC) and missing files are problems, never read.
    """
    from core.data.items import UnsafePathError, safe_join
    from core.data.tables import read_table

    df = read_table(csv_path)
    if path_col not in df:
        raise ValueError(
            f"the table has no path column '{path_col}'; its columns are: {', '.join(df.columns)}"
        )
    root = Path(image_root) if str(image_root).strip() else Path(csv_path).expanduser().resolve().parent
    labelled = bool(label_col) and label_col in df
    files, labels, problems = [], [], []
    for n, row in enumerate(df.to_dict("records"), start=1):
        raw = str(row[path_col]).strip()
        try:
            path = safe_join(root, raw)
        except UnsafePathError as err:
            problems.append({"path": raw or f"row {n}", "reason": f"row {n}: {err}"})
            continue
        if not path.is_file():
            problems.append({"path": str(path), "reason": f"row {n}: file not found"})
            continue
        files.append(str(path))
        labels.append(str(row[label_col]).strip() if labelled else "")
    return files, labels if labelled else None, pd.DataFrame(problems, columns=["path", "reason"])


def predict_csv(
    model_path: str | Path | Predictor,
    csv_path: str | Path,
    path_col: str = "path",
    label_col: str = "label",
    image_root: str | Path = "",
    batch_size: int = 32,
    tta: bool = False,
    threshold: float | None = None,
    progress: OnStep | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Predict the files a CSV lists; a labelled CSV's labels come along (score them with score_predictions)."""
    files, labels, problems = read_path_table(csv_path, path_col, label_col, image_root)
    df, bad = as_predictor(model_path).predict_paths(
        files, batch_size=batch_size, labels=labels, tta=tta, threshold=threshold, progress=progress
    )
    return df, pd.concat([problems, bad], ignore_index=True) if len(problems) else bad


@dataclass
class SourceScore:
    """A model applied to a labelled source: per-item predictions, unusable files, headline metrics."""

    predictions: pd.DataFrame
    problems: pd.DataFrame  # path, reason: files the scan or the prediction could not use
    metrics: dict[str, float]


def score_source(
    model: str | Path | Predictor,
    source: SourceConfig,
    batch_size: int = 32,
    tta: bool = False,
    threshold: float | None = None,
    progress: OnStep | None = None,
) -> SourceScore:
    """Load a labelled source, check its labels are classes of the model, predict it with its labels, measure."""
    from core.data.sources import load_source

    pred = as_predictor(model)
    ds = load_source(source, progress=progress)
    labels = ds.items["label"].astype(str)
    known = finding_names(labels) if pred.task == "multilabel" else set(labels)
    unknown = sorted(set(known) - set(pred.classes))
    if unknown:
        raise ValueError(f"test labels {unknown} are not classes of this model ({', '.join(pred.classes)})")
    if ds.items.empty:
        raise ValueError("the test set has no usable images")
    df, bad = pred.predict_paths(
        ds.items["path"].tolist(),
        batch_size=batch_size,
        labels=labels.tolist(),
        tta=tta,
        threshold=threshold,
        progress=progress,
    )
    problems = pd.concat([ds.problems[["path", "reason"]], bad], ignore_index=True)
    thresholds = pred.manifest.task.get("thresholds")  # a multi-label model's, chosen on its validation set
    return SourceScore(df, problems, bytask.metrics_from_frame(df, pred.classes, pred.task, thresholds))


def score_predictions(
    df: pd.DataFrame, classes: list[str], threshold: float | None = None, task: str = "single", **kwargs: Any
) -> dict[str, Any] | None:
    """Full evaluation of the labelled rows of a predictions table (None when no row has a label).

    Labels that are not classes of the model are refused with the list of them.
    """
    labelled = evaluate.labelled(df)
    if not len(labelled):
        return None
    return bytask.evaluate_frame(labelled, classes, task, threshold=threshold, **kwargs)
