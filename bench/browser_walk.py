"""The browser app walked as a lab student would, on the real data in ../shared/data (issue 28's 'done when').

Starts `streamlit run` servers (local; hosted with two users made by `python -m core users add`) in scratch app
homes, drives them in headless Chromium and saves one screenshot per view in test-artifacts/walk/. Each step
prints PASS / FAIL with its time, its traceback if it raised, and every exception or error box on the page
(warnings are printed as notes). Not collected by pytest: it needs ../shared/data and takes minutes.

    OMP_NUM_THREADS=1 .venv/bin/python bench/browser_walk.py                # every part
    .venv/bin/python bench/browser_walk.py --parts chest,dicom               # some parts
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.browser.conftest import CHROMIUM_ARGS, chromium_path, free_port, serve  # noqa: E402
from tests.browser.test_flow import (  # noqa: E402
    GRID_CELLS,
    expect,
    go_to,
    pick_run,
    set_number,
    set_switch,
    settle,
    start_training,
    store,
)
from tests.browser.test_state import choose  # noqa: E402
from tests.browser.test_sweep_flow import fill, wait_text  # noqa: E402

DATA = (REPO / ".." / "shared" / "data").resolve()
CHEST, KNEE, DICOMS = DATA / "chest_xray_224", DATA / "knee_kl_oai224", DATA / "dicom_samples"
OUT = REPO / "test-artifacts" / "walk"
VIEWPORT = {"width": 1280, "height": 900}
PARTS = ("chest", "knee", "dicom", "hosted")  # and "sweep-view": the last sweep of --home, seen again
TRAIN_S = 2400  # a 3-fold run takes 15-25 min on a loaded 2-core machine
ERRORS = '[data-testid="stException"], [data-testid="stAlertContentError"]'
NOTES = '[data-testid="stAlertContentWarning"]'
FRESH = '[data-testid="stElementContainer"][data-stale="false"] '


class Walk:
    """Runs steps, screenshots each, prints pass / fail with what went wrong; counts failures."""

    def __init__(self, out: Path, first: int = 1, until: str = "") -> None:
        self.out, self.n, self.failed, self.until, self.stopped = out, first - 1, [], until, False
        self.first = first

    def step(self, page: Any, name: str, fn: Callable[[], Any], expected: tuple[str, ...] = ()) -> Any:
        """Run fn; screenshot `page` as NN-name.png; PASS when it raised nothing and no unexpected error shows."""
        if self.stopped:  # past --until: the remaining steps are skipped
            return None
        self.stopped = name == self.until
        self.n += 1
        start, value, trace = time.monotonic(), None, ""
        try:
            value = fn()
        except BaseException as err:  # noqa: BLE001 - pytest.fail raises an OutcomeException
            if isinstance(err, KeyboardInterrupt):
                raise
            trace = "".join(traceback.format_exception(err, limit=-4))
        shot = self.out / f"{self.n:02d}-{name}.png"
        try:
            page.screenshot(path=str(shot))
        except Exception as err:  # noqa: BLE001 - a dead page still gets its step reported
            trace += f"\n(no screenshot: {err})"
        errors, notes = page_texts(page, ERRORS), page_texts(page, NOTES)
        bad = [e for e in errors if not any(re.search(p, e) for p in expected)]
        ok = not trace and not bad
        print(
            f"[{'PASS' if ok else 'FAIL'}] {self.n:02d} {name} ({time.monotonic() - start:.0f} s) -> {shot.name}"
        )
        for text in bad:
            print(f"    error on page: {text}")
        for text in notes:
            print(f"    note on page: {text}")
        if trace:
            print("    " + trace.strip().replace("\n", "\n    "))
        if not ok:
            self.failed.append(name)
        return value


def page_texts(page: Any, selector: str) -> list[str]:
    """The texts of the current (not stale) elements matching selector, one line each, at most 300 characters."""
    try:
        texts = page.locator(selector).all_inner_texts()
    except Exception:  # noqa: BLE001 - a closed page has no texts
        return []
    return [" ".join(t.split())[:300] for t in texts if t.strip()]


# ---------------------------------------------------------------- servers


def add_users(home: Path, names: tuple[str, ...]) -> None:
    """Accounts for the hosted server, through the product's own command (password = name + "-password")."""
    env = {**os.environ, "XRT_HOME": str(home)}
    for name in names:
        subprocess.run(
            [sys.executable, "-m", "core", "users", "add", name, "--password-stdin"],
            input=f"{name}-password\n",
            text=True,
            check=True,
            cwd=REPO,
            env=env,
            capture_output=True,
        )


@contextmanager
def server(home: Path, hosted: bool) -> Iterator[str]:
    """A `streamlit run` on a free port with its own app home (hosted: two users, data roots = ../shared/data)."""
    env = {**os.environ, "XRT_HOME": str(home), "XRT_MAX_JOBS": "1", "PYTHONUNBUFFERED": "1"}
    for name in ("XRT_HOSTED", "XRT_CACHE_DIR", "XRT_PASSWORD", "XRT_DATA_ROOTS"):
        env.pop(name, None)
    if hosted:
        add_users(home, ("alice", "bob"))
        env.update({"XRT_HOSTED": "1", "XRT_DATA_ROOTS": str(DATA)})
    with serve(env, home, free_port()) as url:
        yield url


def new_page(browser: Any) -> Any:
    """A page in a fresh browser context (own cookies) of the walk's viewport."""
    context = browser.new_context(viewport=VIEWPORT, accept_downloads=True)
    context.set_default_timeout(60_000)
    return context.new_page()


def show(page: Any, locator: Any) -> None:
    """Scroll the element to the top of the viewport (so the screenshot shows it and what follows)."""
    locator.first.scroll_into_view_if_needed()
    locator.first.evaluate("e => e.scrollIntoView({block: 'start'})")
    page.wait_for_timeout(300)


def heading(page: Any, text: str) -> Any:
    """A heading (h1-h3) containing text."""
    return page.locator("h1, h2, h3", has_text=text)


def usable(page: Any, n: int, timeout_ms: int = 180_000) -> None:
    """Wait until the explorer's 'Usable images' metric shows n."""
    box = page.locator(FRESH + '[data-testid="stMetric"]', has_text="Usable images")
    expect(box.locator('[data-testid="stMetricValue"]').first).to_have_text(str(n), timeout=timeout_ms)
    settle(page, 180_000)


# ---------------------------------------------------------------- explorer and setup


def open_app(page: Any, url: str) -> None:
    """Load the app on the explorer and let it settle."""
    page.goto(url)
    expect(page.locator("h1", has_text="Dataset explorer")).to_be_visible(timeout=180_000)
    settle(page, 180_000)


def local_csv(page: Any, csv: Path, label_col: str) -> None:
    """Explorer: a CSV with paths, labels and patient ids (local: typed paths)."""
    choose(page, "Data source", "A CSV of file names and labels")
    fill(page, "CSV file", str(csv))
    fill(page, "Label column", label_col)
    fill(page, "Patient column (optional)", "patient_id")


def run_checks(page: Any) -> None:
    """Explorer: run the data checks and show their result."""
    show(page, heading(page, "Checks of the data"))
    page.get_by_role("button", name="Run the checks").click()
    verdict = page.get_by_text(re.compile(r"^(Possible shortcut|No shortcut found|The shortcut check)"))
    expect(verdict.first).to_be_visible(timeout=300_000)
    expect(page.locator('[data-testid="stMetric"]', has_text="Duplicate pairs")).to_be_visible(
        timeout=300_000
    )
    settle(page, 300_000)
    show(page, heading(page, "Checks of the data"))


def small_setup(page: Any, epochs: int, kfold: int = 0, task: str = "") -> None:
    """Setup: from scratch, no augmentation, 32 px, batch 32, few epochs (and k-fold / task type when asked)."""
    go_to(page, "Training setup")
    if task:
        choose(page, "Task type", task)
    set_switch(page, "Start from ImageNet weights (pretrained)", on=False)
    set_switch(page, "Augment training images", on=False)
    for label, value in (("Image size (pixels)", 32), ("Batch size", 32), ("Epochs", epochs)):
        set_number(page, label, value)
    with_folds = page.get_by_role("switch", name="k-fold cross-validation")
    if bool(kfold) != with_folds.is_checked():
        page.get_by_text("k-fold cross-validation", exact=True).click()
        settle(page)
    if kfold:
        set_number(page, "k (folds)", kfold)
    settle(page)
    expect(page.get_by_text("Settings are valid and carried to the Training run page.")).to_be_visible()


def lr_finder(page: Any) -> None:
    """Setup: the LR finder with 20 steps; a suggestion or a 'too flat' verdict shows."""
    set_number(page, "LR finder steps", 20)
    page.get_by_role("button", name="Run the LR finder").click()
    done = page.get_by_role("button", name=re.compile(r"^Use (valley|slide|steep|minimum): ")).or_(
        page.get_by_text(re.compile(r"too flat|too noisy|no suggestion", re.I))
    )
    expect(done.first).to_be_visible(timeout=TRAIN_S * 1000)
    settle(page)
    show(page, page.get_by_role("button", name="Run the LR finder"))


def train(page: Any, home: Path) -> str:
    """Training run: start, watch progress, wait until it finishes; the run's id."""
    go_to(page, "Training run")
    job_id = start_training(page, home, timeout_s=180)
    expect(page.locator('[data-testid="stProgress"]').first).to_be_visible(timeout=180_000)
    return job_id


def finished(page: Any, home: Path, job_id: str) -> None:
    """Wait until the watched run ends; it must end done."""
    expect(page.get_by_text(re.compile(r"^Finished \("))).to_be_visible(timeout=TRAIN_S * 1000)
    settle(page)
    job = store(home).get(job_id)
    assert job is not None and job.status == "done", job and (job.status, job.error)
    show(page, page.get_by_text(re.compile(r"^Finished \(")))


# ---------------------------------------------------------------- evaluation, predict, experiments


def evaluation(page: Any, job_id: str) -> None:
    """Evaluation: the run picked, its headline, threshold and metrics shown."""
    go_to(page, "Evaluation")
    pick_run(page, "Run", job_id)
    expect(page.get_by_text("In brackets: 95 % confidence intervals of")).to_be_visible(timeout=300_000)
    settle(page, 300_000)


def threshold_tab(page: Any) -> None:
    """Evaluation: '90 % sensitivity', then the Threshold tab's chart."""
    page.get_by_role("button", name="90 % sensitivity").click()
    settle(page)
    tab = page.get_by_role("tab", name="Threshold")
    tab.click()
    expect(page.get_by_role("tabpanel", name="Threshold").locator(".main-svg").first).to_be_visible()
    settle(page)
    show(page, page.get_by_role("tablist").first)


def per_class(page: Any) -> None:
    """Evaluation: the per-class table."""
    show(page, page.get_by_text("Per-class metrics", exact=True))


def suspects(page: Any) -> None:
    """Evaluation: suspect labels (shown, or withheld with the reason)."""
    show(page, heading(page, "Suspect labels"))
    expect(page.get_by_text(re.compile(r"look mislabelled|withheld|need a k-fold run")).first).to_be_visible()


def report(page: Any) -> None:
    """Evaluation: build the HTML report and download it."""
    show(page, heading(page, "Downloads"))
    page.get_by_role("button", name="Build the report (HTML)").click()
    button = page.get_by_role("button", name="Download report (HTML)")
    expect(button).to_be_visible(timeout=900_000)  # every figure of every set: minutes on a loaded machine
    with page.expect_download() as info:
        button.click()
    html = Path(info.value.path()).read_text(encoding="utf-8")
    assert "<html" in html.lower() and len(html) > 10_000, len(html)
    show(page, heading(page, "Downloads"))


def predict_folder(page: Any, job_id: str, folder: Path) -> None:
    """Predict: a folder of images with the run's model."""
    go_to(page, "Predict")
    pick_run(page, "Trained model (run)", job_id)
    page.get_by_text(re.compile(r"^A folder|data folder"), exact=False).first.click()
    settle(page)
    fill(page, "Folder of images or DICOMs (searched recursively)", str(folder))
    page.get_by_role("button", name="Predict", exact=True).click()
    expect(page.get_by_role("heading", name=re.compile(r"^Predictions \(\d+\)"))).to_be_visible(
        timeout=300_000
    )
    settle(page)
    show(page, page.get_by_role("heading", name=re.compile(r"^Predictions \(")))


def predict_upload(page: Any, job_id: str, files: list[Path]) -> None:
    """Predict: uploaded files (a DICOM among them); each named by its file name, with a Grad-CAM."""
    if page.locator("h1", has_text="Predict").count() == 0:
        go_to(page, "Predict")
        pick_run(page, "Trained model (run)", job_id)
    page.get_by_text(re.compile(r"^Upload")).first.click()
    settle(page)
    page.locator('[data-testid="stFileUploaderDropzoneInput"]').set_input_files([str(f) for f in files])
    settle(page)
    page.get_by_role("button", name="Predict", exact=True).click()
    expect(page.get_by_role("heading", name=f"Predictions ({len(files)})")).to_be_visible(timeout=300_000)
    settle(page, 180_000)
    for f in files:
        assert page.locator(GRID_CELLS, has_text=f.name).count(), f"{f.name} is not named by its file name"
    show(page, heading(page, "Image and Grad-CAM") if len(files) == 1 else heading(page, "Predictions ("))


def sweep(page: Any, home: Path) -> None:
    """Experiments: a 2-trial grid over the training fraction; wait until both trials end."""
    go_to(page, "Training setup")
    set_switch(page, "k-fold cross-validation", on=False)  # single runs: quicker trials
    page.wait_for_timeout(3000)  # a loaded machine may start the toggle's rerun late: let it land first
    settle(page)
    set_number(page, "Epochs", 1)
    page.get_by_label("Image size (pixels)", exact=True).click()  # leave the field: its value is committed
    settle(page)
    go_to(page, "Experiments")
    expect(
        page.get_by_text(re.compile(r"32 px, 1 epoch; only the settings chosen here vary"))
    ).to_be_visible()
    page.get_by_role("combobox", name="Settings to sweep").click()
    page.get_by_role("option", name=re.compile(r"^train_fraction")).click()
    page.keyboard.press("Escape")
    settle(page)
    fill(page, "Values of lr", "3e-3")
    fill(page, "Values of train_fraction", "0.5,1.0")
    expect(page.get_by_text("2 trial(s)", exact=False)).to_be_visible()
    page.get_by_role("button", name="Start sweep").click()
    wait_text(page, r"Status: (queued|running)", 120)
    wait_text(page, r"Status: (done|failed|cancelled)", TRAIN_S)
    settle(page)
    show(page, heading(page, "Experiment sweep"))


def sweep_view(page: Any, url: str) -> None:
    """Experiments: the newest sweep of the app home, compared (a rerun of the view after a walk)."""
    open_app(page, url)
    go_to(page, "Experiments")
    wait_text(page, r"Status: (done|failed|cancelled)", 120)
    settle(page)
    show(page, heading(page, "Experiment sweep"))


# ---------------------------------------------------------------- the parts


def chest_part(walk: Walk, page: Any, url: str, home: Path, job_id: str = "") -> None:
    """Chest X-rays with patient ids: explore, check, set up a 3-fold run, train, evaluate, predict, sweep.

    With job_id (a run in the app home already) the walk goes on from watching that run."""
    if job_id:
        walk.step(
            page,
            "chest-watch",
            lambda: (open_app(page, url), go_to(page, "Training run"), pick_run(page, "Watch run", job_id)),
        )
    else:
        walk.step(
            page,
            "chest-explorer",
            lambda: (open_app(page, url), local_csv(page, CHEST / "labels.csv", "label"), usable(page, 600)),
        )
        walk.step(page, "chest-data-checks", lambda: run_checks(page))
        walk.step(page, "chest-setup", lambda: small_setup(page, epochs=3, kfold=3))
        walk.step(page, "chest-lr-finder", lambda: lr_finder(page))
        job_id = walk.step(page, "chest-training", lambda: train(page, home))
    if not job_id:
        return
    walk.step(page, "chest-finished", lambda: finished(page, home, job_id))
    walk.step(page, "chest-evaluation", lambda: evaluation(page, job_id))
    walk.step(page, "chest-threshold-tab", lambda: threshold_tab(page))
    walk.step(page, "chest-per-class", lambda: per_class(page))
    walk.step(page, "chest-suspect-labels", lambda: suspects(page))
    walk.step(page, "chest-report", lambda: report(page))
    walk.step(page, "chest-predict-folder", lambda: predict_folder(page, job_id, CHEST / "train" / "NORMAL"))
    walk.step(
        page, "chest-predict-dicom", lambda: predict_upload(page, job_id, [DICOMS / "dx_chest_nih_mono2.dcm"])
    )
    walk.step(page, "chest-sweep", lambda: sweep(page, home))


def knee_part(walk: Walk, page: Any, url: str, home: Path) -> None:
    """Knee KL grades as an ordinal task: explore the grades, train, evaluate."""
    walk.step(
        page,
        "knee-explorer",
        lambda: (
            open_app(page, url),
            local_csv(page, KNEE / "labels.csv", "kl_grade"),
            usable(page, 218),
            show(page, heading(page, "Grades (ordinal)")),
        ),
    )
    walk.step(
        page, "knee-setup", lambda: small_setup(page, epochs=3, task="Ordinal (ordered grades, e.g. KL 0-4)")
    )
    job_id = walk.step(page, "knee-training", lambda: train(page, home))
    if not job_id:
        return
    walk.step(page, "knee-finished", lambda: finished(page, home, job_id))

    def ordinal_eval() -> None:
        go_to(page, "Evaluation")
        pick_run(page, "Run", job_id)
        expect(page.get_by_text(re.compile(r"^Task: ordinal grades"))).to_be_visible(timeout=300_000)
        settle(page, 300_000)

    walk.step(page, "knee-evaluation", ordinal_eval)


def dicom_part(walk: Walk, page: Any, url: str) -> None:
    """The DICOM samples: labels from the Modality tag, each broken file with its reason, the window panel."""

    def explore() -> None:
        open_app(page, url)
        choose(page, "Data source", "A folder of DICOM files")
        fill(page, "Folder", str(DICOMS))
        page.get_by_text("A DICOM header tag", exact=True).click()
        settle(page)
        fill(page, "Label from the DICOM tag (keyword, e.g. BodyPartExamined, ViewPosition)", "Modality")
        fill(page, "Group by DICOM tag (e.g. PatientID)", "PatientID")
        usable(page, 3)

    walk.step(page, "dicom-explorer", explore)
    walk.step(page, "dicom-unusable-files", lambda: show(page, heading(page, "Files that cannot be used")))
    walk.step(
        page,
        "dicom-window-headers",
        lambda: show(page, page.get_by_role("combobox", name="File", exact=True)),
    )


def sign_in(page: Any, url: str, name: str) -> None:
    """The hosted sign-in with the user's own password; lands on the explorer."""
    page.goto(url)
    expect(page.locator("h1", has_text="Sign in")).to_be_visible(timeout=180_000)
    settle(page, 120_000)
    page.get_by_label(re.compile(r"^Your user name")).fill(name)
    page.get_by_label("Password", exact=True).fill(f"{name}-password")
    page.get_by_role("button", name="Sign in").click()
    expect(page.locator("h1", has_text="Dataset explorer")).to_be_visible(timeout=180_000)
    settle(page, 180_000)
    expect(page.get_by_text(re.compile(rf"signed in as {name}", re.I)).first).to_be_visible()


def hosted_csv(page: Any, csv: Path) -> None:
    """Hosted explorer: the chest CSV among the configured data folders, with its patient column."""
    choose(page, "Data source", "A CSV in a configured data folder or your uploads")
    choose(page, "CSV file", str(csv))
    fill(page, "Patient column (optional)", "patient_id")
    usable(page, 600)


def upload(page: Any, files: list[Path]) -> None:
    """Hosted explorer: upload a few images as a dataset of the signed-in user."""
    choose(page, "Data source", "Upload images or a zip (private to alice)")
    page.locator('[data-testid="stFileUploaderDropzoneInput"]').set_input_files([str(f) for f in files])
    settle(page)
    fill(page, "Class of the loose images (zips take classes from their folders)", "knee")
    fill(page, "Dataset name", "alice-knees")
    page.get_by_role("button", name="Add to my uploads").click()
    expect(page.get_by_text(re.compile(r"^Saved to your dataset 'alice-knees'"))).to_be_visible(
        timeout=120_000
    )
    settle(page)


def bob_sees_nothing(page: Any, url: str, alice_job: str) -> None:
    """Bob: no runs of alice's on Training run and Evaluation."""
    sign_in(page, url, "bob")
    go_to(page, "Training run")
    expect(page.get_by_text(re.compile(r"^No runs yet"))).to_be_visible()
    assert page.get_by_text(alice_job).count() == 0
    go_to(page, "Evaluation")
    assert page.get_by_text(alice_job).count() == 0


def bob_no_uploads(page: Any) -> None:
    """Bob: alice's upload is neither his upload dataset nor in his folder picker."""
    go_to(page, "Dataset explorer")
    choose(page, "Data source", "Upload images or a zip (private to bob)")
    expect(page.get_by_role("combobox", name="Uploaded dataset")).to_have_count(0)
    choose(page, "Data source", "A configured data folder or your uploads (one sub-folder per class)")
    page.get_by_role("combobox", name="Folder", exact=True).click()
    assert page.get_by_role("option", name=re.compile("alice-knees")).count() == 0
    page.keyboard.press("Escape")
    settle(page)


def bob_settings(page: Any) -> None:
    """Bob: the setup page has the defaults, not alice's 32 px."""
    go_to(page, "Training setup")
    assert page.get_by_label("Image size (pixels)", exact=True).input_value() != "32"


def hosted_part(walk: Walk, browser: Any, url: str, home: Path) -> None:
    """Hosted with two users: alice uploads and trains; bob sees none of her runs, uploads or settings."""
    alice = new_page(browser)
    walk.step(
        alice,
        "hosted-alice-explorer",
        lambda: (sign_in(alice, url, "alice"), hosted_csv(alice, CHEST / "labels.csv")),
    )
    knees = sorted((KNEE / "images" / "0").glob("*.png"))[:3]
    walk.step(alice, "hosted-alice-upload", lambda: upload(alice, knees))
    walk.step(
        alice,
        "hosted-alice-setup",
        lambda: (
            go_to(alice, "Dataset explorer"),
            hosted_csv(alice, CHEST / "labels.csv"),
            small_setup(alice, epochs=1),
        ),
    )
    job_id = walk.step(alice, "hosted-alice-training", lambda: train(alice, home))
    if job_id:
        walk.step(alice, "hosted-alice-finished", lambda: finished(alice, home, job_id))
    bob = new_page(browser)
    walk.step(bob, "hosted-bob-no-runs", lambda: bob_sees_nothing(bob, url, job_id or "no-such-job"))
    walk.step(bob, "hosted-bob-no-uploads", lambda: bob_no_uploads(bob))
    walk.step(bob, "hosted-bob-own-settings", lambda: bob_settings(bob))
    if job_id:
        walk.step(
            alice,
            "hosted-alice-predict-upload",
            lambda: predict_upload(
                alice,
                job_id,
                [*sorted((CHEST / "train" / "PNEUMONIA").glob("*"))[:3], DICOMS / "dx_chest_nih_mono2.dcm"],
            ),
        )


# ---------------------------------------------------------------- main


def main() -> int:
    """Run the chosen parts; exit 1 when a step failed."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated, of {', '.join(PARTS)}")
    parser.add_argument("--out", type=Path, default=OUT, help="screenshot folder")
    parser.add_argument("--until", default="", help="stop after the step of this name (e.g. chest-setup)")
    parser.add_argument("--home", type=Path, help="the local server's app home (default: a scratch folder)")
    parser.add_argument(
        "--run", default="", help="a finished or running chest run in --home: watched, not trained"
    )
    parser.add_argument(
        "--first", type=int, default=1, help="number of the first screenshot (a rerun of a part)"
    )
    args = parser.parse_args()
    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    if not DATA.is_dir() or chromium_path() is None:
        print(f"needs {DATA} and Chromium ({chromium_path()})")
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    walk = Walk(args.out, args.first, args.until)
    from playwright.sync_api import sync_playwright

    start = time.monotonic()
    with sync_playwright() as pw, tempfile.TemporaryDirectory(prefix="walk-") as scratch:
        browser = pw.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS)
        local = [p for p in parts if p != "hosted"]
        if (
            local
        ):  # --home: an earlier walk's app home (its runs), so a rerun need not train the chest run again
            home = Path(args.home) if args.home else Path(scratch) / "local"
            home.mkdir(exist_ok=True)
            with server(home, hosted=False) as url:
                page = new_page(browser)
                for part in local:
                    {
                        "chest": lambda: chest_part(walk, page, url, home, args.run),
                        "knee": lambda: knee_part(walk, page, url, home),
                        "dicom": lambda: dicom_part(walk, page, url),
                        "sweep-view": lambda: walk.step(page, "chest-sweep", lambda: sweep_view(page, url)),
                    }[part]()
        if "hosted" in parts:
            home = Path(scratch) / "hosted"
            home.mkdir()
            with server(home, hosted=True) as url:
                hosted_part(walk, browser, url, home)
        browser.close()
    print(
        f"{walk.n - walk.first + 1} steps, {len(walk.failed)} failed ({', '.join(walk.failed) or 'none'}) in {time.monotonic() - start:.0f} s"
    )
    return 1 if walk.failed else 0


if __name__ == "__main__":
    sys.exit(main())
