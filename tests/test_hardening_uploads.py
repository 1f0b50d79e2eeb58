"""Issue 24 item 11: weight uploads count against the owner's upload quota, like data uploads."""

from __future__ import annotations

import numpy as np
import pytest

from core.web import uploads
from core.web.uploads import UploadError, UploadLimits

OWNER = "carol-0003"
MAX = 10_000  # one upload at most 10 kB: the owner quota is 5x that


def _weights(seed: int) -> bytes:
    """A ~8 kB safetensors file."""
    from safetensors.numpy import save

    return save({"w": np.random.default_rng(seed).random(2000).astype(np.float32)})


def test_weight_uploads_stop_at_the_owner_quota_and_a_replacement_is_not_counted_twice():
    quota = UploadLimits.from_totals(MAX, 1).max_owner_bytes
    data = _weights(0)
    n_fit = quota // len(data)
    for i in range(n_fit):
        uploads.save_weights(OWNER, f"w{i}.safetensors", _weights(i), MAX)
    uploads.save_weights(OWNER, "w0.safetensors", _weights(99), MAX)  # replacing one: still inside the quota
    with pytest.raises(UploadError, match="per session"):
        uploads.save_weights(OWNER, "one-more.safetensors", data, MAX)
    assert not (uploads.upload_dir(OWNER) / uploads.WEIGHTS / "one-more.safetensors").exists()
    assert uploads.folder_bytes(uploads.upload_dir(OWNER)) <= quota
    assert not list((uploads.upload_dir(OWNER) / uploads.STAGING).glob("*/*"))  # nothing left staged
