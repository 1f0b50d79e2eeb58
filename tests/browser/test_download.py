"""Real-browser test of "Download the model (.zip)": the zip the browser saves gives, in a fresh process, the run's
validation probabilities back from both its safetensors model and its ONNX file (onnxruntime + the README's code)."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pytest

from tests.browser.test_flow import expect, go_to, open_app, pick_run, settle
from tests.test_package import fresh_routes

BUTTON = "Download the model (.zip)"


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_download_the_model_and_use_it_in_a_fresh_process(
    app_url: str, app_home: Path, tiny_run_id: str, page, screenshot, tmp_path: Path
) -> None:
    """Training run page offers the zip; Evaluation's button saves it; both of its models predict as the run did."""
    open_app(page, app_url)
    go_to(page, "Training run")
    pick_run(page, "Watch run", tiny_run_id)
    expect(page.get_by_role("button", name=BUTTON)).to_be_visible(timeout=120_000)
    go_to(page, "Evaluation")
    pick_run(page, "Run", tiny_run_id)
    button = page.get_by_role("button", name=BUTTON)
    expect(button).to_be_visible(timeout=180_000)
    settle(page, 180_000)
    button.scroll_into_view_if_needed()
    screenshot(page, "1-download-button")
    with page.expect_download(
        timeout=180_000
    ) as info:  # the zip (with its ONNX export) is built on the click
        button.click()
    download = info.value
    run = app_home / "runs" / "checks-tiny"
    assert download.suggested_filename == f"{run.name}_model.zip"
    saved = tmp_path / download.suggested_filename
    download.save_as(saved)
    with zipfile.ZipFile(saved) as zf:
        zf.extractall(tmp_path / "unzipped")
    folder = tmp_path / "unzipped" / run.name
    assert {p.name for p in folder.iterdir()} >= {
        "model.safetensors",
        "model.json",
        "model.onnx",
        "README.md",
    }
    got, expected = fresh_routes(folder, run / "valid_predictions.csv")
    for route in ("torch", "plain", "onnx"):
        np.testing.assert_allclose(np.array(got[route]), expected, atol=1e-4, err_msg=route)
