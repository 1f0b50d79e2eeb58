"""Per-user password sign-in: scrypt password hashes in `$XRT_HOME/users.json` (managed with
`python -m core users ...`) and/or a `[users]` table in `.streamlit/secrets.toml` (name = "scrypt$...").

With accounts, the sign-in form checks the typed name's own password: a person can no longer sign in as
someone else by typing their name, as anyone can with one shared password. A hash is
"scrypt$N$r$p$<salt hex>$<hash hex>"; `stamp` (a keyed hash of it) changes with the password and ends that
user's sign-in sessions (core.web.sessions).
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import os
import secrets
from collections.abc import Mapping
from pathlib import Path

from core.base import paths, privacy
from core.base.fsutil import atomic_writer
from core.web import sessions
from core.web.signin import clean_user_name

USERS_FILE = "users.json"
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**15, 8, 1  # ~32 MB and ~0.1 s per check: slow to guess, light to serve
MIN_PASSWORD = 10
_DUMMY = "scrypt$32768$8$1$" + "00" * 16 + "$" + "00" * 32  # checked for unknown names: same time either way


def users_file() -> Path:
    """Where the accounts made with the admin command live."""
    return paths.app_home() / USERS_FILE


def hash_password(password: str, salt: bytes | None = None) -> str:
    """A new scrypt hash of `password` in this module's text form."""
    salt = secrets.token_bytes(16) if salt is None else salt
    digest = _scrypt(password, salt, SCRYPT_N, SCRYPT_R, SCRYPT_P)
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${salt.hex()}${digest.hex()}"


def _scrypt(password: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    """The raw scrypt digest (32 bytes)."""
    return hashlib.scrypt(
        password.encode("utf-8"), salt=salt, n=n, r=r, p=p, maxmem=256 * 1024 * 1024, dklen=32
    )


def verify_password(password: str, stored: str) -> bool:
    """Whether `password` matches a stored hash (False for a malformed one)."""
    try:
        kind, n, r, p, salt, digest = str(stored).split("$")
        if kind != "scrypt" or not (2 <= int(n) <= 2**20 and 1 <= int(r) <= 32 and 1 <= int(p) <= 16):
            return False
        got = _scrypt(password, bytes.fromhex(salt), int(n), int(r), int(p))
        return hmac.compare_digest(got, bytes.fromhex(digest))
    except (ValueError, TypeError):
        return False


def _file_users() -> dict[str, str]:
    """The accounts in users.json ({} when none or unreadable)."""
    with contextlib.suppress(OSError, ValueError):
        data = json.loads(users_file().read_text(encoding="utf-8"))
        if isinstance(data, dict):
            return {str(k): str(v) for k, v in data.items()}
    return {}


def all_users(listed: Mapping | None = None) -> dict[str, str]:
    """Every account: users.json, then the secrets' [users] table (which wins for a name in both)."""
    out = _file_users()
    for name, value in (listed or {}).items():
        with contextlib.suppress(ValueError):
            out[clean_user_name(str(name))] = str(value)
    return out


def authenticate(name: str, password: str, listed: Mapping | None = None) -> str | None:
    """The identity "user:<name>" when `password` is that account's; None otherwise (same work either way)."""
    try:
        clean = clean_user_name(name)
    except ValueError:
        clean = ""
    stored = all_users(listed).get(clean, "") if clean else ""
    ok = verify_password(password, stored or _DUMMY)
    return f"user:{clean}" if ok and stored else None


def stamp(identity: str, listed: Mapping | None = None, shared_password: str = "") -> str:
    """The credential stamp of an identity: changes when its password (or the shared password) changes."""
    if identity.startswith("user:"):
        stored = all_users(listed).get(identity[5:], "")
        if stored:
            return privacy.keyed_hash(b"stamp:user:" + stored.encode("utf-8"))[:32]
        if shared_password:
            return privacy.keyed_hash(b"stamp:shared:" + shared_password.encode("utf-8"))[:32]
        return "gone"  # an account that no longer exists
    return ""


def set_password(name: str, password: str) -> str:
    """Create an account or change its password (ending its sessions); the clean name."""
    clean = clean_user_name(name)
    if len(password) < MIN_PASSWORD:
        raise ValueError(f"a password has at least {MIN_PASSWORD} characters")
    _write({**_file_users(), clean: hash_password(password)})
    sessions.revoke_identity(f"user:{clean}")
    return clean


def remove(name: str) -> bool:
    """Delete an account made with the admin command (ending its sessions); False when there was none."""
    clean = clean_user_name(name)
    users = _file_users()
    if clean not in users:
        return False
    del users[clean]
    _write(users)
    sessions.revoke_identity(f"user:{clean}")
    return True


def _write(users: dict[str, str]) -> None:
    """Replace users.json atomically, readable by its owner only."""
    path = users_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_writer(path) as tmp:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(dict(sorted(users.items())), fh, indent=1)
