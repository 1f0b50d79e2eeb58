"""Real-browser tests of the two other task types: multi-label findings and ordinal grades, each walked the way a user
does on its synthetic sample (core.data.sample_tasks, what `python -m core sample --task ...` writes): explorer ->
setup (task type chosen) -> train (one epoch, 32 px) -> evaluate (the task's metrics, top losses, a clicked cell) ->
report -> predict (per-finding probabilities / predicted and expected grade).

Every assertion is about what the page shows for any model the tiny run yields (column names, headings, a cell
picked by a click), never about what the model learned.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from core.data import sample_tasks
from tests.browser.test_flow import (
    GRID_CELLS,
    csv_rows,
    expect,
    go_to,
    open_app,
    pick_run,
    set_number,
    set_switch,
    settle,
    start_training,
    store,
)

N_IMAGES, SIZE = 48, 32  # a small sample: the flow checks the pages, not the model
TINY = (("Image size (pixels)", 32), ("Batch size", 16), ("Epochs", 1), ("Frozen epochs first", 0))
TASK_LABELS = {
    "multilabel": "Multi-label (any number of findings per image)",
    "ordinal": "Ordinal (ordered grades, e.g. KL 0-4)",
}
EXCEPTION = '[data-testid="stException"]'


@pytest.fixture(scope="module")
def task_samples(app_home: Path) -> dict[str, Path]:
    """The SYNTHETIC multi-label and ordinal samples, small, under the server's app home."""
    return {
        "multilabel": sample_tasks.ensure_multilabel_sample(app_home / "task_ml", n=N_IMAGES, size=SIZE),
        "ordinal": sample_tasks.ensure_ordinal_sample(app_home / "task_od", n=N_IMAGES, size=SIZE),
    }


def no_traceback(page) -> None:
    """No exception box anywhere on the page."""
    expect(page.locator(EXCEPTION)).to_have_count(0)


def fill(page, label: str, value: str) -> None:
    """Type into a text input and commit it with Enter."""
    box = page.get_by_role("textbox", name=label, exact=True)
    box.fill(value)
    box.press("Enter")
    settle(page)


def choose(page, label: str, option: str) -> None:
    """Pick an option of a selectbox by its shown text."""
    box = page.get_by_role("combobox", name=label, exact=True)
    box.click()
    page.get_by_role("option", name=option, exact=True).click()
    settle(page)
    expect(box).to_have_value(option)


def explorer_step(page, csv: Path, label_col: str, multilabel: bool) -> None:
    """The explorer reads the task sample's CSV: findings with their co-occurrence, or the grade histogram."""
    choose(page, "Data source", "A CSV of file names and labels")
    fill(page, "CSV file", str(csv))
    fill(page, "Label column", label_col)
    fill(page, "Patient column (optional)", sample_tasks.GROUP_COLUMN)
    if multilabel:
        fill(page, "Findings split on (e.g. | or ;)", "|")
        expect(page.get_by_role("heading", name="Findings (multi-label)")).to_be_visible(timeout=120_000)
    else:
        expect(page.get_by_role("heading", name="Grades (ordinal)")).to_be_visible(timeout=120_000)
    no_traceback(page)


def setup_step(page, task: str) -> None:
    """The task type and tiny settings through the setup widgets."""
    go_to(page, "Training setup")
    choose(page, "Task type", TASK_LABELS[task])
    set_switch(page, "Start from ImageNet weights (pretrained)", on=False)
    set_switch(page, "Augment training images", on=False)
    for label, value in TINY:
        set_number(page, label, value)
    expect(page.get_by_text("Settings are valid and carried to the Training run page.")).to_be_visible()
    no_traceback(page)


def train_step(page, home: Path, task: str, csv: Path) -> str:
    """Start the run with the carried settings (the task's among them) and wait until the page says it finished."""
    go_to(page, "Training run")
    carried = rf"Settings: resnet18 \(from scratch\) on {re.escape(csv.name)}, 32 px .*, 1 epochs?"
    expect(page.get_by_text(re.compile(carried))).to_be_visible()
    job_id = start_training(page, home)
    assert store(home).get(job_id).params["config"]["data"]["task"]["type"] == task
    expect(page.get_by_text(re.compile(r"^Finished \("))).to_be_visible(timeout=600_000)
    assert store(home).get(job_id).status == "done"
    no_traceback(page)
    return job_id


def evaluate_step(page, job_id: str, task_words: str, rows: tuple[str, ...]) -> None:
    """The Evaluation page shows the run as its task, with these rows in its tables, and top losses."""
    go_to(page, "Evaluation")
    pick_run(page, "Run", job_id)
    expect(page.get_by_text(re.compile(rf"^Task: {task_words}"))).to_be_visible(timeout=180_000)
    settle(page, 180_000)
    cells = page.locator(GRID_CELLS)
    for text in rows:
        expect(cells.filter(has_text=re.compile(rf"^{re.escape(text)}$")).first).to_be_attached()
    expect(page.get_by_role("heading", name=re.compile(r"^Top losses"))).to_be_visible()


def click_cell(page, chart_key: str, n: int, t: int, p: int) -> None:
    """Click the (true t, predicted p) point of a clickable confusion matrix with n classes."""
    chart = page.locator(f".st-key-{chart_key}")
    chart.scroll_into_view_if_needed()
    points = chart.locator(".scatterlayer .point")
    expect(points).to_have_count(n * n)
    points.nth(t * n + p).click(force=True)
    settle(page)


def report_step(page, words: tuple[str, ...]) -> None:
    """Build the report and download it: it holds the task's metrics and its top losses."""
    page.get_by_role("button", name="Build the report (HTML)").click()
    settle(page, 180_000)
    with page.expect_download() as info:
        page.get_by_role("button", name="Download report (HTML)").click()
    text = Path(info.value.path()).read_text(encoding="utf-8")
    for word in (*words, "Top losses"):
        assert word in text, word


def predict_step(page, job_id: str, folder: Path) -> list[dict[str, str]]:
    """Predict the sample's images with the run's model; the downloaded CSV's rows."""
    go_to(page, "Predict")
    pick_run(page, "Trained model (run)", job_id)
    page.get_by_text("A folder", exact=True).click()
    settle(page)
    fill(page, "Folder of images or DICOMs (searched recursively)", str(folder))
    page.get_by_role("button", name="Predict", exact=True).click()
    expect(page.get_by_role("heading", name=f"Predictions ({N_IMAGES})")).to_be_visible(timeout=180_000)
    settle(page)
    no_traceback(page)
    with page.expect_download() as info:
        page.get_by_role("button", name="Download CSV").click()
    rows = csv_rows(Path(info.value.path()).read_bytes())
    assert len(rows) == N_IMAGES
    return rows


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_multilabel_flow(app_url: str, app_home: Path, task_samples, page, screenshot) -> None:
    """Findings: explorer -> setup (multi-label) -> train -> per-finding metrics, a 2x2 cell -> report -> predict."""
    data = task_samples["multilabel"]
    open_app(page, app_url)
    csv = data / sample_tasks.FINDINGS_CSV
    explorer_step(page, csv, "Finding Labels", multilabel=True)
    screenshot(page, "1-explorer")
    setup_step(page, "multilabel")
    job_id = train_step(page, app_home, "multilabel", csv)
    evaluate_step(
        page, job_id, "multi-label findings", ("Macro ROC AUC", "Micro ROC AUC", *sample_tasks.FINDINGS)
    )
    click_cell(page, "tc_cm_ml", 2, 1, 1)  # the true-positive cell of the first finding
    expect(page.get_by_role("combobox", name="Cell", exact=True)).to_have_value(re.compile(r"^TP: present"))
    no_traceback(page)
    screenshot(page, "2-evaluate")
    report_step(page, ("Macro ROC AUC", "multi-label findings"))
    rows = predict_step(page, job_id, data / "images")
    for f in sample_tasks.FINDINGS:
        assert {f"prob_{f}", f"pred_{f}"} <= set(rows[0]), list(rows[0])
        assert all(0.0 <= float(r[f"prob_{f}"]) <= 1.0 and r[f"pred_{f}"] in ("0", "1") for r in rows)
    screenshot(page, "3-predict")


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_ordinal_flow(app_url: str, app_home: Path, task_samples, page, screenshot) -> None:
    """Grades: explorer -> setup (ordinal) -> train -> QWK / MAE, an ordered cell -> report -> predict."""
    data = task_samples["ordinal"]
    grades = list(sample_tasks.GRADES)
    open_app(page, app_url)
    csv = data / sample_tasks.GRADES_CSV
    explorer_step(page, csv, "grade", multilabel=False)
    screenshot(page, "1-explorer")
    setup_step(page, "ordinal")
    job_id = train_step(page, app_home, "ordinal", csv)
    metrics = ("Quadratic weighted kappa", "Mean absolute error (grades)", "Off-by-one accuracy", ">= KL2")
    evaluate_step(page, job_id, "ordinal grades", metrics)
    click_cell(page, "tc_cm_od", len(grades), 0, len(grades) - 1)
    expect(page.get_by_role("combobox", name="Cell", exact=True)).to_have_value(
        re.compile(r"^true KL0 → predicted KL4 \(\d+; 4 grade\(s\) off\)$")
    )
    no_traceback(page)
    screenshot(page, "2-evaluate")
    report_step(page, ("Quadratic weighted kappa",))
    rows = predict_step(page, job_id, data / "images")
    assert {"pred", "expected_grade", *(f"prob_{g}" for g in grades)} <= set(rows[0]), list(rows[0])
    assert all(r["pred"] in grades and 0.0 <= float(r["expected_grade"]) <= len(grades) - 1 for r in rows)
    assert all(abs(sum(float(r[f"prob_{g}"]) for g in grades) - 1) < 1e-3 for r in rows)
    screenshot(page, "3-predict")
