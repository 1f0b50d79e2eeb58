"""The product's version, written in one place: pyproject.toml's [project] version, read here at run time.

The app and the CLI run from a source checkout without installing the package, so the file beside the code
is the source; an installed copy without it falls back to the installed distribution's metadata.
"""

from __future__ import annotations

import re
import sys
from functools import lru_cache
from importlib import metadata
from pathlib import Path

NAME = "xray-trainer"
PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"
_PROJECT_VERSION = re.compile(r'^\[project\]\s*$(?:(?!^\[).)*?^version\s*=\s*"([^"]+)"', re.M | re.S)


def parse_version(text: str) -> str:
    """The [project] version in pyproject.toml text ('' when absent); tomllib on 3.11+, one pattern on 3.10."""
    if sys.version_info >= (3, 11):
        import tomllib

        return str(tomllib.loads(text).get("project", {}).get("version", ""))
    return scan_version(text)


def scan_version(text: str) -> str:
    """The [project] version found by a pattern (Python 3.10 has no tomllib); '' when absent."""
    match = _PROJECT_VERSION.search(text)
    return match.group(1) if match else ""


@lru_cache(maxsize=1)
def version() -> str:
    """This product's version: pyproject.toml beside the code, else the installed metadata, else 'unknown'."""
    try:
        found = parse_version(PYPROJECT.read_text(encoding="utf-8"))
    except OSError:
        found = ""
    if found:
        return found
    try:
        return metadata.version(NAME)
    except metadata.PackageNotFoundError:
        return "unknown"


def label() -> str:
    """'xray-trainer 0.1.0': the name and version, as shown in the app and printed by --version."""
    return f"{NAME} {version()}"
