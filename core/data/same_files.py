"""Which new files are byte-for-byte copies of known ones (an upload of a training image has another path)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import Path


def _size(path: str) -> int:
    """The file's size in bytes, -1 when it cannot be read."""
    try:
        return Path(path).stat().st_size
    except OSError:
        return -1


def _digest(path: str) -> str:
    """sha256 of the file's bytes ('' when it cannot be read)."""
    h = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    except OSError:
        return ""
    return h.hexdigest()


MAX_SAME_SIZE = (
    20  # more known files of one size (uncompressed DICOMs of one scanner): size says nothing, skip
)


def copies_of(new: Iterable[str], known: Iterable[str]) -> dict[str, str]:
    """{new path: a known path with the same bytes}; only files of equal size are hashed, so it stays cheap."""
    by_size: dict[int, list[str]] = {}
    for k in known:
        by_size.setdefault(_size(k), []).append(k)
    by_size.pop(-1, None)
    found: dict[str, str] = {}
    digests: dict[str, str] = {}
    for path in new:
        candidates = by_size.get(_size(path), [])
        if not candidates or len(candidates) > MAX_SAME_SIZE:
            continue
        mine = _digest(path)
        for k in candidates:
            if mine and digests.setdefault(k, _digest(k)) == mine:
                found[path] = k
                break
    return found
