"""Shared fixtures: an isolated app home per test, paths to ../shared/data when present."""

from __future__ import annotations

from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path_factory, monkeypatch):
    """Every test gets its own XRT_HOME so runs, caches and jobs never leak between tests."""
    home = tmp_path_factory.mktemp("xrt_home")
    monkeypatch.setenv("XRT_HOME", str(home))
    monkeypatch.delenv("XRT_CACHE_DIR", raising=False)
    return home


@pytest.fixture
def shared_data() -> Path:
    """../shared/data, or skip the test when it is absent (a user's fresh clone)."""
    if not SHARED.is_dir():
        pytest.skip("../shared/data is not present")
    return SHARED


@pytest.fixture
def submitted(monkeypatch) -> list[dict]:
    """Replace jobs.submit_and_start: the job row is queued for real, no worker process is started."""
    from core.runs import jobs

    calls: list[dict] = []

    def fake(kind, params, run_dir=None, owner="", store=None, executor=None):
        job = (store or jobs.JobStore()).submit(kind, params, run_dir=run_dir, owner=owner)
        calls.append({"kind": kind, "params": params, "owner": owner, "id": job.id})
        return job

    monkeypatch.setattr(jobs, "submit_and_start", fake)
    return calls
