"""SYNTHETIC sample data of the multi-label and ordinal task types: generated pictures, not real patients.

`ensure_multilabel_sample()` writes `images/*.png` and two tables of the same labels: `findings.csv` (a delimited
`Finding Labels` column, "No Finding" for none, as NIH ChestX-ray14 has it) and `finding_columns.csv` (one
1 / 0 / blank / -1 column per finding, as CheXpert has it; a few -1 = uncertain). Findings: "nodule" (a bright round
spot), "effusion" (a bright band along the bottom), "line" (a thin vertical bright line), each present on its own.
`ensure_ordinal_sample()` writes `images/*.png` and `grades.csv` with grades KL0..KL4: two bright blocks (the bones
of a joint) whose gap narrows as the grade rises. Both tables carry a patient id (two images a patient). Seeded
numpy only: the same files every time; a few seconds at most.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from core.base import paths
from core.base.fsutil import atomic_write_text

FINDINGS = ("effusion", "line", "nodule")
GRADES = ("KL0", "KL1", "KL2", "KL3", "KL4")
MULTILABEL_DIR, ORDINAL_DIR = "sample_multilabel", "sample_ordinal"
FINDINGS_CSV, FINDING_COLUMNS_CSV, GRADES_CSV = "findings.csv", "finding_columns.csv", "grades.csv"
GROUP_COLUMN = "patient_id"
README = "SYNTHETIC SAMPLE DATA ({what}) - NOT REAL PATIENTS, NOT FOR ANY MEDICAL USE. Made by core/data/sample_tasks.py.\n"


def _noise(rng: np.random.Generator, size: int) -> np.ndarray:
    """A smooth grey background with pixel noise."""
    coarse = Image.fromarray(rng.normal(90, 18, (4, 4)).clip(0, 255).astype(np.uint8))
    smooth = np.asarray(coarse.resize((size, size), Image.Resampling.BICUBIC), dtype=float)
    return smooth + rng.normal(0, 6, (size, size))


def _finding_picture(found: set[str], rng: np.random.Generator, size: int) -> np.ndarray:
    """A picture with the drawn findings."""
    img = _noise(rng, size)
    yy, xx = np.mgrid[:size, :size]
    if "nodule" in found:
        cy, cx = rng.integers(size // 5, 3 * size // 5, 2)
        img += 110 * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * (size / 14) ** 2))
    if "effusion" in found:
        img[int(size * 0.78) :, :] += 80
    if "line" in found:
        x = int(rng.integers(size // 5, 4 * size // 5))
        img[:, x : x + max(1, size // 24)] += 100
    return img.clip(0, 255).astype(np.uint8)


def _grade_picture(grade: int, rng: np.random.Generator, size: int) -> np.ndarray:
    """Two bright blocks whose gap narrows from wide (grade 0) to closed (grade 4)."""
    img = _noise(rng, size)
    gap = int(round(size * (0.30 - 0.065 * grade + rng.normal(0, 0.01))))
    mid = size // 2 + int(rng.integers(-size // 16, size // 16 + 1))
    top, bottom = max(1, mid - gap // 2), min(size - 1, mid + (gap - gap // 2))
    img[:top, size // 5 : 4 * size // 5] += 90
    img[bottom:, size // 5 : 4 * size // 5] += 90
    return img.clip(0, 255).astype(np.uint8)


def _save(root: Path, name: str, arr: np.ndarray) -> str:
    """Write one PNG under images/ and return its path relative to root."""
    rel = f"images/{name}.png"
    Image.fromarray(arr).save(root / rel)
    return rel


def _finding_rows(root: Path, n: int, size: int, rng: np.random.Generator) -> list[dict]:
    """n images with findings drawn independently (each in about a third of the images)."""
    rows = []
    for i in range(n):
        found = {f for f in FINDINGS if rng.random() < 0.35}
        rel = _save(root, f"img{i:04d}", _finding_picture(found, rng, size))
        row: dict[str, object] = {"path": rel, GROUP_COLUMN: f"p{i // 2:04d}"}
        for f in FINDINGS:  # about 1 in 12 labels uncertain (-1), about 1 in 12 absent ones left blank
            r = rng.random()
            row[f] = -1 if r < 0.08 else (1 if f in found else ("" if r > 0.92 else 0))
        row["Finding Labels"] = "|".join(sorted(found)) or "No Finding"
        rows.append(row)
    return rows


def ensure_multilabel_sample(root: Path | None = None, n: int = 240, size: int = 64, seed: int = 0) -> Path:
    """Generate the SYNTHETIC multi-label sample under root (default $XRT_HOME/sample_multilabel) unless present."""
    root = Path(root) if root is not None else paths.sub(MULTILABEL_DIR)
    if (root / FINDINGS_CSV).is_file() and (root / FINDING_COLUMNS_CSV).is_file():
        return root
    (root / "images").mkdir(parents=True, exist_ok=True)
    rows = pd.DataFrame(_finding_rows(root, n, size, np.random.default_rng(seed)))
    atomic_write_text(root / "README.txt", README.format(what="multi-label findings"))
    atomic_write_text(root / FINDING_COLUMNS_CSV, rows[["path", GROUP_COLUMN, *FINDINGS]].to_csv(index=False))
    atomic_write_text(root / FINDINGS_CSV, rows[["path", GROUP_COLUMN, "Finding Labels"]].to_csv(index=False))
    return root


def ensure_ordinal_sample(root: Path | None = None, n: int = 250, size: int = 64, seed: int = 0) -> Path:
    """Generate the SYNTHETIC ordinal sample under root (default $XRT_HOME/sample_ordinal) unless present."""
    root = Path(root) if root is not None else paths.sub(ORDINAL_DIR)
    if (root / GRADES_CSV).is_file():
        return root
    (root / "images").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        grade = int(rng.integers(0, len(GRADES)))
        rel = _save(root, f"knee{i:04d}", _grade_picture(grade, rng, size))
        rows.append({"path": rel, "grade": GRADES[grade], GROUP_COLUMN: f"p{i // 2:04d}"})
    atomic_write_text(root / "README.txt", README.format(what="ordinal grades"))
    atomic_write_text(root / GRADES_CSV, pd.DataFrame(rows).to_csv(index=False))
    return root


def describe(task: str, root: Path | None = None) -> dict[str, object]:
    """Generate the multi-label or ordinal sample (once) and say where it is and how to train on it."""
    if task == "multilabel":
        root = ensure_multilabel_sample(root)
        csv = root / FINDINGS_CSV
        return {
            "root": str(root),
            "csv": str(csv),
            "finding_columns_csv": str(root / FINDING_COLUMNS_CSV),
            "train": f"python -m core train --csv {csv} --label-col 'Finding Labels' --label-delimiter '|' "
            f"--group-col {GROUP_COLUMN} --task multilabel",
            "note": "SYNTHETIC images for trying the app, not real X-rays",
        }
    root = ensure_ordinal_sample(root)
    csv = root / GRADES_CSV
    return {
        "root": str(root),
        "csv": str(csv),
        "train": f"python -m core train --csv {csv} --label-col grade --group-col {GROUP_COLUMN} --task ordinal",
        "note": "SYNTHETIC images for trying the app, not real X-rays",
    }
