"""File-system rules used everywhere: crash-safe writes (temp file in the same folder, fsync, os.replace),
path containment, and which names are hidden clutter."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

HIDDEN_NAMES = frozenset({"__MACOSX", "Thumbs.db", "desktop.ini"})
SPLIT_FOLDERS = {"train": "train", "valid": "valid", "val": "valid", "test": "test"}  # folder name -> split


def is_hidden(name: str) -> bool:
    """Hidden or system clutter (dot files incl. macOS "._" forks, __MACOSX, Windows thumbnails), never data."""
    return name.startswith(".") or name in HIDDEN_NAMES


def split_layout(root: str | os.PathLike) -> frozenset[str]:
    """The splits (train / valid / test) a folder's split sub-folders name; empty when it is no split layout.

    A split layout is train/ plus valid/ (val/) and/or test/, or only split folders (train/ alone too).
    """
    try:
        dirs = {
            e.name.lower()
            for e in os.scandir(Path(root).expanduser())
            if e.is_dir() and not is_hidden(e.name)
        }
    except OSError:
        return frozenset()
    only_splits = bool(dirs) and dirs <= set(SPLIT_FOLDERS) and (len(dirs) > 1 or dirs == {"train"})
    if not (only_splits or ("train" in dirs and bool(dirs & {"valid", "val", "test"}))):
        return frozenset()
    return frozenset(SPLIT_FOLDERS[d] for d in dirs if d in SPLIT_FOLDERS)


def inside(path: Path, root: Path) -> bool:
    """Whether an already resolved path lies inside (or is) an already resolved root."""
    return path == root or root in path.parents


def temp_path_for(path: str | os.PathLike) -> Path:
    """A unique hidden temp name beside `path` (same folder, so the rename is atomic)."""
    path = Path(path)
    return path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(3)}.tmp")


def _fsync_dir(folder: Path) -> None:
    """Make a rename durable (POSIX); a no-op where folders cannot be opened."""
    with contextlib.suppress(OSError, AttributeError):
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _with_filename(err: OSError, path: Path) -> OSError:
    """The same OSError, naming the file being written when the OS did not."""
    if err.filename or not err.errno:
        return err
    return type(err)(err.errno, err.strerror or os.strerror(err.errno), str(path))


def atomic_replace(tmp_path: str | os.PathLike, final_path: str | os.PathLike, durable: bool = True) -> None:
    """Rename `tmp_path` over `final_path`; durable: fsync the file first and the folder after."""
    tmp_path, final_path = Path(tmp_path), Path(final_path)
    try:
        if durable:
            with open(tmp_path, "rb+") as fh:
                os.fsync(fh.fileno())
        os.replace(tmp_path, final_path)
    except OSError as err:
        raise _with_filename(err, final_path) from err
    if durable:
        _fsync_dir(final_path.parent)


@contextlib.contextmanager
def atomic_writer(path: str | os.PathLike, durable: bool = True) -> Iterator[Path]:
    """Yield a temp path to write (e.g. torch.save); on success it replaces `path`, on error it is removed.

    Readers never see a partial file. durable=False skips the fsyncs: for caches, where losing a recent
    entry in a power cut only costs recomputing it.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path_for(path)
    try:
        yield tmp
        atomic_replace(tmp, path, durable)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        raise _with_filename(err, path) from err
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes, durable: bool = True) -> None:
    """Write `data` to `path` so readers see the old file or the whole new one, never a part (durable: fsynced)."""
    with atomic_writer(path, durable) as tmp, open(tmp, "wb") as fh:
        fh.write(data)


def atomic_write_text(path: str | os.PathLike, text: str, durable: bool = True) -> None:
    """Atomic UTF-8 text write."""
    atomic_write_bytes(path, text.encode("utf-8"), durable)


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    """Atomic JSON write (indented, non-JSON values as strings)."""
    atomic_write_text(path, json.dumps(obj, indent=2, default=str))


@contextlib.contextmanager
def file_lock(path: str | os.PathLike) -> Iterator[None]:
    """Hold an exclusive lock on `path` (created if missing) across processes of this host; blocks until free."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+b") as fh:
        if sys.platform == "win32":  # pragma: no cover - Windows
            import msvcrt

            msvcrt.locking(fh.fileno(), msvcrt.LK_LOCK, 1)
        else:
            import fcntl

            fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            if sys.platform != "win32":
                import fcntl

                fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
