"""Tiny learnable image datasets generated inside tests (no network, no shared data)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image


def blob_dataset(root: Path, n_per_class: int = 40, size: int = 32, per_patient: int = 2, seed: int = 0) -> Path:
    """Folder-per-class PNGs: 'blob' images carry a bright spot, 'plain' ones do not; labels.csv with patient ids."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    rows = []
    for label in ("plain", "blob"):
        (root / label).mkdir(parents=True, exist_ok=True)
        for i in range(n_per_class):
            img = rng.normal(90, 20, (size, size))
            if label == "blob":
                cy, cx = rng.integers(size // 4, 3 * size // 4, 2)
                img += 120 * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * (size / 10) ** 2))
            path = root / label / f"{label}_{i:03d}.png"
            Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(path)
            rows.append({"path": f"{label}/{path.name}", "label": label, "patient_id": f"{label[0]}{i // per_patient:03d}"})
    pd.DataFrame(rows).to_csv(root / "labels.csv", index=False)
    return root
