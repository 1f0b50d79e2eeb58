"""Checkpoint integrity: a checksum written inside each safetensors checkpoint, and the checks a checkpoint or
saved model passes before anything is made from it (readable, finite, the right shapes, checksum unchanged).

The checksum (sha256 over every tensor's name, dtype, shape and bytes, in name order) sits in the file's own
`__metadata__`, so it travels with the weights in one atomically written file: one flipped bit in a tensor is
found. Checkpoints written before it existed carry none and are checked for readability and finiteness only.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path

import torch

from core.models.weightfiles import ModelFileError, _check_safetensors, first_line

CHECKSUM_KEY = "xrt_sha256"
EPOCH_KEY = "xrt_epoch"  # the 0-based epoch whose weights a best checkpoint holds (written since 2026-12-06)


def state_checksum(state: Mapping[str, torch.Tensor]) -> str:
    """sha256 of a state dict: each tensor's name, dtype, shape and raw bytes, in name order."""
    h = hashlib.sha256()
    for name in sorted(state):
        t = state[name].detach().to("cpu").contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        if t.numel():  # the tensor's own bytes, without a copy
            h.update(t.reshape(-1).view(torch.uint8).numpy().data)
    return h.hexdigest()


def checkpoint_metadata(state: Mapping[str, torch.Tensor], epoch: int | None = None) -> dict[str, str]:
    """The `__metadata__` a checkpoint is written with: its checksum, and the epoch it holds when given."""
    return {
        CHECKSUM_KEY: state_checksum(state),
        **({EPOCH_KEY: str(int(epoch))} if epoch is not None else {}),
    }


def checkpoint_epoch(path: Path) -> int | None:
    """The epoch a best checkpoint says it holds (None: not said, as in files written before it was, or unreadable)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            return int((f.metadata() or {})[EPOCH_KEY])
    except Exception:  # missing, damaged or older file: the caller falls back to history.csv
        return None


def check_finite(state: Mapping[str, torch.Tensor], what: str) -> None:
    """Refuse weights holding NaN or infinite values (a diverged run, or a damaged file)."""
    bad = [k for k, t in state.items() if t.is_floating_point() and not bool(torch.isfinite(t).all())]
    if bad:
        more = f" (+{len(bad) - 2} more)" if len(bad) > 2 else ""
        raise ModelFileError(
            f"{what} holds NaN or infinite weights in {len(bad)} of {len(state)} tensors "
            f"({', '.join(bad[:2])}{more}): training diverged or the file is damaged, so no model can be made from it"
        )


def read_checkpoint(path: Path) -> dict[str, torch.Tensor]:
    """A checkpoint's tensors after every check (structure, checksum when written, finite values); else a
    ModelFileError with one plain reason. Nothing is written."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"the checkpoint {path.name} is missing")
    _check_safetensors(path, path.stat().st_size)
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            meta = f.metadata() or {}
            state = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:  # SafetensorError and friends: one line for the user
        raise ModelFileError(
            f"the checkpoint {path.name} is truncated or corrupt ({first_line(e)})"
        ) from None
    want = meta.get(CHECKSUM_KEY)
    if want and state_checksum(state) != want:
        raise ModelFileError(
            f"the checkpoint {path.name} does not match the checksum written with it: the file was changed or damaged"
        )
    check_finite(state, f"the checkpoint {path.name}")
    return state
