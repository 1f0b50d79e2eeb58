"""Where the app keeps its state (runs, job database, decode cache, sample data), and numbers read from the environment."""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]  # core/base/paths.py -> the repository

# The app home's layout ($XRT_HOME): every folder and file in it is named here once.
RUNS_DIR = "runs"  # one run folder per job (core.runs.rundir names what is inside)
CACHE_DIR = "cache"  # decode-and-resize cache
SAMPLE_DIR = "sample"  # the synthetic sample (core.data.sample names what is inside)
UPLOADS_DIR = "uploads"  # hosted: one folder per owner
SETTINGS_DIR = "settings"  # hosted: each user's kept settings
CORRECTIONS_DIR = "corrections"  # corrected label tables (hosted: inside the owner's upload folder)
LOGS_DIR = "logs"
WORKERS_LOG = "workers.log"  # inside LOGS_DIR: the output of detached worker supervisors
JOBS_DB = "jobs.sqlite3"
SECRET_KEY = "secret.key"  # the installation secret (core.base.privacy), unless $XRT_SECRET is set


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
    return sub(RUNS_DIR)


def cache_dir() -> Path:
    """Decode-and-resize cache."""
    return Path(os.environ["XRT_CACHE_DIR"]) if os.environ.get("XRT_CACHE_DIR") else sub(CACHE_DIR)


def sample_dir() -> Path:
    """Where the built-in synthetic sample dataset is generated."""
    return sub(SAMPLE_DIR)


def jobs_db() -> Path:
    """The SQLite database of jobs."""
    return app_home() / JOBS_DB


def uploads_dir() -> Path:
    """Hosted uploads: one sub-folder per owner (core.web.uploads)."""
    return sub(UPLOADS_DIR)


def settings_dir() -> Path:
    """Hosted: each user's kept settings, one JSON file per user (core.web.settings_store)."""
    return sub(SETTINGS_DIR)


def corrections_dir() -> Path:
    """Where corrected label tables are written (a local server; hosted ones go to the owner's upload folder)."""
    return sub(CORRECTIONS_DIR)


def workers_log(home: Path | None = None) -> Path:
    """The log of detached worker supervisors: logs/workers.log in the app home (or in `home`, the job database's)."""
    return (app_home() if home is None else Path(home)) / LOGS_DIR / WORKERS_LOG


def secret_key_file() -> Path:
    """Where this installation's secret key lives."""
    return app_home() / SECRET_KEY
