"""The installation secret, and keyed pseudonyms for patient identifiers (HMAC-SHA256 with it).

An unsalted hash of a patient number is reversed by hashing every number; a keyed HMAC is not, as long
as the key stays secret. The key comes from `$XRT_SECRET` (hosted deployments: set it once, keep it
stable) or else from `$XRT_HOME/secret.key`, created once (random 32 bytes, mode 0600, written to a
temp file and linked into place so concurrent first uses agree on one key). It is the one secret of an
installation: `core.web.signin` derives owner ids and signs sign-in tokens with it (with its own prefixes).
Pseudonyms use a key derived from it (`pseudonym_key`), the only key a Ray worker is given.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
import secrets
from pathlib import Path

from core.base import paths
from core.base.fsutil import temp_path_for

KEY_ENV = "XRT_SECRET"
PSEUDONYM_KEY_ENV = "XRT_PSEUDONYM_KEY"  # set for Ray workers only (core.runs.ray_supervisor.forwarded_env)
PREFIX = "anon-"
_cache: dict[str, bytes] = {}


def key_path() -> Path:
    """Where this installation's secret key lives."""
    return paths.secret_key_file()


def _create_key_file(path: Path) -> None:
    """Write a fresh random key at `path` (0600) unless another process got there first."""
    tmp = temp_path_for(path)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(secrets.token_hex(32) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        try:
            os.link(tmp, path)  # atomic and never overwrites: the first creator wins
        except FileExistsError:
            pass
        except OSError:  # file systems without hard links
            if not path.exists():
                os.replace(tmp, path)
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()


def installation_key() -> bytes:
    """The installation secret: from the environment, else the key file (created on first use)."""
    env = os.environ.get(KEY_ENV, "").strip()
    if env:
        return env.encode("utf-8")
    path = key_path()
    cached = _cache.get(str(path))
    if cached is not None:
        return cached
    if not path.exists():
        _create_key_file(path)
    key = path.read_text(encoding="utf-8").strip().encode("utf-8")
    if len(key) < 32:
        raise RuntimeError(
            f"the installation key file {path} is damaged; restore it from a backup or delete it"
        )
    _cache[str(path)] = key
    return key


def keyed_hash(data: bytes) -> str:
    """Hex HMAC-SHA256 of `data` with the installation secret: the one keyed hash (pseudonyms, owner ids, tokens)."""
    return hmac.new(installation_key(), data, hashlib.sha256).hexdigest()


def pseudonym_key() -> bytes:
    """The key of pseudonyms only: $XRT_PSEUDONYM_KEY (what a Ray worker is given), else derived from the
    installation secret. A worker that pseudonymises patient ids never holds the secret that signs sign-ins."""
    env = os.environ.get(PSEUDONYM_KEY_ENV, "").strip()
    return env.encode("utf-8") if env else keyed_hash(b"pseudonym-key:").encode("ascii")


def pseudonym(value: str) -> str:
    """A stable stand-in for an identifying value: "anon-" + 12 hex of HMAC-SHA256 (''/'anon-...' unchanged)."""
    if not value or value.startswith(PREFIX):
        return value
    return PREFIX + hmac.new(pseudonym_key(), value.encode("utf-8"), hashlib.sha256).hexdigest()[:12]
