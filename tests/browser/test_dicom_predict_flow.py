"""Real-browser tests of issue 14's items 3, 5 and 6: a flat folder of DICOMs in the explorer (labels from a CSV or
a header tag, each broken file's real reason, previews of unlabelled files); Predict naming files as the user
knows them (never the server's upload folders); the Grad-CAM picker naming the file whose map is shown."""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.browser.test_flow import GRID_CELLS, expect, open_app, pick_run, settle
from tests.browser.test_state import choose
from tests.browser.test_sweep_flow import fill

if TYPE_CHECKING:
    from playwright.sync_api import Page

FRESH = '[data-testid="stElementContainer"][data-stale="false"] '  # not a stale copy a rerun in flight still shows
CAPTION = FRESH + '[data-testid="stImageCaption"]'
METRIC = FRESH + '[data-testid="stMetric"]'
CELLS = FRESH + GRID_CELLS
UNLABELLED = "not inside a class folder"
BROKEN = {  # file -> the start of the reason the explorer must show (the real problem, not "no class folder")
    "truncated.dcm": "truncated pixel data",
    "no_pixels.dcm": "DICOM has no image data",
    "notes.dcm": "not a DICOM file",
}


# ---------------------------------------------------------------- item 3: a flat folder of DICOMs


def flat_dicoms(folder: Path) -> Path:
    """Four small valid DICOMs (CHEST / HAND in BodyPartExamined) and three broken ones, with no class folders."""
    from tests.test_sources import dcm

    for i in range(4):
        dcm(folder / f"im{i}.dcm", patient=f"P{i}", body_part="CHEST" if i % 2 else "HAND")
    (folder / "truncated.dcm").write_bytes((folder / "im0.dcm").read_bytes()[:-60])
    dcm(folder / "no_pixels.dcm", pixels=False)
    (folder / "notes.dcm").write_text("not an image")
    return folder


def cell(page: Page, text: str):
    """The table cells (the data grid's accessible copy) whose whole text is `text`."""
    return page.locator(CELLS, has_text=re.compile(rf"^{re.escape(text)}$"))


def real_reasons_shown(page: Page, folder: Path, unlabelled: int = 0) -> None:
    """Each broken file's row says its own problem; only the good files are 'not inside a class folder'."""
    n = len(BROKEN) + unlabelled
    expect(page.get_by_role("heading", name=f"Files that cannot be used ({n})")).to_be_visible()
    for name, reason in BROKEN.items():
        expect(cell(page, str(folder / name))).to_have_count(1)
        expect(
            page.locator(CELLS, has_text=re.compile(rf"^(row \d+: )?{re.escape(reason)}")).first
        ).to_be_attached()
    expect(page.locator(CELLS, has_text=UNLABELLED)).to_have_count(unlabelled)


def metrics_are(page: Page, **values: str) -> None:
    """The headline metrics show these values (waits for the redraw): Usable_images="4" -> 'Usable images' 4."""
    for label, value in values.items():
        box = page.locator(METRIC, has_text=label.replace("_", " "))
        expect(box).to_have_count(1)
        expect(box.locator('[data-testid="stMetricValue"]')).to_have_text(value)


def labelled(page: Page, classes: list[str]) -> None:
    """The four good files are usable in these classes; the three broken ones are listed with their reasons."""
    metrics_are(page, Usable_images="4", Classes="2", Unusable_files="3")
    expect(page.get_by_role("combobox", name="Class", exact=True)).to_have_value(classes[0])
    expect(page.get_by_text(re.compile(rf"^2 image\(s\) in '{classes[0]}'$"))).to_be_visible()


@pytest.mark.timeout(300)
def test_flat_dicom_folder_labels_from_csv_or_tag(
    app_url: str, page: Page, screenshot, tmp_path: Path
) -> None:
    """Flat DICOM folder: unlabelled files previewed, broken files' real reasons, labels from a CSV, then a tag."""
    flat = flat_dicoms(tmp_path / "flat")
    table = tmp_path / "labels.csv"
    rows = [f"im{i}.dcm,{'ab'[i % 2]}" for i in range(4)] + [f"{name},a" for name in BROKEN]
    table.write_text("file,finding\n" + "\n".join(rows) + "\n")  # the table lists every file, broken ones too
    open_app(page, app_url)
    choose(page, "Data source", "A folder of DICOM files")
    fill(page, "Folder", str(flat))
    expect(page.get_by_role("heading", name="Readable files without a label (4)")).to_be_visible()
    expect(page.locator(CAPTION)).to_have_text([f"im{i}.dcm" for i in range(4)])  # previews, not just names
    metrics_are(page, Usable_images="0", Classes="0", Unusable_files="7")
    real_reasons_shown(page, flat, unlabelled=4)
    screenshot(page, "1-flat-unlabelled")

    page.get_by_text(re.compile(r"^A CSV table \(file . label\)$")).click()  # markdown draws -> as an arrow
    settle(page)
    fill(page, "Label table (CSV: file names or paths relative to the DICOM folder)", str(table))
    fill(page, "File name / path column", "file")
    fill(page, "Label column", "finding")
    labelled(page, ["a", "b"])
    real_reasons_shown(page, flat)
    screenshot(page, "2-flat-labels-from-csv")

    page.get_by_text("A DICOM header tag", exact=True).click()
    settle(page)
    expect(page.get_by_role("textbox", name=re.compile(r"^Label from the DICOM tag"))).to_have_value(
        "BodyPartExamined"
    )
    labelled(page, ["CHEST", "HAND"])
    real_reasons_shown(page, flat)
    screenshot(page, "3-flat-labels-from-tag")


# ---------------------------------------------------------------- items 5 and 6: Predict


def copies(src: list[Path], dst: Path, names: list[str]) -> list[Path]:
    """Copy sample images to dst under new names (sub-folders allowed); the copies' paths."""
    out = []
    for path, name in zip(src, names):
        target = dst / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)
        out.append(target)
    return out


def predicted(page: Page, names: list[str]) -> None:
    """The predictions heading counts these files and the table has a row named by each."""
    expect(page.get_by_role("heading", name=f"Predictions ({len(names)})")).to_be_visible(timeout=180_000)
    settle(page)
    for name in names:
        expect(cell(page, name)).to_have_count(1)


def no_server_paths(page: Page, home: Path) -> None:
    """Nothing on the page (text, table, picker) names the upload folders or the app home."""
    html = page.content()
    for fragment in ("uploads/", "predict-", str(home)):
        assert fragment not in html, f"the Predict page shows {fragment!r}"


def picker_in_step(page: Page, names: list[str]) -> str:
    """The Grad-CAM picker names one of `names`; the image shown is that file, the map is for its prediction."""
    picker = page.get_by_role("combobox", name="Image", exact=True)
    label = re.compile(rf"^({'|'.join(map(re.escape, names))}) → (\S+) \(([0-9.]+)\)$")
    expect(picker).to_have_value(label)  # a lagging picker keeps naming the previous result's file
    name, pred, prob = label.match(picker.input_value()).groups()
    caps = page.locator(CAPTION)
    expect(caps.first).to_have_text(name)  # the image beside the map
    expect(caps.nth(1)).to_have_text(
        re.compile(rf"^Grad-CAM for '{re.escape(pred)}' \(p = {re.escape(prob)}\)")
    )
    return name


def pick_image(page: Page, name: str) -> None:
    """Choose the file `name` in the Grad-CAM picker."""
    picker = page.get_by_role("combobox", name="Image", exact=True)
    picker.click()
    page.get_by_role("option", name=re.compile(rf"^{re.escape(name)} → ")).click()
    settle(page)
    expect(picker).to_have_value(re.compile(rf"^{re.escape(name)} → "))


@pytest.mark.slow
@pytest.mark.timeout(420)
def test_predict_names_files_and_gradcam_picker_follows_the_result(
    app_url: str, app_home: Path, tiny_run_id: str, page: Page, screenshot, tmp_path: Path
) -> None:
    """Upload 3 images, then predict a folder of 3: file names / relative paths only, picker and map in step."""
    sample = sorted((app_home / "sample" / "folder").rglob("*.png"))
    uploaded = copies(sample[:3], tmp_path / "upload", ["up_a.png", "up_b.png", "up_c.png"])
    folder_names = ["left/fo_a.png", "right/fo_b.png", "fo_c.png"]
    copies(sample[-3:], tmp_path / "to_predict", folder_names)
    page.goto(f"{app_url}/predict")  # a deep link: no need to scan the explorer's sample first
    expect(page.locator("h1", has_text="Predict")).to_be_visible(timeout=120_000)
    settle(page, 120_000)
    pick_run(page, "Trained model (run)", tiny_run_id)
    page.locator('[data-testid="stFileUploaderDropzoneInput"]').set_input_files([str(p) for p in uploaded])
    settle(page)
    page.get_by_role("button", name="Predict", exact=True).click()
    names = [p.name for p in uploaded]
    predicted(page, names)
    expect(page.get_by_text("Uploaded files, by name.", exact=True)).to_be_visible()
    picker_in_step(page, names)
    pick_image(page, names[1])  # a choice the next result must not inherit under its own label
    assert picker_in_step(page, names) == names[1]
    no_server_paths(page, app_home)
    screenshot(page, "1-predict-upload")

    page.get_by_text("A folder", exact=True).click()
    settle(page)
    fill(page, "Folder of images or DICOMs (searched recursively)", str(tmp_path / "to_predict"))
    page.get_by_role("button", name="Predict", exact=True).click()
    predicted(page, folder_names)
    expect(page.get_by_text(f"Paths relative to {tmp_path / 'to_predict'}.", exact=True)).to_be_visible()
    picker_in_step(page, folder_names)
    no_server_paths(page, app_home)
    screenshot(page, "2-predict-folder")
