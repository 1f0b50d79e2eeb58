"""The validation-side resize of training (fastai `Resize(size, method, pad_mode="zeros")`, split_idx=1) in plain PIL.

Prediction resizes every image the way training's validation set was resized. fastai's transform machinery costs
0.5-1 ms an image in Python (type dispatch, tuple arithmetic, a pad through torchvision even when nothing is
padded); this is the same arithmetic on the same PIL calls, so the pixels are identical
(tests/test_predict_prefetch.py checks it against fastai for every method and many shapes), at a fraction of
the cost. Training keeps fastai's transform.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageOps

METHODS = ("squish", "pad", "crop")


def _crop_box(w: int, h: int, size: int, method: str) -> tuple[tuple[int, int], tuple[int, int]]:
    """((crop width, height), (left, top)) of fastai's centred crop/pad; the whole image for squish."""
    if method == "squish":
        return (w, h), (0, 0)
    if method not in METHODS:
        raise ValueError(f"unknown resize method {method!r}; choose one of {', '.join(METHODS)}")
    rw, rh = w / size, h / size
    m = (rw if rw > rh else rh) if method == "pad" else (rw if rw < rh else rh)
    sz = (int(m * size), int(m * size))
    return sz, (int(0.5 * (w - sz[0])), int(0.5 * (h - sz[1])))


def valid_resize(im: Image.Image, size: int, method: str) -> Image.Image:
    """`im` resized to size x size as fastai's validation Resize does (centre crop/pad with zeros, bilinear)."""
    w, h = im.size
    (sw, sh), (left, top) = _crop_box(w, h, size, method)
    if (left, top, left + sw, top + sh) != (
        0,
        0,
        w,
        h,
    ):  # fastai crops (a copy) even when the box is the image
        if left >= 0 or top >= 0 or left + sw <= w or top + sh <= h:
            im = im.crop((max(left, 0), max(top, 0), min(left + sw, w), min(top + sh, h)))
        if left < 0 or top < 0 or left + sw >= w or top + sh >= h:
            pad = (max(-left, 0), max(-top, 0), max(sw - w + left, 0), max(sh - h + top, 0))
            if any(pad):
                im = ImageOps.expand(im, border=pad, fill=0)  # torchvision's constant pad of a PIL image
    return im.resize((size, size), Image.Resampling.BILINEAR)


def valid_pixels(im: Image.Image, size: int, method: str, channels: str) -> np.ndarray:
    """H x W x C uint8 pixels (C = 1 grey, 3 rgb) of `im` converted and resized as training's validation set.

    A grey image for an RGB model is resized once and its channel repeated: PIL's L -> RGB conversion repeats
    the value and the resize treats each channel alike, so the pixels are those of converting first.
    """
    want = "L" if channels == "grey" else "RGB"
    grey_to_rgb = want == "RGB" and im.mode == "L"
    if im.mode != want and not grey_to_rgb:
        im = im.convert(want)
    arr = np.asarray(valid_resize(im, size, method))
    if arr.ndim == 2:
        return np.repeat(arr[:, :, None], 3 if grey_to_rgb else 1, axis=2)  # a writable copy
    return arr.copy()  # writable: torch warns on a read-only array
