"""Real-browser tests: the whole flow on the built-in sample, a refresh during training, cancelling a run.

They drive `streamlit run` in headless Chromium the way a user does (sidebar navigation, widgets,
buttons) and check what the page shows, plus the job database where the page claims a job exists.
"""

from __future__ import annotations

import csv
import io
import json
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from core.runs import jobs

try:
    from playwright.sync_api import expect
except ImportError:  # the conftest's fixtures skip the suite (or fail it in CI) with the reason
    expect = None
else:
    expect.set_options(timeout=30_000)  # a loaded 2-core machine redraws slowly
if TYPE_CHECKING:
    from playwright.sync_api import Page

STATUS = '[data-testid="stStatusWidget"]'
QUIET_MS = 1000
NAV = '[data-testid="stSidebarNav"] a'
PROGRESS = '[data-testid="stProgress"]'
GRID_CELLS = '[data-testid="stDataFrame"] [role="gridcell"]'  # the hidden accessible grid behind the canvas
RUN_HEADING = re.compile(r"^Run (\d{8}-\d{6}-\d+-[0-9a-f]+) \(train\)$")
TRAIN_TIMEOUT_MS = 420_000
PROGRESS_TIMEOUT_S = 180.0
# widget label -> (value, path of the field in the settings JSON; None: not a RunConfig field)
FAST = {
    "Image size (pixels)": (64, "data.img_size"),
    "Batch size": (16, "data.batch_size"),
    "Epochs": (2, "train.epochs"),
    "Frozen epochs first": (0, "train.freeze_epochs"),
    "LR finder steps": (20, None),  # 10 are too coarse for a plausible suggestion on every setting
}
LONG = {**FAST, "Epochs": (30, "train.epochs")}


# ---------------------------------------------------------------- helpers


def settle(page: Page, timeout_ms: int = 90_000, quiet_ms: int = QUIET_MS) -> None:
    """Wait until Streamlit's 'running' indicator has stayed away for quiet_ms (the rerun is over)."""
    # a rerun starts a moment after a widget change and a short one never shows the indicator at all
    status = page.locator(STATUS)
    deadline = time.monotonic() + timeout_ms / 1000
    idle_since: float | None = None
    while time.monotonic() < deadline:
        now = time.monotonic()
        if status.count():
            idle_since = None
        elif idle_since is None:
            idle_since = now
        elif now - idle_since >= quiet_ms / 1000:
            return
        page.wait_for_timeout(100)
    pytest.fail(f"the app was still running after {timeout_ms / 1000:.0f} s")


def open_app(page: Page, url: str) -> None:
    """Load the app; wait until the Dataset explorer has scanned the sample (it then carries that source)."""
    page.goto(url)
    expect(page.locator("h1", has_text="Dataset explorer")).to_be_visible(timeout=120_000)
    expect(page.locator('[data-testid="stMetric"]', has_text="Usable images")).to_be_visible(timeout=120_000)
    settle(page, 120_000)


def go_to(page: Page, title: str) -> None:
    """Open a page from the sidebar navigation (keeps the session, as a user's click does)."""
    page.locator(NAV, has_text=title).click()
    expect(page.locator("h1", has_text=title)).to_be_visible(timeout=90_000)
    settle(page)


def metric(page: Page, label: str) -> str:
    """The value shown by the st.metric with this label."""
    box = page.locator('[data-testid="stMetric"]', has_text=label)
    return box.locator('[data-testid="stMetricValue"]').inner_text().strip()


def set_number(page: Page, label: str, value: int) -> None:
    """Type a value into a number input, commit it with Enter and wait for the rerun."""
    box = page.get_by_label(label, exact=True)
    box.fill(str(value))
    box.press("Enter")
    settle(page)
    expect(box).to_have_value(str(value))


def set_switch(page: Page, label: str, on: bool) -> None:
    """Turn a toggle on or off by clicking its label, as a user does."""
    switch = page.get_by_role("switch", name=label)
    # a rerun that moved the widget shows the stale copy beside the new one until it ends: wait for one
    expect(switch).to_have_count(1, timeout=30_000)
    if switch.is_checked() != on:
        page.get_by_text(label, exact=True).click()
        settle(page)
    expect(switch).to_be_checked(checked=on)


def progress_text(page: Page) -> str:
    """The texts of all progress bars on the page ('Epoch 1 / 2 | Batch 3 / 12'), '' when none."""
    return " | ".join(t.strip() for t in page.locator(PROGRESS).all_inner_texts())


def position(text: str) -> tuple[int, int]:
    """(epoch, batch) from the progress text 'Epoch 2 / 30 | Batch 5 / 14' (training batches only)."""
    epoch, batch = re.search(r"Epoch (\d+) /", text), re.search(r"Batch (\d+) /", text)
    assert epoch and batch, text
    return int(epoch.group(1)), int(batch.group(1))


def wait_progress_change(page: Page, before: str, timeout_s: float = PROGRESS_TIMEOUT_S) -> str:
    """Poll the live panel (it refreshes every 2 s) until its progress text differs from `before`."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        now = progress_text(page)
        if now and now != before:
            return now
        page.wait_for_timeout(500)
    pytest.fail(f"training progress did not change from {before!r} in {timeout_s:.0f} s")


def wait_training_progress(page: Page, timeout_s: float = PROGRESS_TIMEOUT_S) -> str:
    """Wait until the live panel shows epoch and batch bars; return their text."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        text = progress_text(page)
        if re.search(r"Epoch \d+ / \d+", text) and re.search(r"Batch \d+ / \d+", text):
            return text
        page.wait_for_timeout(500)
    pytest.fail(f"no epoch/batch progress shown in {timeout_s:.0f} s (last: {progress_text(page)!r})")


def start_training(page: Page, home: Path, timeout_s: float = 90.0) -> str:
    """Press Start training; return the id of the NEW run the page then watches (not an older one shown)."""
    known = {j.id for j in store(home).list(limit=1000)}
    page.get_by_role("button", name="Start training").click()
    heading = page.get_by_text(RUN_HEADING)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        texts = [t.strip() for t in heading.all_inner_texts()]
        new = [m.group(1) for m in map(RUN_HEADING.match, texts) if m and m.group(1) not in known]
        if new:
            return new[0]
        page.wait_for_timeout(500)
    pytest.fail(f"no new run shown {timeout_s:.0f} s after Start training (known runs: {sorted(known)})")


def store(home: Path) -> jobs.JobStore:
    """The job database of the server under test."""
    return jobs.JobStore(home / "jobs.sqlite3")


def cancel_leftovers(home: Path, timeout_s: float = 60.0) -> None:
    """Cancel runs an earlier (failed) test left active, so a new run does not queue behind them."""
    db = store(home)
    for job in db.list(limit=1000):
        if job.active:
            db.cancel(job.id)
    deadline = time.monotonic() + timeout_s
    while any(j.active for j in db.list(limit=1000)) and time.monotonic() < deadline:
        time.sleep(1.0)


def pick_run(page: Page, label: str, job_id: str) -> None:
    """Choose `job_id` in the run picker (a selectbox) with this label, unless it is already chosen."""
    picker = page.get_by_role("combobox", name=label, exact=True)
    expect(picker).to_be_visible(timeout=120_000)
    if job_id in picker.input_value():
        return
    picker.click()
    page.get_by_role("option", name=re.compile(re.escape(job_id))).first.click()
    settle(page)
    expect(picker).to_have_value(re.compile(re.escape(job_id)))


def csv_rows(data: bytes) -> list[dict[str, str]]:
    """A downloaded CSV as a list of row dicts (BOM tolerated)."""
    return list(csv.DictReader(io.StringIO(data.decode("utf-8-sig"))))


def images_under(folder: Path) -> int:
    """How many PNG images lie under a folder (the sample's files)."""
    return sum(1 for _ in folder.rglob("*.png"))


# ---------------------------------------------------------------- flow steps


def explorer_step(page: Page, home: Path) -> None:
    """The explorer opens on a form of the built-in sample and shows its counts, as on disk."""
    source = page.get_by_role("combobox", name="Data source")
    expect(source).to_have_value(re.compile(r"^Built-in SYNTHETIC sample \((CSV \+ patient ids|folders)\)$"))
    folder = home / "sample" / "folder"
    assert sorted(p.name for p in folder.iterdir() if p.is_dir()) == ["clear", "opacity"]
    assert metric(page, "Usable images") == str(images_under(folder))
    assert metric(page, "Classes") == "2"
    assert metric(page, "Unusable files") == "0"
    with open(home / "sample" / "labels.csv", newline="", encoding="utf-8") as f:
        patients = {row["patient_id"] for row in csv.DictReader(f)}
    with_ids = "patient ids" in source.input_value()
    assert metric(page, "Patients") == (str(len(patients)) if with_ids else "0")
    expect(page.get_by_text("Samples", exact=True)).to_be_visible()


def downloaded_settings(page: Page) -> dict:
    """The settings the server holds, from the setup page's 'Download settings (JSON)' button."""
    with page.expect_download() as info:
        page.get_by_role("button", name="Download settings (JSON)").click()
    return json.loads(Path(info.value.path()).read_text(encoding="utf-8"))


def field(cfg: dict, dotted: str) -> object:
    """cfg["a"]["b"] for "a.b"."""
    for part in dotted.split("."):
        cfg = cfg[part]
    return cfg


def setup_step(page: Page, home: Path, numbers: dict[str, tuple[int, str | None]]) -> None:
    """Small, fast settings through the setup widgets (from scratch: no weights download offline), checked."""
    go_to(page, "Training setup")
    expect(page.get_by_text(re.compile(r"^Data: the built-in SYNTHETIC sample, "))).to_be_visible()
    set_switch(page, "Start from ImageNet weights (pretrained)", on=False)
    set_switch(page, "Augment training images", on=False)  # less CPU per batch on a 2-core machine
    for label, (value, _) in numbers.items():
        set_number(page, label, value)
    expect(page.get_by_text("Settings are valid and carried to the Training run page.")).to_be_visible()
    cfg = downloaded_settings(page)
    wanted = {path: value for value, path in numbers.values() if path}
    wanted.update({"train.pretrained": False, "data.aug.enabled": False, "train.arch": "resnet18"})
    got = {path: field(cfg, path) for path in wanted}
    assert got == wanted, f"the server holds other settings than the widgets show: {got} != {wanted}"
    where = Path(cfg["source"]["csv_path"] or cfg["source"]["root"])
    assert where.is_relative_to(home / "sample"), cfg["source"]


def lr_finder_step(page: Page) -> None:
    """Run the LR finder job; its curve and suggestion buttons appear; a suggestion fills the LR field."""
    page.get_by_role("button", name="Run the LR finder").click()
    use = page.get_by_role("button", name=re.compile(r"^Use (valley|slide|steep|minimum): "))
    expect(use.first).to_be_visible(timeout=300_000)
    expect(page.locator('[data-testid="stPlotlyChart"]').first).to_be_visible()
    settle(page)
    label = use.first.inner_text().strip()
    use.first.click()
    settle(page)
    lr_box = page.get_by_label(re.compile(r"^Learning rate \(blank"))
    expect(lr_box).to_have_value(re.compile(r"\d"))
    assert float(lr_box.input_value()) == pytest.approx(float(label.split(": ", 1)[1]), rel=0.05)
    lr_box.fill("")  # ten finder steps are too coarse to trust: train with the default rate
    lr_box.press("Enter")
    settle(page)
    expect(lr_box).to_have_value("")


def train_step(page: Page, home: Path, shot: Callable[[Page, str], Path]) -> str:
    """Start a run with the carried settings, see its progress move, wait until it finishes."""
    go_to(page, "Training run")
    carried = re.compile(r"Settings: resnet18 \(from scratch\) on \S+, 64 px .*batch 16, 2 epochs")
    expect(page.get_by_text(carried)).to_be_visible()
    job_id = start_training(page, home)
    job = store(home).get(job_id)
    assert job is not None and job.kind == "train"
    assert job.params["config"]["data"]["img_size"] == 64 and job.params["config"]["train"]["epochs"] == 2
    first = wait_training_progress(page)
    assert position(wait_progress_change(page, first)) > position(first)
    shot(page, "3-training")
    expect(page.get_by_text(re.compile(r"^Finished \("))).to_be_visible(timeout=TRAIN_TIMEOUT_MS)
    expect(page.get_by_text("Final metrics")).to_be_visible()
    assert store(home).get(job_id).status == "done"
    assert (Path(job.run_dir) / "metrics.json").is_file()
    return job_id


def evaluate_step(page: Page, job_id: str) -> None:
    """Evaluation page: the run is picked; threshold metrics, the metrics table and the figures show."""
    go_to(page, "Evaluation")
    pick_run(page, "Run", job_id)
    expect(page.get_by_text("In brackets: 95 % confidence intervals of")).to_be_visible(timeout=180_000)
    settle(page, 180_000)
    for name in ("Sensitivity", "Specificity"):
        assert 0.0 <= float(metric(page, name)) <= 1.0
    cells = page.locator(GRID_CELLS)
    for name in ("accuracy", "roc_auc"):
        expect(cells.filter(has_text=re.compile(rf"^{name}$")).first).to_be_attached()
    for tab in ("Confusion matrix", "ROC curve"):
        page.get_by_role("tab", name=tab).click()
        panel = page.get_by_role("tabpanel", name=tab)
        expect(panel.locator('[data-testid="stPlotlyChart"] .main-svg').first).to_be_visible()


def predict_step(page: Page, job_id: str, folder: Path) -> Path:
    """Predict page: predict a folder with the run's model and download the CSV; returns the CSV's path."""
    go_to(page, "Predict")
    pick_run(page, "Trained model (run)", job_id)
    page.get_by_text("A folder", exact=True).click()
    settle(page)
    box = page.get_by_role("textbox", name="Folder of images or DICOMs (searched recursively)")
    box.fill(str(folder))
    box.press("Enter")
    settle(page)
    page.get_by_role("button", name="Predict", exact=True).click()
    n = images_under(folder)
    expect(page.get_by_role("heading", name=f"Predictions ({n})")).to_be_visible(timeout=180_000)
    settle(page)
    with page.expect_download() as info:
        page.get_by_role("button", name="Download CSV").click()
    download = info.value
    assert download.suggested_filename == "predictions.csv"
    rows = csv_rows(Path(download.path()).read_bytes())
    probs = sorted(c for c in rows[0] if c.startswith("prob_") and c != "prob_pred")
    assert probs == ["prob_clear", "prob_opacity"], list(rows[0])
    assert len(rows) == n
    assert {r["pred"] for r in rows} <= {"clear", "opacity"}
    assert all(Path(r["path"]).is_relative_to(folder) for r in rows)
    assert all(abs(sum(float(r[c]) for c in probs) - 1) < 1e-3 for r in rows)
    return Path(download.path())


# ---------------------------------------------------------------- tests


class StepClock:
    """Wall time of each step of a flow, and of the whole flow."""

    def __init__(self) -> None:
        self.start = self.last = time.monotonic()
        self.steps: dict[str, float] = {}

    def lap(self, step: str) -> None:
        """Record the time since the previous lap under `step`."""
        now = time.monotonic()
        self.steps[step], self.last = now - self.last, now

    def report(self) -> str:
        """'total 123.4 s (explorer 10.0 s, ...)'."""
        parts = ", ".join(f"{k} {v:.1f} s" for k, v in self.steps.items())
        return f"{self.last - self.start:.1f} s wall time of the full browser flow ({parts})"


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_full_flow_on_sample(app_url: str, app_home: Path, page: Page, screenshot, artifacts: Path) -> None:
    """Explore -> setup -> LR finder -> train (watch progress) -> evaluate -> predict -> download CSV."""
    clock = StepClock()
    open_app(page, app_url)
    explorer_step(page, app_home)
    clock.lap("explorer")
    screenshot(page, "1-explorer")
    setup_step(page, app_home, FAST)
    clock.lap("setup")
    lr_finder_step(page)
    clock.lap("lr finder")
    screenshot(page, "2-setup")
    job_id = train_step(page, app_home, screenshot)
    clock.lap("training")
    screenshot(page, "4-trained")
    evaluate_step(page, job_id)
    clock.lap("evaluation")
    screenshot(page, "5-evaluate")
    predict_step(page, job_id, app_home / "sample" / "folder" / "opacity")
    clock.lap("predict + download")
    screenshot(page, "6-predict")
    (artifacts / "browser_flow_time.txt").write_text(clock.report() + "\n")
    print("\n" + clock.report())


@pytest.fixture(scope="module")
def long_run(page_factory, app_url: str, app_home: Path) -> Iterator[tuple[Page, str]]:
    """A page watching a long training run (30 epochs at 64 px) that it started; cancelled at the end."""
    cancel_leftovers(app_home)
    page = page_factory()
    open_app(page, app_url)
    setup_step(page, app_home, LONG)
    go_to(page, "Training run")
    expect(page.get_by_text(re.compile(r"from scratch.*, 30 epochs"))).to_be_visible()
    job_id = start_training(page, app_home)
    yield page, job_id
    db = store(app_home)
    job = db.get(job_id)
    if job is not None and job.active:
        db.cancel(job_id)
    page.context.close()


@pytest.mark.slow
@pytest.mark.timeout(420)
def test_refresh_during_training_reattaches(long_run: tuple[Page, str], screenshot) -> None:
    """A browser refresh while a run trains shows the same run again, still advancing."""
    page, job_id = long_run
    before = wait_training_progress(page)
    owner = re.search(r"[?&]owner=([0-9a-f]+)", page.url)
    assert owner, page.url
    screenshot(page, "1-before-refresh")
    page.reload()
    expect(page.get_by_text(f"Run {job_id} (train)", exact=True)).to_be_visible(timeout=120_000)
    assert f"owner={owner.group(1)}" in page.url
    expect(page.get_by_role("combobox", name="Watch run")).to_have_value(re.compile(re.escape(job_id)))
    after = wait_training_progress(page)
    assert position(after) >= position(before), (before, after)  # the same run, not a new one from zero
    assert position(wait_progress_change(page, after)) > position(after)
    screenshot(page, "2-after-refresh")


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_cancel_stops_the_run(long_run: tuple[Page, str], app_home: Path, screenshot) -> None:
    """Cancel run on a training run ends it as 'cancelled' and the page says so."""
    page, job_id = long_run
    expect(page.get_by_text(f"Run {job_id} (train)", exact=True)).to_be_visible(timeout=120_000)
    page.get_by_role("button", name="Cancel run").click()
    expect(page.get_by_text(re.compile(r"^The run was cancelled"))).to_be_visible(timeout=120_000)
    expect(page.get_by_role("button", name="Cancel run")).to_have_count(0)
    assert store(app_home).get(job_id).status == "cancelled"
    expect(page.locator(GRID_CELLS, has_text=re.compile(r"^cancelled$")).first).to_be_attached()
    screenshot(page, "1-cancelled")
