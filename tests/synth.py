"""Tiny learnable image datasets generated inside tests (no network, no shared data)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image


def blob_dataset(
    root: Path, n_per_class: int = 40, size: int = 32, per_patient: int = 2, seed: int = 0
) -> Path:
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
            rows.append(
                {
                    "path": f"{label}/{path.name}",
                    "label": label,
                    "patient_id": f"{label[0]}{i // per_patient:03d}",
                }
            )
    pd.DataFrame(rows).to_csv(root / "labels.csv", index=False)
    return root


def smooth_dataset(
    root: Path,
    n: int = 60,
    size: int = 32,
    big_class_size: int | None = None,
    seed: int = 0,
    copies: bool = False,
) -> Path:
    """Two classes 'a'/'b' of random smooth pictures (labels carry no signal); labels.csv with patient ids.

    big_class_size saves class 'b' at another size (a planted metadata shortcut); copies adds a JPEG re-save of
    a/a003.png filed as class 'b' (patient zz1) and an identical copy of a/a010.png (patient zz2).
    """
    rng = np.random.default_rng(seed)
    rows = []
    for label in ("a", "b"):
        (root / label).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            side = big_class_size if (label == "b" and big_class_size) else size
            coarse = Image.fromarray(rng.normal(110, 40, (6, 6)).clip(0, 255).astype(np.uint8))
            smooth = np.asarray(coarse.resize((side, side), Image.Resampling.BICUBIC), dtype=float)
            img = (smooth + rng.normal(0, 4, (side, side))).clip(0, 255).astype(np.uint8)
            rel = f"{label}/{label}{i:03d}.png"
            Image.fromarray(img).save(root / rel)
            rows.append({"path": rel, "label": label, "patient_id": f"{label}{i // 2}"})
    if copies:
        Image.open(root / "a/a003.png").resize((size - 8, size - 8)).save(
            root / "b/copy_resaved.jpg", quality=85
        )
        (root / "a/copy_same.png").write_bytes((root / "a/a010.png").read_bytes())
        rows += [
            {"path": "b/copy_resaved.jpg", "label": "b", "patient_id": "zz1"},
            {"path": "a/copy_same.png", "label": "a", "patient_id": "zz2"},
        ]
    pd.DataFrame(rows).to_csv(root / "labels.csv", index=False)
    return root / "labels.csv"


def tiny_dls(root: Path, n: int = 20, size: int = 32):
    """A tiny two-class fastai DataLoaders on CPU: `n` generated RGB images, 'bright' and 'dark', 25 % validation."""
    from fastai.vision.all import ImageDataLoaders, Resize

    rng = np.random.default_rng(0)
    fnames, labels = [], []
    for i in range(n):
        label = "bright" if i % 2 else "dark"
        base = 180 if i % 2 else 60
        arr = np.clip(rng.normal(base, 30, (size, size, 3)), 0, 255).astype(np.uint8)
        path = root / f"{label}_{i}.png"
        Image.fromarray(arr).save(path)
        fnames.append(path)
        labels.append(label)
    return ImageDataLoaders.from_lists(
        root,
        fnames,
        labels,
        valid_pct=0.25,
        seed=0,
        item_tfms=Resize(size),
        bs=4,
        num_workers=0,
        device="cpu",
    )


def brain_slices(root: Path, subjects: int = 3, levels: int = 16, size: int = 96, resaved: int = 2) -> Path:
    """MRI-like axial slices: per subject a head outline growing and shrinking with the level, a fixed texture
    and ventricles of changing size (neighbouring levels look alike, yet are different images); labels.csv
    with patient ids and the class = subject % 2. The first `resaved` slices of subject 0 also get a JPEG
    re-save at 90 % size, filed under the other class (the only true near-duplicates)."""
    rows = []
    yy, xx = np.mgrid[0:size, 0:size] / size - 0.5
    for s in range(subjects):
        rng = np.random.default_rng(100 + s)
        ends = [(rng.normal(0, 1, (10, 10)) * 40 + 128).clip(0, 255).astype(np.uint8) for _ in range(2)]
        lo, hi = (
            np.asarray(Image.fromarray(c).resize((size, size), Image.Resampling.BICUBIC), float) for c in ends
        )
        label = "ab"[s % 2]
        (root / label).mkdir(parents=True, exist_ok=True)
        for z in range(levels):
            t = 0.9 * (2 * (z + 0.5) / levels - 1)  # -0.85 .. 0.85 from the base of the skull to the top
            r = 0.42 * np.sqrt(max(0.06, 1 - t * t))
            head = (xx / (0.85 * r)) ** 2 + (yy / r) ** 2 <= 1
            texture = lo + (hi - lo) * z / max(1, levels - 1)  # the anatomy changes with the level
            img = np.zeros((size, size))
            img[head] = 60 + 0.6 * texture[head]
            vr = 0.09 * max(0.0, 1 - abs(t - 0.2) * 2.2)
            for cx in (-0.05, 0.05):
                img[head & (((xx - cx) / (0.5 * vr + 1e-6)) ** 2 + ((yy + 0.02) / (vr + 1e-6)) ** 2 <= 1)] = (
                    20
                )
            rel = f"{label}/s{s}_z{z:02d}.png"
            Image.fromarray(img.clip(0, 255).astype(np.uint8)).save(root / rel)
            rows.append({"path": rel, "label": label, "patient_id": f"p{s}"})
    other = "ab"[1]
    for z in range(resaved):
        rel = f"{other}/copy_s0_z{z:02d}.jpg"
        Image.open(root / f"a/s0_z{z:02d}.png").resize((int(size * 0.9),) * 2).save(root / rel, quality=85)
        rows.append({"path": rel, "label": other, "patient_id": f"copy{z}"})
    pd.DataFrame(rows).to_csv(root / "labels.csv", index=False)
    return root / "labels.csv"
