"""Checks of the data itself: metadata shortcuts, (near-)duplicates across splits, suspect labels, corrections.

Compute only (no drawing, no Streamlit). Features come from file headers and the decode cache's downscaled
images, so a check after a scan or a training run decodes nothing again; nothing identifying is reported
(DICOM tags from an allow-list only, patients compared but never shown).
"""

from __future__ import annotations

import hashlib
import math
import os
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image

from core.base import fmt, privacy, steps
from core.base import paths as app_paths
from core.base.config import SourceConfig
from core.base.steps import OnStep
from core.data import decode_cache, imaging
from core.data.splits import patient_groups
from core.evaluation import evaluate, relabel

SHORTCUT_AUC = 0.70  # metadata that predicts the label this well is flagged
NEAR_DISTANCE = 4  # perceptual-hash bits (of 64) within which two images count as near-duplicates
HASH_SIZE = 8  # 8 x 8 = 64-bit pHash
HASH_GRID = 32  # the pHash DCT runs on a 32 x 32 grey thumbnail
MATCH_GRID = 16  # hash candidates are confirmed on 16 x 16 grey thumbnails ...
MIN_CORRELATION = (
    0.999  # ... whose pixel correlation must reach this: re-saves, resizes and re-encodes (also of
)
# grainy images) reach 0.9997; neighbouring MRI slices of one head (different images with the same outline)
# 0.990-0.9985, which the former 0.99 let through (tests/test_duplicates_mri.py). Finer grids separate worse.
FEATURE_SIZE = 224  # decode-cache size the features read (the default training size: entries usually exist)
CV_FOLDS = 5
DICOM_TEXT_TAGS = (
    "Modality",
    "Manufacturer",
    "ManufacturerModelName",
    "ViewPosition",
    "PhotometricInterpretation",
    "BodyPartExamined",
    "PresentationIntentType",
    "StudyDescription",
    "SeriesDescription",
)
DICOM_NUMBER_TAGS = ("PixelSpacing", "ImagerPixelSpacing", "BitsStored", "KVP")
TEXT_FEATURES = ("format",) + DICOM_TEXT_TAGS
PIXEL_FEATURES = ("mean", "std")
FEATURE_WORDS = {
    "width": "image width",
    "height": "image height",
    "aspect": "the aspect ratio",
    "file_size": "file size",
    "bits": "bit depth",
    "format": "the file format",
    "mean": "mean brightness",
    "std": "contrast (brightness spread)",
    **{t: f"the DICOM tag {t}" for t in DICOM_TEXT_TAGS + DICOM_NUMBER_TAGS},
}
# the new label of an item left out (core.evaluation.relabel: corrections by task)
EXCLUDED = relabel.EXCLUDED


# ---------------------------------------------------------------- per-image features


def _bits(mode: str) -> int:
    """Bits per sample of a PIL mode (8 unless the mode says otherwise)."""
    return {"1": 1, "I;16": 16, "I;16L": 16, "I;16B": 16, "I;16N": 16, "I": 16, "F": 32}.get(mode, 8)


def phash(im: Image.Image) -> int:
    """64-bit perceptual hash: signs of the 8 x 8 lowest DCT frequencies of a 32 x 32 grey copy vs their median."""
    from scipy.fft import dctn

    small = np.asarray(
        im.convert("L").resize((HASH_GRID, HASH_GRID), Image.Resampling.BILINEAR), dtype=np.float32
    )
    low = dctn(small, norm="ortho")[:HASH_SIZE, :HASH_SIZE].ravel()
    bits = low > np.median(low)
    return int(np.packbits(bits).view(">u8")[0])


def _header(path: str, kind: str) -> dict[str, Any]:
    """Format, bit depth and (DICOM) allow-listed tags from the file header, without decoding pixels."""
    if kind != "dicom":
        with Image.open(path) as im:
            w, h = im.size
            return {"format": str(im.format or ""), "bits": _bits(im.mode), "_width": w, "_height": h}
    meta = imaging.dicom_metadata(path)  # allow-listed tags only (never identifying ones)
    out: dict[str, Any] = {"format": "DICOM", "bits": _number(meta.get("BitsStored", ""))}
    out.update(_width=_number(meta.get("Columns", "")), _height=_number(meta.get("Rows", "")))
    out.update({t: meta.get(t, "") for t in DICOM_TEXT_TAGS})
    out.update({t: _number(meta.get(t, "")) for t in DICOM_NUMBER_TAGS})
    return out


def _number(text: str) -> float:
    """The first number of a (multi-valued) tag text; NaN when absent."""
    try:
        return float(str(text).split("\\")[0])
    except ValueError:
        return math.nan


def _file_md5(path: str) -> str:
    """md5 of a file's bytes (identical files)."""
    h = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _one(path: str, kind: str, cache: decode_cache.DecodeCache, size: int) -> dict[str, Any]:
    """Every feature of one image; an unreadable file gets its reason and NaNs (never raises)."""
    try:
        row: dict[str, Any] = {"file_size": float(os.stat(path).st_size), **_header(path, kind)}
        im = cache.get(path, size)
        grey = np.asarray(im.convert("L"), dtype=np.float32) / 255.0
        match = np.asarray(
            im.convert("L").resize((MATCH_GRID, MATCH_GRID), Image.Resampling.BILINEAR), np.uint8
        )
        row.update(
            mean=float(grey.mean()),
            std=float(grey.std()),
            phash=phash(im),
            md5=_file_md5(path),
            match=match.ravel(),
            error="",
        )
        return row
    except Exception as err:  # one odd file must not stop a check
        return {"error": str(err) if isinstance(err, imaging.ImageError) else type(err).__name__}


def image_features(
    items: pd.DataFrame,
    size: int = FEATURE_SIZE,
    cache: decode_cache.DecodeCache | None = None,
    workers: int = 4,
    progress: OnStep | None = None,
) -> pd.DataFrame:
    """One row per item (same order): metadata, thumbnail mean/std, 64-bit pHash, file md5, error."""
    cache = cache or decode_cache.DecodeCache()
    kinds = items["kind"] if "kind" in items else pd.Series("image", index=items.index)
    args = list(zip(items["path"].astype(str), kinds.astype(str)))
    with ThreadPoolExecutor(max_workers=max(1, workers)) as ex:
        rows = list(
            steps.counted(
                ex.map(lambda a: _one(a[0], a[1], cache, size), args), len(args), progress, "images"
            )
        )
    out = pd.DataFrame(rows, index=items.index)
    for side in ("width", "height"):  # a large table's unopened rows (NaN) get the size this header read saw
        seen = out.pop(f"_{side}") if f"_{side}" in out else np.nan
        out[side] = pd.Series(items[side].astype(float).to_numpy(), index=out.index).fillna(seen)
    out["aspect"] = out["width"] / out["height"].replace(0, np.nan)
    for col in ("format", "bits", "mean", "std", "file_size", "phash", "md5", "match", "error"):
        if col not in out:
            out[col] = np.nan
    out["error"] = out["error"].fillna("")
    return out


# ---------------------------------------------------------------- shortcut check


def _design(feats: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """Numeric design matrix (text features as category codes, NaN kept); the constant columns left out."""
    cols = [
        "width",
        "height",
        "aspect",
        "file_size",
        "bits",
        *PIXEL_FEATURES,
        "format",
        *[c for c in DICOM_TEXT_TAGS + DICOM_NUMBER_TAGS if c in feats],
    ]
    x = pd.DataFrame(index=feats.index)
    for c in cols:
        if c in TEXT_FEATURES:
            codes = feats[c].fillna("").astype(str).astype("category").cat.codes
            x[c] = codes.astype(float)
        else:
            x[c] = pd.to_numeric(feats[c], errors="coerce").astype(float)
    constant = [c for c in cols if x[c].nunique(dropna=False) <= 1]
    return x.drop(columns=constant), constant


def _folds(y: np.ndarray, groups: np.ndarray | None, k: int, seed: int) -> tuple[list, str]:
    """CV folds (grouped by patient when groups exist) and a phrase saying how they were made."""
    from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

    k = max(2, min(k, int(np.bincount(y).min())))
    x = np.zeros(len(y))
    if groups is not None and len(set(groups)) >= k:
        return list(
            StratifiedGroupKFold(k, shuffle=True, random_state=seed).split(x, y, groups)
        ), f"{k}-fold cross-validation grouped by patient"
    return list(StratifiedKFold(k, shuffle=True, random_state=seed).split(x, y)), f"{k}-fold cross-validation"


def _oof(make_model, x: np.ndarray, y: np.ndarray, folds: list, n_classes: int) -> np.ndarray:
    """Out-of-fold class probabilities of a scikit-learn model (one thread: many small fits, shared cores)."""
    from threadpoolctl import threadpool_limits

    probs = np.full((len(y), n_classes), 1.0 / n_classes)
    with threadpool_limits(1):
        for tr, va in folds:
            model = make_model().fit(x[tr], y[tr])
            probs[np.ix_(va, model.classes_)] = model.predict_proba(x[va])
    return probs


def _gbm(n: int):
    """The multi-feature model: small gradient-boosted trees (NaN-aware, seconds on 100k rows); leaves fit n rows."""
    from sklearn.ensemble import HistGradientBoostingClassifier

    return HistGradientBoostingClassifier(
        max_iter=60,
        max_leaf_nodes=15,
        learning_rate=0.1,
        random_state=0,
        min_samples_leaf=max(2, min(20, n // 20)),
    )


def _stump():
    """The one-feature model: a tree of at most 8 leaves (any monotone or banded relation)."""
    from sklearn.tree import DecisionTreeClassifier

    return DecisionTreeClassifier(max_leaf_nodes=8, min_samples_leaf=5, random_state=0)


def shortcut_check(
    items: pd.DataFrame,
    feats: pd.DataFrame,
    threshold: float = SHORTCUT_AUC,
    k: int = CV_FOLDS,
    seed: int = 0,
    n_boot: int = 1000,
) -> dict[str, Any]:
    """Can the label be predicted from metadata alone? Cross-validated AUC with a 95 % CI, per-feature AUCs, warning."""
    ok = (feats["error"] == "").to_numpy()
    labels = items["label"].astype(str).to_numpy()[ok]
    classes = sorted(set(labels))
    base = {"threshold": threshold, "classes": classes, "n": int(ok.sum()), "n_unreadable": int((~ok).sum())}
    if len(classes) < 2 or np.bincount(np.searchsorted(classes, labels)).min() < 2:
        return {
            **base,
            "auc": None,
            "features": [],
            "constant": [],
            "flagged": False,
            "warning": "",
            "note": "needs at least 2 classes with 2 images each",
        }
    y = np.searchsorted(classes, labels)
    x, constant = _design(feats[ok])
    groups = patient_groups(items[ok].reset_index(drop=True))
    folds, how = _folds(y, groups, k, seed)
    per_feature = [_feature_auc(c, x[c].to_numpy(), y, folds, len(classes)) for c in x.columns]
    per_feature.sort(key=lambda f: -f["auc"] if math.isfinite(f["auc"]) else 1.0)
    if x.shape[1]:
        probs = _oof(lambda: _gbm(len(y)), x.to_numpy(), y, folds, len(classes))
        auc = evaluate.bootstrap_ci(y, probs, classes, n_resamples=n_boot, seed=seed)["roc_auc"]
    else:
        auc = {"value": 0.5, "lo": 0.5, "hi": 0.5}
    out = {
        **base,
        "auc": auc,
        "cv": how,
        "features": per_feature,
        "constant": constant,
        "flagged": bool(auc["value"] >= threshold),
    }
    out["warning"] = shortcut_warning(out)
    return out


def _feature_auc(name: str, col: np.ndarray, y: np.ndarray, folds: list, n_classes: int) -> dict[str, Any]:
    """Cross-validated AUC of one feature on its own."""
    filled = np.where(np.isfinite(col), col, -1e12).reshape(-1, 1)
    auc = evaluate.roc_auc(y, _oof(_stump, filled, y, folds, n_classes))
    kind = "pixels" if name in PIXEL_FEATURES else "metadata"
    return {"feature": name, "what": FEATURE_WORDS.get(name, name), "auc": float(auc), "kind": kind}


def shortcut_warning(res: dict[str, Any]) -> str:
    """A plain-words warning for a flagged result ('' when not flagged)."""
    if not res.get("flagged"):
        return ""
    auc, top = res["auc"], (res["features"] or [{}])[0]
    ci = f"AUC {auc['value']:.2f}, 95% CI {auc['lo']:.2f}-{auc['hi']:.2f}"
    if top and top["auc"] >= res["threshold"]:
        what = top["what"][0].upper() + top["what"][1:]
        text = (
            f"{what} alone separates the classes (AUC {top['auc']:.2f}; all metadata "
            f"together: {ci}): the model may learn the scanner, not the disease."
        )
    else:
        text = (
            f"Image metadata together predict the label ({ci}) without looking at the anatomy: the model may "
            "learn the scanner, not the disease."
        )
    if top.get("kind") == "pixels":
        text += " Brightness can be real signal (an opacity is brighter); check how each class was acquired."
    return text


# ---------------------------------------------------------------- duplicates


def _popcount(x: np.ndarray) -> np.ndarray:
    """Set bits per uint64."""
    return np.bitwise_count(x).astype(np.int64)


def _bands(max_distance: int) -> list[tuple[int, int]]:
    """(shift, width) of max_distance + 1 bit bands: two hashes within max_distance agree on a whole band."""
    n = max_distance + 1
    widths = [64 // n + (1 if i < 64 % n else 0) for i in range(n)]
    shifts = np.cumsum([0, *widths[:-1]])
    return list(zip(map(int, shifts), widths))


def hash_pairs(hashes: np.ndarray, max_distance: int = NEAR_DISTANCE) -> pd.DataFrame:
    """All pairs (i < j) of 64-bit hashes within `max_distance` bits, by multi-index hashing (no all-pairs loop).

    Each hash is cut into max_distance + 1 bands; by the pigeonhole principle a pair within the distance agrees
    exactly on at least one band, so only hashes sharing a band value are compared.
    """
    h = np.asarray(hashes, dtype=np.uint64)
    found: list[np.ndarray] = []
    for shift, width in _bands(max_distance):
        key = (h >> np.uint64(shift)) & np.uint64((1 << width) - 1)
        order = np.argsort(key, kind="stable")
        _, starts, counts = np.unique(key[order], return_index=True, return_counts=True)
        for s, c in zip(starts[counts > 1], counts[counts > 1]):
            found.append(_close_in_bucket(h, np.sort(order[s : s + c]), max_distance))
    if not found:
        return pd.DataFrame({"i": [], "j": [], "distance": []}, dtype=int)
    pairs = np.unique(np.concatenate(found), axis=0)
    return pd.DataFrame({"i": pairs[:, 0], "j": pairs[:, 1], "distance": pairs[:, 2]})


def _close_in_bucket(h: np.ndarray, idx: np.ndarray, max_distance: int, chunk: int = 2048) -> np.ndarray:
    """(i, j, distance) rows of the pairs within one bucket that are within max_distance (chunked)."""
    rows = []
    for a in range(0, len(idx), chunk):
        left = idx[a : a + chunk]
        d = _popcount(h[left][:, None] ^ h[idx][None, :])
        ii, jj = np.nonzero((d <= max_distance) & (left[:, None] < idx[None, :]))
        rows.append(np.stack([left[ii], idx[jj], d[ii, jj]], axis=1))
    return np.concatenate(rows) if rows else np.zeros((0, 3), dtype=np.int64)


def clusters(n: int, pairs: pd.DataFrame) -> np.ndarray:
    """Connected components of the duplicate graph: a cluster id per item (singletons get their own)."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    graph = coo_matrix((np.ones(len(pairs)), (pairs["i"].to_numpy(), pairs["j"].to_numpy())), shape=(n, n))
    return connected_components(graph, directed=False)[1]


def _col(items: pd.DataFrame, name: str) -> np.ndarray:
    """A column as text ('' when absent)."""
    return items[name].fillna("").astype(str).to_numpy() if name in items else np.full(len(items), "")


def correlation(feats: pd.DataFrame, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """Pixel correlation of the MATCH_GRID grey thumbnails of rows i and j (1 = same picture up to brightness)."""
    if not len(i):
        return np.zeros(0)
    thumbs = feats["match"].to_numpy()
    a = np.stack([thumbs[k] for k in i]).astype(np.float32)
    b = np.stack([thumbs[k] for k in j]).astype(np.float32)
    a -= a.mean(1, keepdims=True)
    b -= b.mean(1, keepdims=True)
    den = np.sqrt((a * a).sum(1) * (b * b).sum(1))
    return np.divide((a * b).sum(1), den, out=np.where(den == 0, 1.0, 0.0), where=den > 0)


def find_duplicates(
    items: pd.DataFrame,
    feats: pd.DataFrame,
    max_distance: int = NEAR_DISTANCE,
    min_correlation: float = MIN_CORRELATION,
) -> pd.DataFrame:
    """Pairs of identical or near-identical images with what makes them leak (split, fold, patient, label).

    Candidates are pHash pairs within max_distance bits (hash_pairs), confirmed by thumbnail correlation (chest
    X-rays of different patients can share a pHash). Columns: i, j (row positions), a, b (relpaths), distance
    (hash bits), correlation, kind ('identical file' / 'near'), label_a, label_b, and the flags cross_split,
    cross_fold, cross_patient, cross_label, leak. Patient values are compared, never reported.
    """
    ok = np.flatnonzero((feats["error"] == "").to_numpy())
    pairs = hash_pairs(feats["phash"].to_numpy()[ok].astype(np.uint64), max_distance)
    i, j = ok[pairs["i"].to_numpy(dtype=int)], ok[pairs["j"].to_numpy(dtype=int)]
    md5 = feats["md5"].astype(str).to_numpy()
    corr = correlation(feats, i, j)
    keep = (corr >= min_correlation) | (md5[i] == md5[j])
    i, j, corr, pairs = i[keep], j[keep], corr[keep], pairs[keep]
    rel, label = _col(items, "relpath"), _col(items, "label")
    out = pd.DataFrame(
        {
            "i": i,
            "j": j,
            "a": rel[i],
            "b": rel[j],
            "distance": pairs["distance"].to_numpy(),
            "correlation": np.round(corr, 4),
            "kind": np.where(md5[i] == md5[j], "identical file", "near"),
            "label_a": label[i],
            "label_b": label[j],
        }
    )
    for flag, col in (("cross_split", "split"), ("cross_fold", "fold"), ("cross_patient", "group")):
        v = _col(items, col)
        out[flag] = (v[i] != "") & (v[j] != "") & (v[i] != v[j]) & (v[i] != "-1") & (v[j] != "-1")
    out["cross_label"] = out["label_a"] != out["label_b"]
    out["leak"] = out[["cross_split", "cross_fold", "cross_patient", "cross_label"]].any(axis=1)
    return out.sort_values(["leak", "distance"], ascending=[False, True], kind="stable").reset_index(
        drop=True
    )


def duplicate_summary(dups: pd.DataFrame, n_items: int) -> dict[str, Any]:
    """Counts of a find_duplicates table."""
    members = set(dups["i"]).union(dups["j"])
    return {
        "pairs": len(dups),
        "identical_files": int((dups["kind"] == "identical file").sum()),
        "near": int((dups["kind"] == "near").sum()),
        "items_involved": len(members),
        "n_items": n_items,
        **{
            k: int(dups[k].sum())
            for k in ("cross_split", "cross_fold", "cross_patient", "cross_label", "leak")
        },
    }


def pair_reason(pair: Mapping[str, Any]) -> str:
    """Why a pair of find_duplicates counts as a duplicate, and what it leaks across, in plain words."""
    why = (
        "the two files are byte for byte identical"
        if pair["kind"] == "identical file"
        else f"near-duplicate: perceptual hashes differ in {int(pair['distance'])} of 64 bits and the "
        f"{MATCH_GRID} x {MATCH_GRID} thumbnails correlate {float(pair['correlation']):.4f} (re-saves and "
        f"resizes of one picture reach {MIN_CORRELATION})"
    )
    across = [
        text
        for flag, text in (
            ("cross_patient", "different patients"),
            ("cross_label", f"labels {pair['label_a']} / {pair['label_b']}"),
            ("cross_split", "different splits"),
            ("cross_fold", "different folds"),
        )
        if bool(pair.get(flag))
    ]
    return why + (f"; filed under {', '.join(across)}" if across else "") + "."


def keep_duplicates_together(items: pd.DataFrame, dups: pd.DataFrame) -> pd.DataFrame:
    """A copy whose group column merges near-duplicate clusters with patients, so splits keep them on one side."""
    out = items.copy().reset_index(drop=True)
    n = len(out)
    if not len(dups):
        return out
    g = _col(out, "group")
    links = [dups[["i", "j"]].to_numpy(dtype=int)]
    for _, pos in pd.Series(np.arange(n))[g != ""].groupby(g[g != ""]):
        p = pos.to_numpy()
        links.append(np.stack([p[:-1], p[1:]], axis=1))
    edges = np.concatenate(links)
    comp = clusters(n, pd.DataFrame({"i": edges[:, 0], "j": edges[:, 1]}))
    size = np.bincount(comp)
    out["group"] = np.where(size[comp] > 1, np.char.add("dup-", comp.astype(str)), g)
    return out


def check_source(
    items: pd.DataFrame,
    size: int = FEATURE_SIZE,
    max_distance: int = NEAR_DISTANCE,
    workers: int = 4,
    n_boot: int = 1000,
    cache: decode_cache.DecodeCache | None = None,
    progress: OnStep | None = None,
) -> dict[str, Any]:
    """Both checks on an items table: {"shortcut": ..., "duplicates": summary, "pairs": table, "features": table}."""
    feats = image_features(items, size=size, cache=cache, workers=workers, progress=progress)
    dups = find_duplicates(items, feats, max_distance)
    return {
        "shortcut": shortcut_check(items, feats, n_boot=n_boot),
        "duplicates": duplicate_summary(dups, len(items)),
        "pairs": dups,
        "features": feats,
    }


# ---------------------------------------------------------------- suspect labels


def suspect_labels(oof: pd.DataFrame, classes: list[str]) -> pd.DataFrame:
    """Items whose given label the out-of-fold model disagrees with, most suspect first (confident learning).

    Uses cleanlab's find_label_issues when installed, else the same confident-joint rule here. Columns: rank,
    path, label, suggested, p_given, p_suggested, issue (+ the frame's other columns). Every labelled item is
    ranked (by the probability of its given label, flagged issues first).
    """
    df = oof[oof["label"].astype(str).isin(classes)].reset_index(drop=True)
    y, probs = evaluate.labels_and_probs(df, classes)
    out = df.copy()
    out["suggested"] = np.asarray(classes)[probs.argmax(1)] if len(df) else []
    out["p_given"] = probs[np.arange(len(y)), y] if len(df) else []
    out["p_suggested"] = probs.max(1) if len(df) else []
    out["issue"] = label_issues(y, probs) if len(df) else []
    out = out.sort_values(["issue", "p_given"], ascending=[False, True], kind="stable").reset_index(drop=True)
    out.insert(0, "rank", np.arange(1, len(out) + 1))
    front = ["rank", "path", "label", "suggested", "p_given", "p_suggested", "issue"]
    return out[front + [c for c in out.columns if c not in front]]


def suspects_withheld(
    oof: pd.DataFrame, classes: list[str], auc_ci: dict[str, float] | None = None, of: str = "out-of-fold"
) -> str | None:
    """Why a model's disagreements with the labels are no evidence about them, or None when they are.

    Withheld when the model predicts one class for (almost) everything, or when its ROC AUC on these
    predictions (`of`: "out-of-fold", "validation"...) is not above chance by a margin (the 95 % CI includes
    0.5). `auc_ci` ({"value", "lo", "hi"}) saves the bootstrap.
    """
    df = oof[oof["label"].astype(str).isin(classes)]
    y, probs = evaluate.labels_and_probs(df, classes)
    if len(np.unique(y)) < 2:
        return f"the {of} predictions hold only one labelled class, so the model's disagreement means nothing"
    pred = evaluate.predict_labels(probs)
    if evaluate.predicts_one_class(y, pred, len(classes)):
        top, share, _true = evaluate.dominant_class(y, pred, len(classes))
        return (
            f"the {of} model calls {share:.0%} of the images '{classes[top]}': it predicts one class, "
            "so every image of another class would look mislabelled"
        )
    ci = auc_ci or evaluate.bootstrap_ci(y, probs, classes)["roc_auc"]
    if not (math.isfinite(ci["lo"]) and ci["lo"] > 0.5):
        return (
            f"the {of} ROC AUC is {fmt.with_ci(ci)}: its interval "
            "includes 0.5 (chance), so the model has not shown that it learned to tell the classes apart"
        )
    return None


def label_issues(y: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """Boolean mask of likely label errors: cleanlab when available, else confident learning's off-diagonal rule."""
    try:
        from cleanlab.filter import find_label_issues
    except ImportError:
        return _confident_issues(y, probs)
    if np.bincount(y, minlength=probs.shape[1]).min() < 1:
        return _confident_issues(y, probs)
    return np.asarray(find_label_issues(y, probs, filter_by="prune_by_noise_rate"), dtype=bool)


def _confident_issues(y: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """Items confidently in another class: p(c) >= mean p(c) over items labelled c, for some c != given label."""
    k = probs.shape[1]
    thresholds = np.array([probs[y == c, c].mean() if (y == c).any() else 1.0 for c in range(k)])
    above = probs >= thresholds[None, :]
    above[np.arange(len(y)), y] = False
    return above.any(1) & (probs.argmax(1) != y)


def precision_at_k(ranked_paths: list[str], truth: set[str], k: int) -> float:
    """Share of the first k ranked items that are in `truth`."""
    top = list(ranked_paths)[:k]
    return sum(p in truth for p in top) / max(1, len(top))


# ---------------------------------------------------------------- corrections (never touching the user's files)


@dataclass
class Correction:
    """One decision on an item: exclude it, or give it another label, and why."""

    path: str
    new_label: str  # EXCLUDED to leave the item out
    why: str


# A corrections set's layout (one folder per set, under paths.corrections_dir() or a hosted user's uploads).
CORRECTED_LABELS = "labels.csv"  # the corrected table a CSV source reads
CORRECTION_LOG = "changes.csv"  # every decision: path, old_label, new_label, why


def write_corrections(
    items: pd.DataFrame,
    changes: list[Correction],
    name: str = "",
    base: Path | None = None,
    source: SourceConfig | None = None,
) -> tuple[Path, dict[str, Any]]:
    """Write a corrected labels CSV (+ changes.csv) under `base` (default: the app home's corrections folder);
    returns its folder and the fields of a CSV SourceConfig that reads it.

    labels.csv has path (relative to the common folder of all items), label (the new one; a multi-label `source`:
    its findings in that source's format, core.evaluation.relabel.label_columns), old_label, why,
    group (pseudonymised) and split; excluded items are left out of it. changes.csv lists every decision:
    path (absolute, the original file), old_label, new_label, why. The user's files are only read. A set never
    replaces an earlier one (a taken name gets "-2", "-3", ...); free-text cells are defused for spreadsheets.
    """
    from core.base.exports import escape_formulas
    from core.base.fsutil import atomic_write_text

    by_path = {str(c.path): c for c in changes}
    paths = items["path"].astype(str)
    unknown = sorted(set(by_path) - set(paths))
    if unknown:
        raise ValueError(f"{len(unknown)} corrected item(s) are not in this data source")
    root = Path(os.path.commonpath([str(Path(p).parent) for p in paths]))
    new = [by_path[p].new_label if p in by_path else lbl for p, lbl in zip(paths, items["label"].astype(str))]
    kept = np.array([n != EXCLUDED for n in new], dtype=bool)
    label_cols, fields = relabel.label_columns(pd.Series(new, dtype=object), source)
    table = pd.DataFrame(
        {
            "path": [Path(os.path.relpath(p, root)).as_posix() for p in paths],
            **{c: label_cols[c].to_numpy() for c in label_cols},
            "old_label": items["label"].astype(str).to_numpy(),
            "why": [by_path[p].why if p in by_path else "" for p in paths],
            "group": [privacy.pseudonym(g) for g in _col(items, "group")],
            "split": _col(items, "split"),
        }
    )
    table = escape_formulas(table[kept], ["old_label", "why"])  # not the columns read back
    folder = _new_folder(base or app_paths.corrections_dir(), _folder_name(name))
    atomic_write_text(folder / CORRECTED_LABELS, table.to_csv(index=False))
    log = escape_formulas(_change_log(items, changes))
    atomic_write_text(folder / CORRECTION_LOG, log.to_csv(index=False))  # read by people
    src = {
        "kind": "csv",
        "csv_path": str(folder / CORRECTED_LABELS),
        "root": str(root),
        "path_col": "path",
        "group_col": "group" if (table["group"] != "").any() else "",
        "split_col": "split" if (table["split"] != "").any() else "",
        **fields,
    }
    return folder, src


def _change_log(items: pd.DataFrame, changes: list[Correction]) -> pd.DataFrame:
    """changes.csv: every decision with the item's original file, its old label, the new one and why."""
    old = dict(zip(items["path"].astype(str), items["label"].astype(str)))
    return pd.DataFrame(
        [
            {"path": c.path, "old_label": old[str(c.path)], "new_label": c.new_label, "why": c.why}
            for c in changes
        ],
        columns=["path", "old_label", "new_label", "why"],
    )


def _new_folder(base: Path, clean: str) -> Path:
    """A folder for a new corrections set that replaces no earlier one: `clean`, else `clean-2`, `clean-3`, ..."""
    base.mkdir(parents=True, exist_ok=True)
    for n in range(1, 10_000):
        folder = base / (clean if n == 1 else f"{clean}-{n}")
        try:
            folder.mkdir()
            return folder
        except FileExistsError:
            continue
    raise ValueError(f"too many corrections sets named {clean!r}: choose another name")


def _folder_name(name: str) -> str:
    """A safe folder name for a corrections set (a timestamp when none is given)."""
    import re
    import time

    clean = re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-.")[:60]
    return clean or time.strftime("corrected-%Y%m%d-%H%M%S")
