"""Real-browser tests of state that must hold (issue 14): one setup verdict with Start disabled, the LR finder's
elapsed time and ETA, and settings, source and LR-finder result kept across a refresh and another device."""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.browser.test_flow import expect, go_to, open_app, set_number, set_switch, settle

if TYPE_CHECKING:
    from playwright.sync_api import Page

VERDICT_BAD = re.compile(r"^These settings cannot work: .*no_such_column")
VALID = "Settings are valid and carried to the Training run page."


def choose(page: Page, label: str, option: str) -> None:
    """Pick an option of a selectbox by its visible text."""
    page.get_by_role("combobox", name=label).click()
    page.get_by_role("option", name=option, exact=True).click()
    settle(page)


def verdict_step(page: Page, shot) -> None:
    """A split column that does not exist: one red verdict (no green one), Start disabled with the reason."""
    go_to(page, "Training setup")
    choose(page, "Split", "From a CSV split column (train / valid / test)")
    box = page.get_by_role("textbox", name="Split column in the CSV")
    box.fill("no_such_column")
    box.press("Enter")
    settle(page)
    expect(page.get_by_text(VERDICT_BAD)).to_be_visible()
    expect(page.get_by_text(VALID)).to_have_count(0)
    expect(page.get_by_role("button", name="Run the LR finder")).to_be_disabled()
    shot(page, "1-setup-verdict")
    go_to(page, "Training run")
    expect(page.get_by_role("button", name="Start training")).to_be_disabled()
    expect(page.get_by_text(re.compile(r"not valid: .*no_such_column"))).to_be_visible()
    shot(page, "2-run-start-disabled")
    go_to(page, "Training setup")
    choose(page, "Split", "By patient (no patient in two splits)")
    expect(page.get_by_text(VALID)).to_be_visible()


def lr_finder_eta_step(page: Page, shot) -> None:
    """Small settings, then the LR finder: its bar shows elapsed time and time left while it runs."""
    set_switch(page, "Start from ImageNet weights (pretrained)", on=False)
    set_switch(page, "Augment training images", on=False)
    for label, value in (("Image size (pixels)", 64), ("Batch size", 16), ("Epochs", 2), ("LR finder steps", 20)):
        set_number(page, label, value)
    page.get_by_role("button", name="Run the LR finder").click()
    bar = page.locator('[data-testid="stProgress"]', has_text=re.compile(r"step \d+ / 20 · elapsed .* left"))
    expect(bar.first).to_be_visible(timeout=240_000)
    shot(page, "3-lr-finder-eta")
    use = page.get_by_role("button", name=re.compile(r"^Use (valley|slide|steep|minimum): "))
    expect(use.first).to_be_visible(timeout=300_000)
    settle(page)


def kept_step(page: Page) -> None:
    """The setup page shows the kept settings and the LR finder's curve."""
    expect(page.get_by_label("Image size (pixels)", exact=True)).to_have_value("64")
    expect(page.get_by_label("Epochs", exact=True)).to_have_value("2")
    expect(page.get_by_role("switch", name="Start from ImageNet weights (pretrained)")).not_to_be_checked()
    expect(page.get_by_role("button", name=re.compile(r"^Use (valley|slide|steep|minimum): ")).first).to_be_visible()


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_verdict_eta_and_settings_kept_across_refresh_and_devices(app_url: str, page: Page, page_factory,
                                                                   screenshot) -> None:
    """One verdict; LR-finder ETA; a refresh and a second browser (same local user) keep settings and curve."""
    start = time.monotonic()
    open_app(page, app_url)
    verdict_step(page, screenshot)
    lr_finder_eta_step(page, screenshot)
    page.reload()
    expect(page.locator("h1", has_text="Training setup")).to_be_visible(timeout=120_000)
    settle(page, 120_000)
    kept_step(page)
    screenshot(page, "4-setup-after-refresh")
    other = page_factory()  # another browser: no cookies, no URL state
    try:
        open_app(other, app_url)
        go_to(other, "Training setup")
        kept_step(other)
        go_to(other, "Training run")
        expect(other.get_by_text(re.compile(r"Settings: resnet18 \(from scratch\), 64 px .*\+ 2 epochs"))).to_be_visible()
        screenshot(other, "5-run-other-device")
    finally:
        other.context.close()
    Path(screenshot(page, "6-end")).parent.joinpath("browser_state_time.txt").write_text(
        f"{time.monotonic() - start:.1f} s wall time of test_verdict_eta_and_settings_kept\n")
