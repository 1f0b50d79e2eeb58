"""Per-site temperatures: a saved model's probabilities recalibrated for a new site, applied when the user names it.

The manifest's "site_calibration" record (JSON) maps a site to the divisor of the raw logits at that site (the
model's own temperature times the one fitted on the site's labelled images), so it stays right if the model's own
temperature is refitted later. A site named by a DICOM InstitutionName is stored as its pseudonym
(core.base.privacy), and `divisor` finds a site by its name or its pseudonym, so the raw name is never written.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from core.base.privacy import pseudonym
from core.models.savedmodel import Manifest, read_manifest, record

KEY = "site_calibration"


def sites_of(manifest: Manifest) -> dict[str, dict[str, Any]]:
    """{site: its record (temperature = the divisor of the raw logits, n, ECE before / after)} ({} when none)."""
    rec = manifest.extra.get(KEY)
    return dict(rec.get("sites", {})) if isinstance(rec, Mapping) else {}


def lookup(manifest: Manifest, site: str) -> str:
    """The stored key of `site` (its name, else its pseudonym); ValueError naming the sites the model knows."""
    known = sites_of(manifest)
    for key in (site, pseudonym(site)):
        if key in known:
            return key
    listed = ", ".join(sorted(known)) or "none"
    raise ValueError(
        f"this model has no temperature for site {site!r} (its sites: {listed}); fit one with "
        "`python -m core evaluate --model ... --site NAME --recalibrate` on that site's labelled images"
    )


def divisor(manifest: Manifest, site: str) -> float:
    """What the model's raw logits are divided by at `site`."""
    t = float(sites_of(manifest)[lookup(manifest, site)]["temperature"])
    if not (math.isfinite(t) and t > 0):
        raise ValueError(f"the temperature stored for site {site!r} is not a positive number")
    return t


def stamp(model_dir: str | Path, entries: Mapping[str, Mapping[str, Any]]) -> None:
    """Add (or replace) these sites' records in a saved model's manifest; other sites stay."""
    manifest, _ = read_manifest(model_dir)
    sites = {**sites_of(manifest), **{k: dict(v) for k, v in entries.items()}}
    record(model_dir, KEY, {"sites": sites} if sites else None)
