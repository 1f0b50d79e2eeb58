"""Real-browser test of a sweep: start 2 tiny trials on the sample, watch them, compare, reuse the best settings."""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from core.train import experiments
from core.web import settings_store
from tests.browser.test_flow import cancel_leftovers, go_to, open_app, set_number, settle, store

try:
    from playwright.sync_api import expect
except ImportError:  # the conftest's fixtures skip the suite (or fail it in CI) with the reason
    expect = None
if TYPE_CHECKING:
    from playwright.sync_api import Page

SWEEP_TIMEOUT_S = 600.0
CHARTS = '[data-testid="stPlotlyChart"]'
GRID_CELLS = '[data-testid="stDataFrame"] [role="gridcell"]'


def wait_text(page: Page, pattern: str, timeout_s: float) -> None:
    """Poll until the page shows text matching `pattern` (the live panel redraws every 2 s)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if page.get_by_text(re.compile(pattern)).count():
            return
        page.wait_for_timeout(1000)
    pytest.fail(f"{pattern!r} not shown in {timeout_s:.0f} s")


def new_experiments(known: set[str], timeout_s: float) -> list[str]:
    """Experiment ids not in `known`, polled until one appears (the click's rerun may start late)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        new = [i for i in experiments.list_ids() if i not in known]
        if new:
            return new
        time.sleep(0.5)
    return []


def fill(page: Page, label: str, text: str) -> None:
    """Type into a text input, commit it with Enter and wait for the rerun."""
    box = page.get_by_label(label, exact=True)
    box.fill(text)
    box.press("Enter")
    settle(page)
    expect(box).to_have_value(text)


@pytest.mark.timeout(900)
def test_sweep_start_watch_compare_and_reuse(
    app_url: str, app_home: Path, page: Page, screenshot, monkeypatch
) -> None:
    monkeypatch.setenv("XRT_HOME", str(app_home))  # read the server's experiments and jobs
    cancel_leftovers(app_home)
    open_app(page, app_url)
    go_to(page, "Training setup")
    set_number(page, "Image size (pixels)", 32)
    set_number(page, "Epochs", 1)
    go_to(page, "Experiments")
    page.get_by_role("combobox", name="Settings to sweep").click()
    page.get_by_role("option", name=re.compile(r"^train_fraction")).click()
    settle(page)
    fill(page, "Values of lr", "3e-3")  # one value: every trial trains with it
    fill(page, "Values of train_fraction", "0.15,0.3")  # the trials: few training images each
    expect(page.get_by_text("2 trial(s)", exact=False)).to_be_visible()
    known = set(experiments.list_ids())
    page.get_by_role("button", name="Start sweep").click()
    new = new_experiments(known, 90)
    assert len(new) == 1, new
    settle(page)
    record = experiments.read(new[0])
    assert [experiments.base_of(record).data.img_size, len(record["trials"])] == [32, 2]
    wait_text(page, r"Status: (queued|running)", 60)
    screenshot(page, "watching")
    wait_text(page, r"Status: done", SWEEP_TIMEOUT_S)
    settle(page)
    jobs_done = [store(app_home).get(t["job"]).status for t in record["trials"]]
    assert jobs_done == ["done", "done"]
    expect(page.locator(GRID_CELLS, has_text="★")).to_have_count(1)
    expect(page.locator(CHARTS)).to_have_count(2)  # metric vs lr, overlaid curves
    screenshot(page, "compared")
    final = experiments.refresh(new[0], store(app_home))
    best = experiments.best_trial(
        experiments.trial_table(final, store(app_home), n_boot=100), "balanced_accuracy"
    )
    best_fraction = next(t["settings"]["train_fraction"] for t in record["trials"] if t["job"] == best)
    page.get_by_role("button", name="Use these settings").click()
    expect(page.locator("h1", has_text="Training setup")).to_be_visible(timeout=90_000)
    settle(page)
    expect(page.get_by_role("textbox", name=re.compile(r"^Learning rate"))).to_have_value("0.003")
    expect(page.get_by_label("Image size (pixels)", exact=True)).to_have_value("32")
    kept = settings_store.load("local").run_config  # the best trial's settings are the kept working settings
    assert kept is not None and kept.data.train_fraction == best_fraction and kept.train.lr == 3e-3
    screenshot(page, "reused")
