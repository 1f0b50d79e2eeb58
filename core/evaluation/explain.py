"""Errors and explanations: top losses as a table a page can show as a gallery, Grad-CAM heatmaps."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image

from core.evaluation import evaluate

EPS = 1e-7  # probabilities are clipped to [EPS, 1 - EPS] before taking logs
OVERLAY_ALPHA = 0.45
_HOOK_LOCK = threading.Lock()  # hooks are added to a shared (cached) model: one Grad-CAM at a time
# A perceptually ordered blue -> cyan -> green -> yellow -> red colour map (anchors, linearly interpolated).
_CMAP = np.array(
    [
        [48, 18, 59],
        [70, 107, 227],
        [40, 188, 235],
        [50, 241, 152],
        [164, 252, 60],
        [239, 205, 58],
        [251, 128, 34],
        [210, 48, 5],
        [122, 4, 3],
    ],
    dtype=np.float32,
)


# ---------------------------------------------------------------- top losses


def top_losses(
    df: pd.DataFrame, classes: list[str], k: int | None = None, errors_only: bool = False
) -> pd.DataFrame:
    """Labelled predictions ranked by cross-entropy loss -log p(true class), highest first.

    Columns: rank, path, label, pred, prob_true, prob_pred, loss, correct (+ fold / any extra columns kept).
    """
    y, probs = evaluate.labels_and_probs(df, classes)
    p_true = probs[np.arange(len(y)), y] if len(y) else np.zeros(0)
    out = df.copy()
    out["prob_true"] = p_true
    out["loss"] = -np.log(np.clip(p_true, EPS, 1 - EPS))
    out["correct"] = out["pred"].astype(str) == out["label"].astype(str)
    if errors_only:
        out = out[~out["correct"]]
    out = out.sort_values("loss", ascending=False, kind="stable").reset_index(drop=True)
    out.insert(0, "rank", np.arange(1, len(out) + 1))
    front = ["rank", "path", "label", "pred", "prob_true", "prob_pred", "loss", "correct"]
    out = out[front + [c for c in out.columns if c not in front]]
    return out.head(k) if k is not None else out


def most_confused(df: pd.DataFrame, min_count: int = 1) -> pd.DataFrame:
    """(true, predicted, count) pairs of the errors, most frequent first."""
    wrong = df[df["label"].astype(str) != df["pred"].astype(str)]
    pairs = wrong.groupby(["label", "pred"]).size().reset_index(name="count")
    return (
        pairs[pairs["count"] >= min_count]
        .sort_values("count", ascending=False, kind="stable")
        .reset_index(drop=True)
    )


# ---------------------------------------------------------------- Grad-CAM


@dataclass
class CamResult:
    """A Grad-CAM explanation: the map (H x W in 0..1, the model input size), the overlay and what it explains."""

    heatmap: np.ndarray
    overlay: Image.Image
    image: Image.Image
    class_name: str
    class_index: int
    prob: float
    probs: dict[str, float]


def grad_cam(
    model: torch.nn.Module,
    layer: torch.nn.Module,
    x: torch.Tensor,
    class_index: int | None = None,
    temperature: float = 1.0,
) -> tuple[np.ndarray, np.ndarray]:
    """(map, probabilities) for one normalised 1 x C x H x W input: ReLU(sum_k mean(dy/dA_k) * A_k), upsampled
    to H x W and scaled to 0..1 (all zeros when nothing supports the class). Default class: the predicted one.
    The probabilities are softmax(logits / temperature): the calibrated ones Predict shows."""
    acts: list[torch.Tensor] = []
    grads: list[torch.Tensor] = []

    def keep(_module, _inputs, output):
        out = output[0] if isinstance(output, (tuple, list)) else output
        if out.requires_grad:  # only this call's forward (other threads predict under no_grad)
            acts.append(out)
            out.register_hook(grads.append)

    was_training = model.training
    with _HOOK_LOCK, torch.enable_grad():
        handle = layer.register_forward_hook(keep)
        try:
            model.eval()
            logits = model(x.detach().clone().requires_grad_(True))  # gradients flow even into a frozen body
            probs = torch.softmax(logits.float() / temperature, dim=1)[0]
            c = int(probs.argmax()) if class_index is None else int(class_index)
            model.zero_grad(set_to_none=True)
            logits[0, c].backward()
        finally:
            handle.remove()
            model.zero_grad(set_to_none=True)
            model.train(was_training)
    if not acts or not grads:
        raise RuntimeError("Grad-CAM could not read the target layer's activations and gradients")
    a, g = acts[-1].detach().float(), grads[-1].detach().float()
    cam = torch.relu((g.mean(dim=(2, 3), keepdim=True) * a).sum(1, keepdim=True))
    cam = torch.nn.functional.interpolate(cam, size=x.shape[-2:], mode="bilinear", align_corners=False)[0, 0]
    cam = cam - cam.min()
    top = float(cam.max())
    heat = (cam / top).cpu().numpy() if top > 1e-12 else np.zeros(tuple(x.shape[-2:]), dtype=np.float32)
    return heat.astype(np.float32), probs.detach().cpu().numpy()


def colorize(heatmap: np.ndarray) -> np.ndarray:
    """A 0..1 map as an H x W x 3 uint8 colour image (blue = low, red = high)."""
    pos = np.clip(heatmap, 0, 1) * (len(_CMAP) - 1)
    lo = np.floor(pos).astype(int)
    hi = np.minimum(lo + 1, len(_CMAP) - 1)
    frac = (pos - lo)[..., None]
    return (_CMAP[lo] * (1 - frac) + _CMAP[hi] * frac).astype(np.uint8)


def overlay(
    image: Image.Image, heatmap: np.ndarray, alpha: float = OVERLAY_ALPHA, size: int | None = None
) -> Image.Image:
    """The image with the coloured heatmap blended on top (weight rising with the map), optionally enlarged."""
    base = image.convert("RGB")
    if size and size != base.size[0]:
        base = base.resize((size, round(size * base.size[1] / base.size[0])), Image.Resampling.BICUBIC)
    heat = Image.fromarray((np.clip(heatmap, 0, 1) * 255).astype(np.uint8)).resize(
        base.size, Image.Resampling.BILINEAR
    )
    h = np.asarray(heat, dtype=np.float32)[..., None] / 255.0
    colours = colorize(h[..., 0])
    w = alpha * (0.25 + 0.75 * h)
    out = np.asarray(base, dtype=np.float32) * (1 - w) + colours * w
    return Image.fromarray(np.clip(out, 0, 255).astype(np.uint8))


def explain(
    predictor,
    path: str | Path,
    class_name: str | int | None = None,
    display_size: int | None = 448,
    alpha: float = OVERLAY_ALPHA,
) -> CamResult:
    """Grad-CAM for one file with a loaded core.evaluation.predict.Predictor (its preprocessing and model, reused).

    The heatmap has the model's input size; the overlay is drawn on the image the model saw, enlarged to
    `display_size` pixels wide when that is bigger (None keeps the input size).
    """
    from core.models import archs

    idx = _class_index(predictor.classes, class_name)
    layer = archs.gradcam_layer(predictor.model, predictor.manifest.arch)
    t = predictor.tensor_for(path)
    task = getattr(predictor, "task", "single")
    if task != "single":  # the task's probabilities; the map of a finding's own output, or of "grade >= g"
        probs = predictor.probs(t[None])[0]
        idx = int(probs.argmax()) if idx is None else idx
        corn = task == "ordinal" and getattr(predictor, "head", "corn") == "corn"
        output = max(0, idx - 1) if corn else idx
        heat, _ = grad_cam(predictor.model, layer, predictor.normalized(t[None]), output)
    else:
        heat, probs = grad_cam(
            predictor.model, layer, predictor.normalized(t[None]), idx, getattr(predictor, "temperature", 1.0)
        )
        idx = int(probs.argmax()) if idx is None else idx
    img = _to_image(t)
    size = display_size if display_size and display_size > img.size[0] else None
    return CamResult(
        heat,
        overlay(img, heat, alpha, size),
        img,
        predictor.classes[idx],
        idx,
        float(probs[idx]),
        dict(zip(predictor.classes, map(float, probs))),
    )


def _class_index(classes: list[str], class_name: str | int | None) -> int | None:
    """Index of a class given by name or index (None = the predicted class)."""
    if class_name is None:
        return None
    if isinstance(class_name, (int, np.integer)):
        if not 0 <= int(class_name) < len(classes):
            raise ValueError(f"class index {class_name} is out of range for {classes}")
        return int(class_name)
    if class_name not in classes:
        raise ValueError(f"unknown class {class_name!r}; the model's classes are {classes}")
    return classes.index(class_name)


def _to_image(t: torch.Tensor) -> Image.Image:
    """A C x H x W 0..1 tensor back to a PIL image (grey or RGB)."""
    arr = (t.clamp(0, 1).numpy() * 255).round().astype(np.uint8)
    return (
        Image.fromarray(arr[0], "L") if arr.shape[0] == 1 else Image.fromarray(arr.transpose(1, 2, 0), "RGB")
    )
