"""The decode cache: each file decoded once per size and window, kept as a small PNG."""

from __future__ import annotations

import hashlib
import os
import zlib
from pathlib import Path

from PIL import Image, ImageChops

from core.base.config import Window
from core.base.fsutil import atomic_writer
from core.data import imaging
from core.data.imaging import CACHE_VERSION, ImageError, log

# ---------------------------------------------------------------- decode cache


def downscale(im: Image.Image, size: int | None) -> Image.Image:
    """Shrink so the shorter side == size (aspect kept); never enlarge; None -> unchanged.

    An RGB image whose three channels are equal (a greyscale X-ray saved as colour, common) is resized as one
    channel and expanded back: the same bytes, since Pillow resamples every band alike (tests/test_imaging.py), at
    about half the cost (224 -> 128 px: 0.76 -> 0.46 ms with the check).
    """
    if size is None:
        return im
    if size < 1:
        raise ValueError(f"size must be >= 1, got {size}")
    w, h = im.size
    short = min(w, h)
    if short <= size:
        return im
    new = (size, max(1, round(h * size / w))) if w <= h else (max(1, round(w * size / h)), size)
    if im.mode == "RGB" and same_channels(im):
        return im.getchannel(0).resize(new, Image.Resampling.LANCZOS, reducing_gap=3.0).convert("RGB")
    return im.resize(new, Image.Resampling.LANCZOS, reducing_gap=3.0)


def same_channels(im: Image.Image) -> bool:
    """True when the R, G and B channels of an RGB image are equal everywhere. A colour image is usually told by
    its middle row (a few us); a grey one costs a full comparison in Pillow (about 50 us at 224 px), in bands of
    about a million pixels (a few MB of copies at most, whatever the image's size)."""
    w, h = im.size
    row = im.crop((0, h // 2, w, h // 2 + 1)).tobytes()
    if row[0::3] != row[1::3] or row[0::3] != row[2::3]:
        return False
    step = max(1, _COMPARE_PIXELS // max(1, w))
    for top in range(0, h, step):
        band = im if step >= h else im.crop((0, top, w, min(h, top + step)))
        r, g, b = band.split()
        if ImageChops.difference(r, g).getbbox() or ImageChops.difference(r, b).getbbox():
            return False
    return True


_COMPARE_PIXELS = 1 << 20  # pixels compared at a time by same_channels


class DecodeCache:
    """Decoded, downscaled images kept as lossless PNGs keyed by file identity and decode settings."""

    def __init__(self, root: Path | None = None):
        """Cache under `root` (default: the app's cache folder)."""
        if root is None:
            from core.base.paths import cache_dir

            root = cache_dir()
        self.root = Path(root)
        self.hits = 0
        self.misses = 0

    def key(
        self, path: str | os.PathLike, size: int | None, window: Window | None = None, frame: int = 0
    ) -> str:
        """sha1 of the file's identity (path, mtime, size) and the decode settings."""
        p = Path(path).absolute()
        try:
            st = p.stat()
        except OSError:
            raise ImageError("file not found") from None
        win = (
            None
            if window is None
            else (float(window.center), float(window.width))
            if window.mode == "fixed"
            else window.mode
        )  # a fixed window keeps the key it had before window modes existed
        ident = repr((str(p), st.st_mtime_ns, st.st_size, size, win, int(frame), CACHE_VERSION))
        return hashlib.sha1(ident.encode("utf-8")).hexdigest()

    def entry(self, key: str) -> Path:
        """Where the PNG for `key` lives."""
        return self.root / key[:2] / f"{key}.png"

    def get(
        self, path: str | os.PathLike, size: int | None, window: Window | None = None, frame: int = 0
    ) -> Image.Image:
        """The decoded (and downscaled) image, from the cache when present, else decoded and stored."""
        entry = self.entry(self.key(path, size, window, frame))
        cached = self._load(entry)
        if cached is not None:
            self.hits += 1
            return cached
        self.misses += 1
        im = downscale(imaging.read_image(path, window=window, frame=frame), size)
        self._store(im, entry)
        return im

    def warm(
        self, path: str | os.PathLike, size: int | None, window: Window | None = None, frame: int = 0
    ) -> bool:
        """Make sure the entry exists: True when it already did, else decode and store (ImageError if unreadable).

        An entry exists only for a file decoded successfully with these settings at this mtime and size, so
        its presence also vouches that the file is readable (a later change to the file changes the key).
        """
        entry = self.entry(self.key(path, size, window, frame))
        if entry.is_file():  # stored only after the flat-image check passed
            self.hits += 1
            return True
        self.misses += 1
        self._store(
            downscale(imaging.check_not_flat(imaging.read_image(path, window=window, frame=frame)), size),
            entry,
        )
        return False

    def _load(self, entry: Path) -> Image.Image | None:
        """A cached image, or None when absent or unreadable (it is then re-decoded)."""
        if not entry.is_file():
            return None
        try:
            with Image.open(entry, formats=("PNG",)) as im:
                im.load()
                if im.mode in ("L", "RGB"):
                    return im
        except Exception:
            pass
        log.warning("decode cache: ignoring a corrupt entry %s", entry.name)
        return None

    def _store(self, im: Image.Image, entry: Path) -> None:
        """Write atomically (fsutil, no fsync: a cache); a failed write only costs a later re-decode."""
        try:
            with atomic_writer(entry, durable=False) as tmp, open(tmp, "wb") as f:
                im.save(f, format="PNG", compress_level=1)
        except (OSError, ValueError, zlib.error) as e:
            log.warning(
                "decode cache: could not write an entry (%s)",
                getattr(e, "strerror", None) or type(e).__name__,
            )
