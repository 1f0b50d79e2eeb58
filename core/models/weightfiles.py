"""Weight files from users and downloads, checked before anything is loaded; safe state-dict loading.

A pickle runs code when it is loaded, so this module never calls pickle.load, torch.load(weights_only=False) or
fastai's load_learner. A file is inspected first (size, Git LFS pointer, web page, archive integrity, safetensors
header, pickle opcodes against an allow-list), and only then read: safetensors directly, .pth/.pt/.bin with
torch.load(weights_only=True). `load_weights_into` refuses weights that do not fit a model, naming the difference.
"""

from __future__ import annotations

import io
import json
import pickletools
import re
import struct
import tarfile
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

LFS_PREFIX = b"version https://git-lfs"
TORCH_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C

# Globals a plain state dict checkpoint needs; everything else is refused before unpickling.
_ALLOWED_GLOBALS = {
    ("collections", "OrderedDict"),
    ("torch._utils", "_rebuild_tensor"),
    ("torch._utils", "_rebuild_tensor_v2"),
    ("torch._utils", "_rebuild_tensor_v3"),
    ("torch._utils", "_rebuild_parameter"),
    ("torch._utils", "_rebuild_parameter_with_state"),
    ("torch._tensor", "_rebuild_from_type_v2"),
    ("torch", "Tensor"),
    ("torch.nn.parameter", "Parameter"),
    ("torch", "device"),
    ("torch", "Size"),
    ("torch", "UntypedStorage"),
    ("torch.storage", "UntypedStorage"),
    ("torch.storage", "TypedStorage"),
    ("_codecs", "encode"),
}
_TORCH_DTYPES = {
    "float32",
    "float",
    "float64",
    "double",
    "float16",
    "half",
    "bfloat16",
    "int64",
    "long",
    "int32",
    "int",
    "int16",
    "short",
    "int8",
    "uint8",
    "bool",
    "complex64",
    "complex128",
    "float8_e4m3fn",
    "float8_e5m2",
}
_STRING_OPS = {
    "STRING",
    "BINSTRING",
    "SHORT_BINSTRING",
    "UNICODE",
    "BINUNICODE",
    "SHORT_BINUNICODE",
    "BINUNICODE8",
}
_MEMO_PUT_OPS = {"PUT", "BINPUT", "LONG_BINPUT", "MEMOIZE"}
_MEMO_GET_OPS = {"GET", "BINGET", "LONG_BINGET"}
_CONTAINER_KEYS = ("state_dict", "model_state_dict", "model", "net", "network", "weights", "params")
_STRIP_PREFIXES = ("module.", "_orig_mod.")


class ModelFileError(ValueError):
    """A model or weights file that cannot be used, with a one-line reason for the user."""


# ---------------------------------------------------------------- checking and reading a weights file


def check_weights_file(path: str | Path) -> str:
    """Inspect a weights file without unpickling it; return its kind ("zip", "legacy", "safetensors")."""
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"{path.name}: file not found")
    size = path.stat().st_size
    if size == 0:
        raise ModelFileError(f"{path.name}: the file is empty (0 bytes)")
    with open(path, "rb") as f:
        head = f.read(512)
    if head.startswith(LFS_PREFIX):
        raise ModelFileError(f"{path.name}: this is a Git LFS pointer, not the weights: run git lfs pull")
    if head.lstrip()[:1] == b"<":
        raise ModelFileError(
            f"{path.name}: this is a web page (HTML/XML), not a weights file; download the file itself"
        )
    if path.suffix.lower() == ".safetensors" or _looks_like_safetensors(head, size):
        _check_safetensors(path, size)
        return "safetensors"
    if head.startswith(b"PK"):
        _check_zip(path)
        return "zip"
    if len(head) > 262 and head[257:262] == b"ustar":
        _check_tar(path)
    if head[:1] == b"\x80":
        _check_legacy(path)
        return "legacy"
    raise ModelFileError(f"{path.name}: not a PyTorch (.pth/.pt/.bin) or .safetensors weights file")


def load_state_dict_file(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a user-supplied weights file safely and return a plain {name: tensor} state dict."""
    path = Path(path)
    kind = check_weights_file(path)
    if kind == "safetensors":
        obj = read_safetensors(path)
    else:
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # torch raises many types; the user needs one line
            raise ModelFileError(f"{path.name}: could not read the weights ({first_line(e)})") from None
    return _as_state_dict(obj, path.name)


def _looks_like_safetensors(head: bytes, size: int) -> bool:
    """True when the first bytes are a safetensors header (8-byte length, then JSON)."""
    if len(head) < 9:
        return False
    (n,) = struct.unpack("<Q", head[:8])
    return 0 < n < size and head[8:9] == b"{"


def _check_safetensors(path: Path, size: int) -> None:
    """Header length, JSON header and tensor offsets must fit inside the file."""
    bad = ModelFileError(f"{path.name}: file is truncated or corrupt (incomplete safetensors file)")
    if size < 8:
        raise bad
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        if n > min(size - 8, 100_000_000):
            raise bad
        try:
            header = json.loads(f.read(n))
        except ValueError:
            raise bad from None
    if not isinstance(header, dict):
        raise bad
    ends = [
        v.get("data_offsets", [0, 0])[1]
        for k, v in header.items()
        if k != "__metadata__" and isinstance(v, dict)
    ]
    if ends and 8 + n + max(ends) > size:
        raise bad


def read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    """Load a safetensors file on CPU, translating its errors."""
    from safetensors.torch import load_file

    try:
        return load_file(str(path), device="cpu")
    except Exception as e:
        raise ModelFileError(f"{path.name}: file is truncated or corrupt ({first_line(e)})") from None


def _check_zip(path: Path) -> None:
    """A zip-format torch checkpoint must be complete (central directory, CRCs) and hold only allowed globals."""
    bad = ModelFileError(f"{path.name}: file is truncated or corrupt (incomplete zip archive)")
    if not zipfile.is_zipfile(path):
        raise bad
    try:
        with zipfile.ZipFile(path) as z:
            if z.testzip() is not None:
                raise bad
            pkls = [n for n in z.namelist() if n.endswith(".pkl")]
            if not any(n.endswith("data.pkl") for n in pkls):
                raise ModelFileError(f"{path.name}: zip archive is not a PyTorch checkpoint (no data.pkl)")
            for name in pkls:
                _scan_pickle(io.BytesIO(z.read(name)), path.name)
    except (zipfile.BadZipFile, OSError, EOFError):
        raise bad from None


def _check_tar(path: Path) -> None:
    """Old (2017) tar-format torch checkpoints: report truncation, otherwise refuse the format."""
    try:
        with tarfile.open(path) as t:
            for member in t:
                f = t.extractfile(member)
                if f is not None:
                    while f.read(1 << 20):
                        pass
    except (tarfile.TarError, OSError, EOFError):
        raise ModelFileError(f"{path.name}: file is truncated or corrupt (incomplete tar archive)") from None
    raise ModelFileError(
        f"{path.name}: old PyTorch tar format is not supported; re-save it with a current PyTorch (or as .safetensors)"
    )


def _check_legacy(path: Path) -> None:
    """A legacy (non-zip) torch file is a series of pickles: magic, protocol, sys info, data, storage keys."""
    with open(path, "rb") as f:
        first = _scan_pickle(f, path.name)
        if first == TORCH_LEGACY_MAGIC:
            for _ in range(4):
                _scan_pickle(f, path.name)


def _scan_pickle(f: Any, name: str) -> Any:
    """Walk one pickle's opcodes; refuse globals outside the allow-list. Returns the value when it is a lone int."""
    memo: dict[int, Any] = {}
    recent: list[Any] = []  # values pushed by the last value-producing opcodes (None: not a known string)
    last_int, n_values = None, 0
    arg: Any  # an opcode's argument (typeshed: Any | None); int(None) would fail below as a corrupt file
    try:
        for op, arg, _pos in pickletools.genops(f):
            opname = op.name
            if opname in _MEMO_PUT_OPS:
                key = len(memo) if opname == "MEMOIZE" else int(arg)
                memo[key] = recent[-1] if recent else None
                continue
            if opname in ("GLOBAL", "INST"):
                module, _, attr = str(arg).partition(" ")
                _check_global(module, attr, name)
            elif opname == "STACK_GLOBAL":
                if len(recent) < 2 or not all(isinstance(v, str) for v in recent[-2:]):
                    raise ModelFileError(
                        f"refused: {name} contains code references (unresolvable global)"
                        " — a pickle can run code when loaded"
                    )
                _check_global(recent[-2], recent[-1], name)
            elif opname in ("EXT1", "EXT2", "EXT4"):
                raise ModelFileError(
                    f"refused: {name} contains code references (copyreg extension)"
                    " — a pickle can run code when loaded"
                )
            if opname in ("INT", "BININT", "BININT1", "BININT2", "LONG", "LONG1", "LONG4"):
                last_int = arg
            if opname in _STRING_OPS:
                recent.append(arg.decode("latin1") if isinstance(arg, bytes) else str(arg))
            elif opname in _MEMO_GET_OPS:
                recent.append(memo.get(int(arg)))
            elif opname not in ("PROTO", "FRAME", "STOP"):
                recent.append(None)
            n_values += opname not in ("PROTO", "FRAME", "STOP")
            del recent[:-2]
    except ModelFileError:
        raise
    except Exception:
        raise ModelFileError(f"{name}: file is truncated or corrupt (incomplete pickle data)") from None
    return last_int if n_values == 1 else None


def _check_global(module: str, attr: str, name: str) -> None:
    """Allow only the globals a tensor state dict needs."""
    ok = (module, attr) in _ALLOWED_GLOBALS or (
        module == "torch"
        and (re.fullmatch(r"[A-Za-z0-9]*Storage", attr) is not None or attr in _TORCH_DTYPES)
    )
    if not ok:
        raise ModelFileError(
            f"refused: {name} contains code references ({module}.{attr}) — a pickle can run code when loaded"
        )


def _as_state_dict(obj: Any, name: str) -> dict[str, torch.Tensor]:
    """Unwrap common checkpoint containers and DataParallel / compile prefixes into {name: tensor}."""
    for _ in range(3):
        if isinstance(obj, Mapping) and not all(isinstance(v, torch.Tensor) for v in obj.values()):
            inner = next((obj[k] for k in _CONTAINER_KEYS if isinstance(obj.get(k), Mapping)), None)
            if inner is None:
                break
            obj = inner
    if not isinstance(obj, Mapping) or not obj:
        raise ModelFileError(
            f"{name}: does not contain a state dict (a mapping of parameter names to tensors)"
        )
    bad = [k for k, v in obj.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise ModelFileError(f"{name}: not a plain state dict (non-tensor entries such as {bad[0]!r})")
    out = {}
    for k, v in obj.items():
        key = str(k)
        for prefix in _STRIP_PREFIXES:
            if key.startswith(prefix):
                key = key[len(prefix) :]
        out[key] = v
    return out


# ---------------------------------------------------------------- fitting weights to a model


def compare_state_dicts(expected: Mapping[str, Any], got: Mapping[str, Any], limit: int = 3) -> list[str]:
    """Human-readable differences between two state dicts: missing, unexpected, shape mismatches."""
    missing = [k for k in expected if k not in got]
    unexpected = [k for k in got if k not in expected]
    shapes = [
        f"{k} {tuple(got[k].shape)} vs expected {tuple(expected[k].shape)}"
        for k in expected
        if k in got and tuple(got[k].shape) != tuple(expected[k].shape)
    ]
    out = []
    for label, items in (
        ("missing keys", missing),
        ("unexpected keys", unexpected),
        ("shape mismatches", shapes),
    ):
        if items:
            more = f" (+{len(items) - limit} more)" if len(items) > limit else ""
            out.append(f"{len(items)} {label}: {', '.join(items[:limit])}{more}")
    return out


def load_weights_into(
    model: torch.nn.Module, state_dict: Mapping[str, torch.Tensor], strict: bool = True
) -> None:
    """Load a state dict into a model; refuse with the listed differences when it does not fit."""
    diffs = compare_state_dicts(model.state_dict(), state_dict)
    if not strict:
        diffs = [d for d in diffs if "shape" in d]
    if diffs:
        raise ModelFileError(f"the weights do not fit this model: {'; '.join(diffs)}")
    model.load_state_dict(state_dict, strict=strict)


def first_line(e: BaseException, limit: int = 160) -> str:
    """The first line of an exception message, shortened."""
    text = (str(e).strip().splitlines() or [type(e).__name__])[0]
    return text if len(text) <= limit else text[: limit - 1] + "…"
