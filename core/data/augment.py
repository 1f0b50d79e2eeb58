"""Training batch augmentation: fastai's flip, warp, rotate, zoom, brightness and contrast in one transform.

The same pictures as the fastai transforms it stands for (`aug_transforms(...)` followed by `Brightness` and
`Contrast`, as `core.data.loaders.batch_transforms` configured them): the same random draws in the same order
from the same generators, the same matrices, the same perspective solve, the same `grid_sample` and the same
logit-space lighting, so a run at a given seed trains on the same batches (tests/test_augment.py compares them).
What changes is the cost: fastai builds the matrices and the warp's linear systems with dozens of small
Python-dispatched tensor operations per batch (type dispatch, `TensorBase.__torch_function__` on each), which on a
CPU with small images took 5-10 % of a training step (bench/README.md); here they are a few plain operations.

One difference on purpose: fastai resamples validation batches through an identity grid as well (its affine
transform runs on every split), which changes pixels by float rounding only and costs a `grid_sample` per
validation batch; this transform leaves validation pixels alone, as prediction does. It still draws the warp's
and lighting random numbers there as fastai does (and ignores them), so the random stream of the batches after it
stays the same.
Vertical flips (fastai's `Dihedral`) are not covered: such a configuration keeps fastai's transforms.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from fastai.torch_core import TensorImage
from fastai.vision.augment import RandTransform

from core.base.config import AugConfig


def covers(a: AugConfig) -> bool:
    """Whether BatchAugment stands for this configuration (else fastai's own transforms are used)."""
    return a.enabled and not a.vertical_flip


def _masked(draw: torch.Tensor, p: float, neutral: float = 0.0) -> torch.Tensor:
    """fastai's mask_tensor: each value kept with probability p, else `neutral` (the same generator calls)."""
    if p == 1.0:
        return draw
    if neutral != 0:
        draw.add_(-neutral)
    draw.mul_(draw.new_empty(draw.shape).float().bernoulli_(p).long())
    return draw.add_(neutral) if neutral != 0 else draw


def _affine(rows: list[torch.Tensor]) -> torch.Tensor:
    """B x 3 x 3 matrices from six length-B rows (a, b, c, d, e, f) and a last row 0 0 1."""
    z, o = torch.zeros_like(rows[0]), torch.ones_like(rows[0])
    return torch.stack([torch.stack(rows[:3], 1), torch.stack(rows[3:], 1), torch.stack([z, z, o], 1)], 1)


def _perspective_coeffs(orig: torch.Tensor, targ: torch.Tensor) -> torch.Tensor:
    """fastai's find_coeffs(orig, targ): the 8 coefficients taking each target corner to its original (B x 8 x 1)."""
    px, py, qx, qy = orig[..., 0], orig[..., 1], targ[..., 0], targ[..., 1]  # B x 4
    z, o = torch.zeros_like(qx), torch.ones_like(qx)
    even = torch.stack([qx, qy, o, z, z, z, -px * qx, -px * qy], -1)  # B x 4 x 8
    odd = torch.stack([z, z, z, qx, qy, o, -py * qx, -py * qy], -1)
    a = torch.stack([even, odd], 2).reshape(orig.shape[0], 8, 8)
    return torch.linalg.solve(a, orig.reshape(orig.shape[0], 8, 1))


def _apply_perspective(coords: torch.Tensor, coeffs: torch.Tensor) -> torch.Tensor:
    """fastai's apply_perspective on a B x H x W x 2 sampling grid."""
    shape = coords.shape
    flat = coords.reshape(shape[0], -1, 2)
    m = torch.cat([coeffs, torch.ones_like(coeffs[:, :1])], 1).view(coeffs.shape[0], 3, 3)
    out = flat @ m[..., :2].transpose(1, 2) + m[..., 2].unsqueeze(1)
    if (out[..., 2] == 0.0).any():
        return coords
    return (out / out[..., 2].unsqueeze(-1))[..., :2].reshape(shape)


def _logit(x: torch.Tensor) -> torch.Tensor:
    """fastai's logit (clamped so that 0 and 1 stay finite)."""
    x = x.clamp(1e-7, 1 - 1e-7)
    return -(1 / x - 1).log()


class BatchAugment(RandTransform):
    """flip / warp / rotate / zoom (one resample, zero padding) then brightness and contrast, on training batches."""

    # fastai's affine step runs on every split (validation draws its warp numbers)
    order, split_idx = 30, None

    def __init__(self, a: AugConfig):
        super().__init__()
        self.a, self.train = a, False

    def before_call(self, b, split_idx):
        """Note the split (training batches are augmented; validation only draws what fastai's warp draws)."""
        self.do, self.train = True, not split_idx

    def encodes(self, x: TensorImage):
        """The augmented batch (float pixels in 0..1, before Normalize)."""
        plain = x.as_subclass(torch.Tensor)
        if not self.train:  # fastai draws (and then ignores) the warp's and the lighting's numbers here too
            self._warp_points(plain)
            self._light_changes(plain)
            return x
        mat = self._matrix(plain)  # drawn before the warp, as fastai draws them
        warp = self._warp_points(plain)
        if mat is not None or warp is not None:
            plain = self._resample(plain, mat, warp)
        return TensorImage(self._lighting(plain))

    def _matrix(self, x: torch.Tensor) -> torch.Tensor | None:
        """fastai's flip @ rotate @ zoom for the batch (2 x 3 each), drawn in that order; None without any."""
        a, n = self.a, x.shape[0]
        mats = []
        if a.flip:
            m = 1 - 2 * _masked(x.new_ones(n), 0.5)
            z = torch.zeros_like(m)
            mats.append(_affine([m, z, z, z, torch.ones_like(m), z]))
        if a.rotate:
            t = _masked(x.new_empty(n).uniform_(-a.rotate, a.rotate), a.p_affine) * math.pi / 180
            z = torch.zeros_like(t)
            mats.append(_affine([t.cos(), t.sin(), z, -t.sin(), t.cos(), z]))
        if a.zoom > 1:
            s = 1 / _masked(x.new_empty(n).uniform_(1.0, a.zoom), a.p_affine, neutral=1.0)
            col, row = x.new_empty(n).uniform_(0, 1), x.new_empty(n).uniform_(0, 1)
            z = torch.zeros_like(s)
            mats.append(_affine([s, z, (1 - s) * (2 * col - 1), z, s, (1 - s) * (2 * row - 1)]))
        if not mats and not self.a.warp:
            return None
        out = torch.eye(3, device=x.device).float().unsqueeze(0).expand(n, 3, 3).contiguous()
        for m in mats:
            out = out @ m
        h, w = x.shape[-2:]
        out[:, 0, 1] *= h / w
        out[:, 1, 0] *= w / h
        return out[:, :2]

    def _warp_points(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
        """fastai's warp corners (original, target), drawn x then y; None without warp."""
        mag, n = self.a.warp, x.shape[0]
        if not mag:
            return None
        xt = _masked(x.new_empty(n).uniform_(-mag, mag), self.a.p_affine)
        yt = _masked(x.new_empty(n).uniform_(-mag, mag), self.a.p_affine)
        orig = torch.tensor([[-1, -1], [-1, 1], [1, -1], [1, 1]], dtype=x.dtype, device=x.device)
        targ = torch.stack(
            [
                torch.stack([-1 - yt, -1 - xt], -1),
                torch.stack([-1 + yt, 1 + xt], -1),
                torch.stack([1 + yt, -1 + xt], -1),
                torch.stack([1 - yt, 1 - xt], -1),
            ],
            1,
        )
        return orig.unsqueeze(0).expand(n, 4, 2), targ

    def _resample(self, x: torch.Tensor, mat, warp) -> torch.Tensor:
        """One bilinear resample through the affine grid, warped, with zero padding (align_corners, as fastai)."""
        if mat is None:
            mat = torch.eye(3, device=x.device).float().unsqueeze(0).expand(x.shape[0], 3, 3)[:, :2]
        coords = F.affine_grid(mat, list(x.shape), align_corners=True)
        if warp is not None:
            coords = _apply_perspective(coords, _perspective_coeffs(*warp))
        return F.grid_sample(x, coords, mode="bilinear", padding_mode="zeros", align_corners=True)

    def _light_changes(self, x: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """fastai's Brightness and Contrast draws for the batch, in that order (None where not configured)."""
        a, n = self.a, x.shape[0]
        bright = contrast = None
        if a.brightness > 0:
            lo, hi = 0.5 * (1 - a.brightness), 0.5 * (1 + a.brightness)
            bright = _masked(x.new_empty(n).uniform_(lo, hi), a.p_lighting, neutral=0.5)
        if a.contrast > 0:
            span = math.log(1 - a.contrast)
            contrast = _masked(torch.exp(x.new_empty(n).uniform_(span, -span)), a.p_lighting, neutral=1.0)
        return bright, contrast

    def _lighting(self, x: torch.Tensor) -> torch.Tensor:
        """fastai's Brightness then Contrast, each through its own logit and sigmoid."""
        bright, contrast = self._light_changes(x)
        if bright is not None:
            x = torch.sigmoid(_logit(x).add_(_logit(bright[:, None, None, None])))
        if contrast is not None:
            x = torch.sigmoid(_logit(x).mul_(contrast[:, None, None, None]))
        return x
