"""Working settings kept on the server per user, so a reload or another device of the same user finds them.

One JSON file per user under `$XRT_HOME/settings/`: the working RunConfig (as on the setup page, valid or
not yet), the chosen data source, the id of the last LR-finder job and the sources whose data checks ran. Configs go through `config.to_dict`
/ `from_dict` (strict), so a file written by another version that no longer fits is dropped, never half used.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from core.base import fsutil, paths
from core.base.config import ConfigError, RunConfig, SourceConfig, from_dict, to_dict

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

C = TypeVar("C", bound="DataclassInstance")
MAX_CHECKED = 8  # sources whose checks ran, kept per user (the newest)


@dataclass
class Saved:
    """What is kept for one user (None: nothing kept)."""

    run_config: RunConfig | None = None
    source: SourceConfig | None = None
    lr_job: str = ""
    checked: tuple[str, ...] = ()  # sources (as the UI keys them) whose data checks the user ran


def settings_path(user: str) -> Path:
    """The settings file of a user key (hashed: a file name never reveals who)."""
    return paths.settings_dir() / f"{hashlib.sha256(user.encode('utf-8')).hexdigest()[:32]}.json"


def save(user: str, saved: Saved) -> None:
    """Write a user's settings atomically (a crash leaves the previous file)."""
    data = {
        "run_config": to_dict(saved.run_config) if saved.run_config else None,
        "source": to_dict(saved.source) if saved.source else None,
        "lr_job": saved.lr_job,
        "checked": list(saved.checked[-MAX_CHECKED:]),
    }
    fsutil.atomic_write_json(settings_path(user), data)


def _parse(cls: type[C], data: object) -> C | None:
    """A config from its dict, or None when it is missing or no longer fits (strict from_dict)."""
    if not isinstance(data, dict):
        return None
    try:
        return from_dict(cls, data)
    except (ConfigError, TypeError, ValueError, AttributeError, KeyError):
        return None


def load(user: str) -> Saved:
    """A user's kept settings; empty when there are none or the file cannot be used."""
    try:
        data = json.loads(settings_path(user).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return Saved()
    if not isinstance(data, dict):
        return Saved()
    lr_job, checked = data.get("lr_job"), data.get("checked")
    return Saved(
        _parse(RunConfig, data.get("run_config")),
        _parse(SourceConfig, data.get("source")),
        lr_job if isinstance(lr_job, str) else "",
        tuple(c for c in checked if isinstance(c, str)) if isinstance(checked, list) else (),
    )
