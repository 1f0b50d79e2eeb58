"""One version, written in pyproject.toml: read at run time, printed by the CLI, shown in the app, kept in env.json."""

from __future__ import annotations

import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

from core.base import version as v

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = """[tool.other]
version = "7.7.7"

[project]
name = "xray-trainer"
description = "not the version"
version = "9.9.9"

[tool.later]
version = "8.8.8"
"""


@pytest.fixture
def fresh_version():
    """version() re-reads its sources in this test (it is cached per process)."""
    v.version.cache_clear()
    yield
    v.version.cache_clear()


def test_version_is_read_from_this_pyproject():
    tomllib = pytest.importorskip("tomllib")
    with open(ROOT / "pyproject.toml", "rb") as f:
        written = tomllib.load(f)["project"]["version"]
    assert v.version() == written and v.label() == f"xray-trainer {written}"
    import core

    assert core.__version__ == written


def test_both_parsers_take_the_project_version_only():
    assert v.parse_version(PYPROJECT) == v.scan_version(PYPROJECT) == "9.9.9"
    assert v.scan_version('[project]\nname = "a"\n[tool.x]\nversion = "1"\n') == ""


def test_version_follows_the_file_then_metadata(tmp_path, monkeypatch, fresh_version):
    (tmp_path / "pyproject.toml").write_text(PYPROJECT, encoding="utf-8")
    monkeypatch.setattr(v, "PYPROJECT", tmp_path / "pyproject.toml")
    assert v.version() == "9.9.9"
    v.version.cache_clear()
    monkeypatch.setattr(v, "PYPROJECT", tmp_path / "missing.toml")  # an installed copy without the file
    monkeypatch.setattr(v.metadata, "version", lambda name: "3.2.1" if name == v.NAME else "")
    assert v.version() == "3.2.1"
    v.version.cache_clear()

    def not_installed(name: str) -> str:
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(v.metadata, "version", not_installed)
    assert v.version() == "unknown"


def test_cli_prints_the_version(capsys):
    from core.cli import main

    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0
    assert capsys.readouterr().out.strip() == v.label()
    res = subprocess.run(
        [sys.executable, "-m", "core", "--version"], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert res.returncode == 0 and res.stdout.strip() == v.label(), res.stderr


def test_env_json_records_the_version():
    from core.train.prepare import env_info

    assert env_info()["xray_trainer"] == v.version()
