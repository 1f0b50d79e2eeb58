"""Leave-one-site-out folds: one fold per site, the site's images validate while the other sites train.

A pure rule over an items table (plus a site per row): refused with a plain reason when there are fewer than
two sites, a site has too few images, an image has no site, a patient appears at two sites (the held-out site
would share that patient with training), or a class is seen at one site only (the fold without it could not
learn it). Rows a source marked "test" stay out of every fold, as in k-fold.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from core.data import dicom_groups
from core.data.splits import SplitError, patient_groups

__all__ = ["MIN_SITE_IMAGES", "SplitError", "site_folds", "site_values"]

MIN_SITE_IMAGES = 20  # a held-out site with fewer images says nothing about that site


def site_values(items: pd.DataFrame, site_col: str) -> np.ndarray:
    """The site of each item: a CSV column (also as csv_<name> when it clashed with an items column), or a
    `dicom:<Keyword>` read from each image's header (InstitutionName pseudonymised)."""
    if dicom_groups.is_dicom_column(site_col):
        table = dicom_groups.group_table(items["path"].astype(str), [site_col])
        return table[site_col].to_numpy(dtype=str)
    for col in (site_col, f"csv_{site_col}"):
        if col in items.columns:
            return items[col].fillna("").astype(str).str.strip().to_numpy(dtype=str)
    raise SplitError(
        f"no site column {site_col!r} in the data: name a CSV column other than the path, label, patient and "
        "split columns, or a DICOM tag such as dicom:InstitutionName"
    )


def site_folds(
    items: pd.DataFrame, sites: np.ndarray, min_images: int = MIN_SITE_IMAGES
) -> tuple[list[tuple[np.ndarray, np.ndarray]], list[str]]:
    """(train_idx, valid_idx) positions per site over the non-test rows, and the site of each fold (sorted)."""
    split = items["split"].fillna("").astype(str).to_numpy() if "split" in items else np.full(len(items), "")
    pool = np.flatnonzero(split != "test")
    site = np.asarray(sites, dtype=str)[pool]
    _refuse_unfit(items.iloc[pool], site, min_images)
    names = sorted(set(site))
    return [(pool[site != s], pool[site == s]) for s in names], names


def _refuse_unfit(part: pd.DataFrame, site: np.ndarray, min_images: int) -> None:
    """SplitError with the first reason these rows cannot make leave-one-site-out folds."""
    if (site == "").any():
        raise SplitError(
            f"{int((site == '').sum())} image(s) have no site: fill the site column or leave them out"
        )
    counts = pd.Series(site).value_counts()
    if len(counts) < 2:
        raise SplitError(f"leave-one-site-out needs at least 2 sites; the data have {len(counts)}")
    small = counts[counts < min_images]
    if len(small):
        listed = ", ".join(f"{s} ({n})" for s, n in small.items())
        raise SplitError(
            f"site(s) with fewer than {min_images} images cannot be judged held out: {listed}; "
            "merge them with another site or leave them out"
        )
    groups = patient_groups(part)
    if groups is not None:
        per_patient = pd.Series(site).groupby(groups).nunique()
        if (per_patient > 1).any():
            raise SplitError(
                f"{int((per_patient > 1).sum())} patient(s) have images at two sites: a held-out site would "
                "share them with training"
            )
    labels = part["label"].astype(str).to_numpy()
    per_class = pd.Series(site).groupby(labels).nunique()
    lonely = sorted(per_class[per_class < 2].index)
    if lonely:
        raise SplitError(
            f"class(es) {', '.join(lonely)} occur at one site only: the fold holding that site out cannot learn them"
        )
