"""Hosted demo mode: the switch, the folders a hosted user may read, upload limits (all from the environment).

Local mode (the default) trusts the person at the keyboard: any existing path works, and the server
listens on localhost only (.streamlit/config.toml). Hosted mode ($XRT_HOSTED=1) serves lab members over
the network: server paths are limited to the configured data roots ($XRT_DATA_ROOTS), the built-in sample
and the user's own upload folder, and it refuses to serve without a sign-in unless the operator allows
anonymous use ($XRT_ALLOW_ANONYMOUS=1).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from core.base import paths
from core.base.config import SourceConfig
from core.base.fsutil import inside, is_hidden
from core.web.uploads import UploadError, UploadLimits, list_datasets, upload_dir

TRUE = ("1", "true", "yes", "on")
HOSTED_PATH_ERROR = (
    "server paths are disabled in hosted mode: choose a configured data folder or your own uploads"
)
MAX_LISTED = 200
NO_SIGN_IN = (
    "This hosted X-ray trainer has no sign-in configured, so it serves nothing. The operator must set a "
    'shared password (`XRT_PASSWORD`, or `password = "..."` in `.streamlit/secrets.toml`) or OpenID Connect '
    "(an `[auth]` section in `.streamlit/secrets.toml`), then restart the app. To serve without any sign-in "
    "on purpose, set `XRT_ALLOW_ANONYMOUS=1`."
)


def hosted() -> bool:
    """True when $XRT_HOSTED is 1/true/yes/on."""
    return os.environ.get("XRT_HOSTED", "").strip().lower() in TRUE


def allow_anonymous() -> bool:
    """True when $XRT_ALLOW_ANONYMOUS is 1/true/yes/on: the operator lets a hosted server run without sign-in."""
    return os.environ.get("XRT_ALLOW_ANONYMOUS", "").strip().lower() in TRUE


def serve_refusal(hosted: bool, password: bool, oidc: bool, allow_anonymous: bool) -> str | None:
    """Why this server must not serve pages (hosted, no sign-in configured, anonymous use not allowed), else None."""
    if hosted and not (password or oidc or allow_anonymous):
        return NO_SIGN_IN
    return None


def data_roots() -> list[Path]:
    """The existing folders named in $XRT_DATA_ROOTS (os.pathsep-separated), resolved."""
    raw = os.environ.get("XRT_DATA_ROOTS", "")
    roots = [Path(p.strip()).expanduser().resolve() for p in raw.split(os.pathsep) if p.strip()]
    return [r for r in dict.fromkeys(roots) if r.is_dir()]


def max_upload_bytes() -> int:
    """Largest upload in bytes ($XRT_MAX_UPLOAD_MB, default 200)."""
    return paths.env_int("XRT_MAX_UPLOAD_MB", 200) * 1_000_000


def max_files() -> int:
    """Most files in one upload, zip members included ($XRT_MAX_FILES, default 5000)."""
    return paths.env_int("XRT_MAX_FILES", 5000)


def upload_limits() -> UploadLimits:
    """Upload limits from the environment."""
    return UploadLimits.from_totals(max_upload_bytes(), max_files())


def allowed_bases(owner: str) -> list[Path]:
    """Where a hosted user may read: the data roots, the built-in sample and their own upload folder."""
    return [*data_roots(), paths.sample_dir().resolve(), upload_dir(owner).resolve()]


def _allowed(resolved: Path, owner: str) -> bool:
    """Inside an allowed base, and never inside another owner's upload folder (even below a data root)."""
    if not owner or not any(inside(resolved, base) for base in allowed_bases(owner)):
        return False
    uploads = paths.uploads_dir().resolve()
    return not inside(resolved, uploads) or inside(resolved, upload_dir(owner).resolve())


def check_server_path(path: str | Path, owner: str = "") -> Path:
    """The resolved path when this session may use it (hosted: inside an allowed base), else UploadError."""
    text = str(path).strip()
    if not text or "\x00" in text:
        raise UploadError("no path was given")
    resolved = Path(text).expanduser().resolve()
    if hosted() and not _allowed(resolved, owner):
        raise UploadError(HOSTED_PATH_ERROR)
    if not resolved.exists():
        raise UploadError(f"not found: {text}")
    return resolved


def check_source(cfg: SourceConfig, owner: str = "") -> None:
    """Refuse a SourceConfig naming any path this session may not read (no-op for local mode)."""
    if not hosted():
        return
    for value in (cfg.root, cfg.csv_path, cfg.test_root):
        if str(value).strip():
            check_server_path(value, owner)


def _subfolders(root: Path) -> list[Path]:
    """Non-hidden immediate sub-folders of a folder (sorted, capped)."""
    try:
        subs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith((".", "_")))
    except OSError:
        return []
    return subs[:MAX_LISTED]


def allowed_folders(owner: str) -> list[Path]:
    """Folders a hosted user can pick: each data root and its sub-folders, then their upload datasets."""
    folders: list[Path] = []
    for root in data_roots():
        folders += [root, *_subfolders(root)]
    return [f for f in folders if _allowed(f, owner)] + list_datasets(owner)


def allowed_csvs(owner: str, depth: int = 2) -> list[Path]:
    """CSV files a hosted user can pick: up to `depth` folders below each data root and upload dataset."""
    found: list[Path] = []
    for base in [*data_roots(), *list_datasets(owner)]:
        level = [base]
        for _ in range(depth + 1):
            found += sorted(
                p
                for d in level
                for p in _files(d)
                if p.suffix.lower() in (".csv", ".tsv") and _allowed(p.resolve(), owner)
            )
            level = [s for d in level for s in _subfolders(d)]
    return found[:MAX_LISTED]


def _files(folder: Path) -> list[Path]:
    """Non-hidden files directly in a folder."""
    try:
        return [p for p in folder.iterdir() if p.is_file() and not is_hidden(p.name)]
    except OSError:
        return []


__all__ = [
    "NO_SIGN_IN",
    "UploadError",
    "allow_anonymous",
    "allowed_bases",
    "allowed_csvs",
    "allowed_folders",
    "check_server_path",
    "check_source",
    "data_roots",
    "hosted",
    "max_files",
    "max_upload_bytes",
    "serve_refusal",
    "upload_limits",
]


USER_FACING = (
    "PretrainedUnavailable",
    "TrainingError",
    "SplitError",
    "SourceError",
    "UnsafePathError",
    "ConfigError",
    "JobCancelled",
    "OutOfMemoryError",
    "MemoryError",
    "ImageError",
)
USER_FACING_TEXT = (
    "out of memory",
    "disk full",
    "worker process died",
    "training refused",
    "cancelled",
    "stopped by force",
    "interrupted",
)
_PATH = re.compile(r"(?:[A-Za-z]:)?(?:[\\/][^\s'\"`,;:()\[\]{}<>\\/]+){2,}[\\/]?")


def public_error(error: str) -> str | None:
    """A job error a hosted user may read (weights unavailable, training refused, out of memory...) with
    server paths cut to their last part; None for internal errors (tracebacks, unknown exceptions)."""
    text = (error or "").strip()
    head = text.split(":", 1)[0].strip()
    if "Traceback" in text or not (head in USER_FACING or any(t in text.lower() for t in USER_FACING_TEXT)):
        return None
    text = re.sub(r"; or copy the file to \S+", "", text)  # a hosted user cannot copy files onto the server
    text = text.replace("choose a local weights file", "upload a weights file on the Training setup page")
    return _PATH.sub(lambda m: m.group(0).rstrip("/\\").replace("\\", "/").rsplit("/", 1)[-1], text)
