"""Browser-test fixtures: a real `streamlit run` server with its own app home, and headless Chromium.

The suite skips (with the reason) when Chromium or the playwright package is missing, except in CI
($CI set to true/1/yes), where the browser tests must run and a missing piece fails them instead.
Screenshots are written to test-artifacts/screenshots/<test>-<step>.png under the repository root.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "test-artifacts"
SHOTS = ARTIFACTS / "screenshots"
CHROMIUM_PATHS = ("/usr/bin/chromium", "/usr/bin/chromium-browser")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
VIEWPORT = {"width": 1400, "height": 1800}
SERVER_START_S = 120.0
DEFAULT_TIMEOUT_MS = 60_000


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test in this folder as a browser test (-m browser selects them, -m 'not browser' skips)."""
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.browser)


def in_ci() -> bool:
    """True when $CI says this is a CI run (then missing browser pieces fail instead of skipping)."""
    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


def chromium_path() -> str | None:
    """Debian's Chromium executable, or None when it is not installed."""
    return next((p for p in CHROMIUM_PATHS if os.access(p, os.X_OK)), None)


def missing_requirement() -> str:
    """Why the browser tests cannot run here ('' when they can)."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError as err:
        return f"the playwright package is not installed ({err}); pip install -r requirements-dev.txt"
    if chromium_path() is None:
        return f"Chromium not found at {' or '.join(CHROMIUM_PATHS)}; run scripts/install_browser.sh"
    return ""


@pytest.fixture(scope="session")
def _browser_requirements() -> None:
    """Skip the browser suite with the reason, or fail it in CI where it must run."""
    reason = missing_requirement()
    if reason and in_ci():
        pytest.fail(f"browser tests must run in CI but cannot: {reason}", pytrace=False)
    if reason:
        pytest.skip(f"browser tests skipped: {reason}")


def free_port() -> int:
    """A TCP port that is free on 127.0.0.1 right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def log_tail(log: Path, chars: int = 3000) -> str:
    """The end of the server log (for failure messages)."""
    return log.read_text(errors="replace")[-chars:] if log.is_file() else "(no log)"


def wait_healthy(url: str, proc: subprocess.Popen, log: Path, timeout: float = SERVER_START_S) -> None:
    """Wait until Streamlit answers /_stcore/health; fail with the server log if it dies or never answers."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"streamlit exited with {proc.returncode}:\n{log_tail(log)}")
        with contextlib.suppress(OSError):
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=5) as resp:
                if resp.status == 200 and resp.read().strip() == b"ok":
                    return
        time.sleep(0.5)
    pytest.fail(f"streamlit did not become healthy in {timeout:.0f} s:\n{log_tail(log)}")


def started_here(pid: int, home: Path) -> bool:
    """True when process `pid` runs with our XRT_HOME (so it was started by this suite's server)."""
    try:
        env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return False
    return f"XRT_HOME={home}".encode() in env


def worker_pids(home: Path) -> set[int]:
    """Pids of job supervisors and job processes recorded in the job database of `home`."""
    db = home / "jobs.sqlite3"
    if not db.is_file():
        return set()
    pids: set[int] = set()
    with contextlib.closing(sqlite3.connect(db, timeout=10)) as con:
        with contextlib.suppress(sqlite3.Error):
            for pid, sup in con.execute("SELECT pid, sup_pid FROM jobs"):
                pids.update(p for p in (pid, sup) if p)
        with contextlib.suppress(sqlite3.Error):
            pids.update(int(r[0]) for r in con.execute("SELECT pid FROM workers") if r[0])
    return pids


def kill_tree(pid: int) -> None:
    """SIGKILL a process, and its whole process group when it leads one (supervisors do)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        if os.getpgid(pid) == pid:
            os.killpg(pid, signal.SIGKILL)
        else:
            os.kill(pid, signal.SIGKILL)


def stop_server(proc: subprocess.Popen, home: Path) -> None:
    """Stop the streamlit process group, then every job supervisor / worker it started under `home`."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    for pid in worker_pids(home):
        if started_here(pid, home):
            kill_tree(pid)


@contextlib.contextmanager
def serve(env: dict[str, str], home: Path, port: int) -> Iterator[str]:
    """`streamlit run streamlit_app.py` with `env` on a local port; yield its URL once healthy; stop it and its jobs."""
    log = home / "streamlit.log"
    cmd = [
        sys.executable,
        "-m",
        "streamlit",
        "run",
        "streamlit_app.py",
        "--server.headless",
        "true",
        "--server.port",
        str(port),
        "--server.address",
        "127.0.0.1",
        "--browser.gatherUsageStats",
        "false",
        "--server.fileWatcherType",
        "none",
    ]  # no watcher: others' edits must not rerun the app mid-test
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            cmd,
            cwd=REPO,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, proc, log)
        yield url
    finally:
        stop_server(proc, home)


@pytest.fixture(scope="session")
def app_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The app home (XRT_HOME) of the browser-test server: runs, job database, generated sample."""
    return tmp_path_factory.mktemp("browser_xrt_home")


@pytest.fixture(autouse=True)
def _fresh_working_settings(request: pytest.FixtureRequest) -> None:
    """Each test starts from the defaults: no working settings kept by an earlier test (one local user)."""
    if "app_url" in request.fixturenames:
        import shutil

        from core.base import paths

        shutil.rmtree(request.getfixturevalue("app_home") / paths.SETTINGS_DIR, ignore_errors=True)


@pytest.fixture(scope="session")
def app_url(_browser_requirements: None, app_home: Path) -> Iterator[str]:
    """Start `streamlit run streamlit_app.py` on a free local port; yield its URL; stop it and its jobs."""
    port = free_port()
    env = {**os.environ, "XRT_HOME": str(app_home), "XRT_MAX_JOBS": "1", "PYTHONUNBUFFERED": "1"}
    for name in ("XRT_HOSTED", "XRT_CACHE_DIR", "XRT_PASSWORD"):
        env.pop(name, None)
    with serve(env, app_home, port) as url:
        yield url


def train_tiny_run(home: Path) -> str:
    """A finished one-epoch 32 px run on the sample under `home`, trained in this process and registered in its job store."""
    import torch

    from core.base.config import (
        AugConfig,
        DataConfig,
        RunConfig,
        SourceConfig,
        SplitConfig,
        TrainConfig,
        to_dict,
    )
    from core.data.sample import ensure_sample
    from core.runs import jobs
    from core.runs.rundir import RunFolder

    sample = ensure_sample(home / "sample")  # what the server generates there (a no-op once it has)
    cfg = RunConfig(
        source=SourceConfig(kind="csv", csv_path=str(sample / "labels.csv"), group_col="patient_id"),
        data=DataConfig(img_size=32, aug=AugConfig(enabled=False), split=SplitConfig(method="group")),
        train=TrainConfig(pretrained=False, epochs=1, freeze_epochs=0),
    )
    store = jobs.JobStore(home / "jobs.sqlite3")
    job = store.submit("train", {"config": to_dict(cfg)}, run_dir=home / "runs" / "checks-tiny")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("XRT_HOME", str(home))
        try:
            jobs.run_inline("train", {"config": to_dict(cfg)}, run_dir=Path(job.run_dir))
        finally:
            torch.set_num_threads(threads)
    store.finish(job.id, "done", result=RunFolder(job.run_dir).read_metrics(), only_if_running=False)
    return job.id


@pytest.fixture(scope="session")
def tiny_run_id(app_url: str, app_home: Path) -> str:
    """The id of one tiny finished run on the server's sample, trained once and shared by the tests that read it."""
    return train_tiny_run(app_home)


@pytest.fixture(scope="session")
def browser(_browser_requirements: None) -> Iterator:
    """Headless Debian Chromium driven by playwright (never `playwright install`)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


def new_page(browser):
    """A fresh browser context and page (own cookies, downloads accepted, generous timeouts)."""
    context = browser.new_context(viewport=VIEWPORT, accept_downloads=True)
    context.set_default_timeout(DEFAULT_TIMEOUT_MS)
    return context.new_page()


@pytest.fixture(scope="session")
def page_factory(browser) -> Callable:
    """new_page(): a fresh page in its own browser context (for fixtures wider than one test)."""
    return lambda: new_page(browser)


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    """Keep each phase's report on the test item (the page fixture screenshots failed tests)."""
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report


@pytest.fixture
def page(browser, request: pytest.FixtureRequest) -> Iterator:
    """A page in its own browser context, closed after the test; a failed test leaves a -FAILED screenshot."""
    pg = new_page(browser)
    yield pg
    rep = getattr(request.node, "rep_call", None)
    if rep is not None and rep.failed:
        path = shot_path(request.node.name, "FAILED")
        path.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(Exception):
            pg.screenshot(path=str(path), full_page=True)
    pg.context.close()


@pytest.fixture(scope="session")
def artifacts() -> Path:
    """test-artifacts/ under the repository root (gitignored; CI keeps it)."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS


def shot_path(test_name: str, step: str) -> Path:
    """test-artifacts/screenshots/<test>-<step>.png (name made file-system safe)."""
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{test_name}-{step}")
    return SHOTS / f"{safe}.png"


@pytest.fixture
def screenshot(request: pytest.FixtureRequest) -> Callable[..., Path]:
    """shot(page, step): save a screenshot of the page as a test artefact and return its path."""
    test_name = request.node.name

    def shot(pg, step: str) -> Path:
        """Save a screenshot of `pg` for `step`."""
        path = shot_path(test_name, step)
        path.parent.mkdir(parents=True, exist_ok=True)
        pg.screenshot(path=str(path), full_page=True)
        return path

    return shot
