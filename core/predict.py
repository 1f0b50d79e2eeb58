"""Predict with a saved model (weights + manifest, never a pickle): one image, many, or a folder."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from core import evaluate, imaging, modelio
from core.config import Window
from core.data import ImageReader


class Predictor:
    """A loaded model plus the exact preprocessing it was trained with; reuse it for many calls."""

    def __init__(self, model_path: str | Path, device: str | None = None):
        self.model, self.manifest = modelio.load_model(model_path)
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.model.to(self.device).eval()
        m = self.manifest
        self.classes: list[str] = list(m["classes"])
        window = Window(**m["window"]) if m.get("window") else None
        self.reader = ImageReader(int(m["img_size"]), m.get("channels", "rgb"), window, int(m.get("frame", 0)),
                                  use_cache=False)
        norm = m.get("normalize")
        self.mean = torch.tensor(norm["mean"]).view(1, -1, 1, 1) if norm else None
        self.std = torch.tensor(norm["std"]).view(1, -1, 1, 1) if norm else None

    def tensor_for(self, path: str | Path) -> torch.Tensor:
        """Decode, resize as in validation, scale to 0..1: a C x H x W float tensor."""
        from fastai.vision.augment import Resize, ResizeMethod

        img = self.reader({"path": str(path)})
        method = {"squish": ResizeMethod.Squish, "pad": ResizeMethod.Pad, "crop": ResizeMethod.Crop}
        img = Resize(self.reader.size, method=method[self.manifest.get("resize", "squish")], pad_mode="zeros")(
            img, split_idx=1)
        arr = np.asarray(img, dtype=np.float32) / 255.0
        arr = arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)
        return torch.from_numpy(np.ascontiguousarray(arr))

    @torch.no_grad()
    def probs(self, batch: torch.Tensor) -> np.ndarray:
        """Softmax probabilities for a batch of preprocessed tensors."""
        x = batch
        if self.mean is not None:
            x = (x - self.mean) / self.std
        logits = self.model(x.to(self.device))
        return torch.softmax(logits.float(), dim=1).cpu().numpy()

    def predict_one(self, path: str | Path) -> dict[str, Any]:
        """Class probabilities and the predicted class for one file."""
        p = self.probs(self.tensor_for(path)[None])[0]
        return {"pred": self.classes[int(p.argmax())], "probs": dict(zip(self.classes, map(float, p)))}

    def predict_paths(self, paths: list[str], batch_size: int = 32,
                      labels: list[str] | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
        """(predictions, problems) for many files; a broken file is reported, the rest are predicted."""
        good, tensors, problems = [], [], []
        for p in paths:
            try:
                tensors.append(self.tensor_for(p))
                good.append(p)
            except imaging.ImageError as err:
                problems.append({"path": str(p), "reason": str(err)})
        probs = [self.probs(torch.stack(tensors[i:i + batch_size])) for i in range(0, len(tensors), batch_size)]
        probs_arr = np.concatenate(probs) if probs else np.zeros((0, len(self.classes)))
        y = None
        if labels is not None:
            label_of = dict(zip(paths, labels))
            lookup = {c: i for i, c in enumerate(self.classes)}
            mapped = [lookup.get(str(label_of[p])) for p in good]
            y = None if any(v is None for v in mapped) else mapped
        df = evaluate.predictions_frame(good, y, probs_arr, self.classes)
        return df, pd.DataFrame(problems, columns=["path", "reason"])


def predict_folder(model_path: str | Path, folder: str | Path, batch_size: int = 32) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Predict every image/DICOM under a folder (recursively; hidden files skipped)."""
    root = Path(folder)
    if not root.is_dir():
        raise FileNotFoundError(f"folder not found: {folder}")
    exts = imaging.IMAGE_EXTS | imaging.DICOM_EXTS
    paths = sorted(str(p) for p in root.rglob("*")
                   if p.is_file() and p.suffix.lower() in exts and not any(s.startswith(".") for s in p.parts))
    return Predictor(model_path).predict_paths(paths, batch_size=batch_size)
