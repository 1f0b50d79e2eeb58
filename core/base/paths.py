"""Where the app keeps its state (runs, job database, decode cache, sample data), and numbers read from the environment."""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]  # core/base/paths.py -> the repository


def env_int(name: str, default: int, minimum: int = 1) -> int:
    """An integer setting from the environment; `default` when unset, not an integer or below `minimum`."""
    try:
        value = int(os.environ.get(name, "").strip() or default)
    except ValueError:
        return default
    return value if value >= minimum else default


def env_float(name: str, default: float, minimum: float = 0.0) -> float:
    """A number setting from the environment; `default` when unset, not a number or below `minimum`."""
    try:
        value = float(os.environ.get(name, "").strip() or default)
    except ValueError:
        return default
    return value if value >= minimum else default


def cpu_cores() -> int:
    """CPU cores this process may use (its affinity where the OS has one)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def app_home() -> Path:
    """The app's working folder ($XRT_HOME, default ./workspace beside the code)."""
    home = Path(os.environ.get("XRT_HOME", REPO_ROOT / "workspace")).expanduser().resolve()
    home.mkdir(parents=True, exist_ok=True)
    return home


def sub(name: str) -> Path:
    """A named folder inside the app home, created on demand."""
    path = app_home() / name
    path.mkdir(parents=True, exist_ok=True)
    return path


def runs_dir() -> Path:
    """Folder holding one sub-folder per run."""
    return sub("runs")


def cache_dir() -> Path:
    """Decode-and-resize cache."""
    return Path(os.environ["XRT_CACHE_DIR"]) if os.environ.get("XRT_CACHE_DIR") else sub("cache")


def sample_dir() -> Path:
    """Where the built-in synthetic sample dataset is generated."""
    return sub("sample")


def jobs_db() -> Path:
    """The SQLite database of jobs."""
    return app_home() / "jobs.sqlite3"
