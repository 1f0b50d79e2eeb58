"""Real-browser test of the checks of the data: click a confusion-matrix cell, see its gallery, exclude an
image, and train on the corrected source the app wrote (the user's files untouched)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd
import pytest

from core.runs import jobs
from tests.browser.test_flow import (
    expect,
    go_to,
    open_app,
    pick_run,
    set_number,
    set_switch,
    settle,
    start_training,
)


@pytest.mark.slow
@pytest.mark.timeout(1500)
def test_open_a_cell_exclude_an_image_and_train_on_the_corrected_source(
    app_url: str, app_home: Path, tiny_run_id: str, page, screenshot
) -> None:
    """Evaluation: click a confusion cell -> gallery -> exclude one image -> corrected CSV -> a run trains on it."""
    open_app(page, app_url)  # the server generates the sample under app_home
    labels_before = (app_home / "sample" / "labels.csv").read_bytes()
    job_id = tiny_run_id  # trained once per session (conftest), shared with the Predict test
    go_to(page, "Evaluation")
    pick_run(page, "Run", job_id)
    expect(page.get_by_text("Open a confusion-matrix cell")).to_be_visible(timeout=180_000)
    settle(page, 180_000)
    # the cell to open is chosen from the run's own predictions, so the test never depends on what the tiny model
    # learned: the largest cell of the confusion matrix holds images whatever the model did
    run = app_home / "runs" / "checks-tiny"
    preds = pd.read_csv(run / "valid_predictions.csv", dtype={"label": str, "pred": str})
    classes = json.loads((run / "metrics.json").read_text())["classes"]
    n = len(classes)
    counts = preds.groupby(["label", "pred"]).size()
    true_name, pred_name = counts.idxmax()
    t, p = classes.index(true_name), classes.index(pred_name)
    cell = preds[(preds["label"] == true_name) & (preds["pred"] == pred_name)].sort_values(
        f"prob_{true_name}"
    )
    errors = [
        (i, j) for i in range(n) for j in range(n) if i != j and counts.get((classes[i], classes[j]), 0)
    ]
    chart = page.locator(".st-key-chk_cm")
    chart.scroll_into_view_if_needed()
    points = chart.locator(".scatterlayer .point")
    expect(points).to_have_count(n * n)
    cell_box = page.get_by_role("combobox", name="Cell")
    own = rf"true {re.escape(true_name)} → predicted {re.escape(pred_name)}"
    if errors[:1] != [(t, p)]:  # the page starts on its first error cell (or all images), not on this one
        expect(cell_box).not_to_have_value(re.compile(rf"^{own}"))
    points.nth(t * n + p).click(force=True)  # point k is the cell (true k // n, predicted k % n)
    settle(page)
    expect(cell_box).to_have_value(re.compile(rf"^{own} \({len(cell)}\)$"))
    expect(page.get_by_text(re.compile(rf"^{own} \({len(cell)}\): the \d+ with"))).to_be_visible()
    gallery = page.locator('[data-testid="stImage"]')
    assert gallery.count() >= 1
    screenshot(page, "1-cell-gallery")
    excluded = Path(cell["path"].iloc[0]).name  # the cell's highest-loss image
    box = page.locator(f".st-key-chk_cell_act_{t}_{p}_items").get_by_role("combobox")
    box.click()
    page.keyboard.type(excluded)
    page.keyboard.press("Enter")
    page.keyboard.press("Escape")
    settle(page)
    page.get_by_role("button", name="Add to corrections").first.click()
    settle(page)
    expect(page.get_by_role("heading", name="Corrections (1)")).to_be_visible()
    page.get_by_role("button", name="Write the corrected labels CSV").click()
    settle(page)
    expect(
        page.get_by_text(re.compile(r"It is now the data source of the Training setup page"))
    ).to_be_visible()
    screenshot(page, "2-corrections")
    written = sorted((app_home / "corrections").glob("*/labels.csv"))
    assert len(written) == 1
    table = pd.read_csv(written[0])
    assert excluded not in {Path(p).name for p in table["path"]}
    assert (app_home / "sample" / "labels.csv").read_bytes() == labels_before  # the source table is untouched

    go_to(page, "Training setup")
    expect(page.get_by_text(re.compile(r"^Data: CSV table .*corrections/.*/labels\.csv"))).to_be_visible()
    set_switch(page, "Start from ImageNet weights (pretrained)", on=False)
    set_switch(page, "Augment training images", on=False)
    for label, value in (
        ("Image size (pixels)", 32),
        ("Batch size", 16),
        ("Epochs", 1),
        ("Frozen epochs first", 0),
    ):
        set_number(page, label, value)
    go_to(page, "Training run")
    expect(
        page.get_by_text(re.compile(r"Settings: resnet18 \(from scratch\) on labels\.csv, 32 px .*, 1 epoch"))
    ).to_be_visible()
    new_id = start_training(page, app_home)
    expect(page.get_by_text(re.compile(r"^Finished \("))).to_be_visible(timeout=600_000)
    job = jobs.JobStore(app_home / "jobs.sqlite3").get(new_id)
    assert job.status == "done" and job.params["config"]["source"]["csv_path"] == str(written[0])
    trained_on = pd.read_csv(Path(job.run_dir) / "items.csv")
    assert len(trained_on) == len(table) == len(pd.read_csv(app_home / "sample" / "labels.csv")) - 1
    screenshot(page, "3-trained-on-corrected")
