"""Checks of the data in the app: shortcut and duplicate checks (explorer, setup), an openable confusion matrix,
suspect labels after k-fold, and corrections written as a new labels CSV (the user's files are never changed)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pandas as pd
import streamlit as st

from core.base.config import SourceConfig
from core.data.items import Dataset
from core.evaluation import checks, evaluate, explain, plots
from core.runs import jobs
from ui import common
from ui import working_settings as ws
from ui.corrections import action_picker, corrections_panel, run_source  # shared with the task views

RAN = common.CHECKS_RAN  # source keys whose checks ran (kept with the working settings across reloads)
SOURCE_CONFIG = common.SOURCE_CONFIG  # the data source the setup page trains on (shared with the explorer)
CELL = "chk_cell"
ALL = "all"
GALLERY_COLS = 4
TOP_K = 12
THUMB = 160


# ---------------------------------------------------------------- cached computations


def _key(cfg: SourceConfig) -> tuple:
    """A hashable key of a source configuration."""
    return tuple(sorted(dataclasses.asdict(cfg).items()))


@st.cache_data(show_spinner="Checking the data (metadata shortcut, duplicates)...", max_entries=8)
def _checks(cfg_items: tuple, size: int) -> dict[str, Any]:
    """Shortcut check and duplicates of one source (scan cached too); tables only, no thumbnails."""
    ds = common.load_dataset(SourceConfig(**dict(cfg_items)))
    res = checks.check_source(ds.items, size=size)
    return {"shortcut": res["shortcut"], "duplicates": res["duplicates"], "pairs": res["pairs"]}


def results(cfg: SourceConfig, run: bool = False, size: int = checks.FEATURE_SIZE) -> dict[str, Any] | None:
    """The checks of this source when they ran in this session (or run=True), else None."""
    key = _key(cfg)
    ran = st.session_state.setdefault(RAN, [])
    if run and repr(key) not in ran:
        ran.append(repr(key))
        ws.persist()  # a reload right after the checks still shows their warnings
    return _checks(key, size) if repr(key) in ran else None


# ---------------------------------------------------------------- explorer and setup


def dataset_checks(ds: Dataset, cfg: SourceConfig) -> None:
    """Explorer section: can metadata predict the label, duplicates across patients / labels / splits, actions."""
    st.subheader("Checks of the data")
    st.caption(
        "Can the label be predicted without looking at the anatomy (image size, file size, format, bit depth, "
        "brightness, DICOM tags)? Are the same images in the set twice, under other patients, labels or splits?"
    )
    res = results(cfg)
    if res is None:
        if not st.button("Run the checks", key="chk_run"):
            return
        res = results(cfg, run=True)
    shortcut_panel(res["shortcut"])
    duplicates_panel(ds, res, cfg)
    corrections_panel(cfg)


def shortcut_panel(sc: dict[str, Any]) -> None:
    """The shortcut verdict in plain words, the per-feature chart and how it was measured."""
    if sc.get("auc") is None:
        st.info(f"The shortcut check {sc.get('note', 'could not run')}.")
        return
    auc = sc["auc"]
    text = f"AUC {auc['value']:.2f} (95% CI {auc['lo']:.2f}-{auc['hi']:.2f})"
    if sc["flagged"]:
        st.warning(f"Possible shortcut: {sc['warning']}")
    else:
        st.success(
            f"No shortcut found: image metadata alone predict the label with {text}, below the warning "
            f"level of {sc['threshold']:.2f} (0.50 = chance)."
        )
    if sc["features"]:
        st.plotly_chart(
            plots.shortcut_features(sc["features"], auc, sc["threshold"]),
            width="stretch",
            key="chk_fig_shortcut",
        )
    same = ", ".join(checks.FEATURE_WORDS.get(c, c) for c in sc["constant"])
    st.caption(
        f"{sc['cv'].capitalize()} of small gradient-boosted trees on metadata only ({sc['n']} images)."
        + (f" The same for every image (so no shortcut): {same}." if same else "")
    )


def duplicates_panel(ds: Dataset, res: dict[str, Any], cfg: SourceConfig) -> None:
    """Duplicate and near-duplicate pairs, the ones that leak first, with a gallery and an exclude action."""
    d, pairs = res["duplicates"], res["pairs"]
    c = st.columns(4)
    c[0].metric("Duplicate pairs", d["pairs"])
    c[1].metric("Identical files", d["identical_files"])
    c[2].metric("Across patients", d["cross_patient"])
    c[3].metric("Across labels / splits", d["cross_label"] + d["cross_split"])
    if not len(pairs):
        st.caption("No duplicate or near-duplicate images (perceptual hash, confirmed on thumbnails).")
        return
    if d["leak"]:
        st.warning(
            f"{d['leak']} duplicate pair(s) sit under different patients, labels or splits: the same "
            "picture in training and validation inflates every metric. Exclude one of each, or tick "
            "'Keep near-duplicate images together' on the Training setup page."
        )
    shown = pairs.drop(columns=["i", "j"])
    st.dataframe(shown, hide_index=True, width="stretch")
    for _, row in pairs.head(3).iterrows():  # each pair side by side, with why it counts as one
        cols = st.columns([1, 1, 2])
        for col, pos, name in ((cols[0], row["i"], row["a"]), (cols[1], row["j"], row["b"])):
            _image(col, ds.items["path"].iloc[pos], f"{name} ({ds.items['label'].iloc[pos]})")
        cols[2].markdown(checks.pair_reason(row))
    second = ds.items.iloc[pairs["j"].to_numpy()].drop_duplicates("path")
    action_picker(second, ds.classes, cfg, "chk_dup", "duplicate of another image")


def setup_checks(src: SourceConfig) -> None:
    """Setup page: the shortcut and duplicate warnings of this source, and 'keep duplicates together'."""
    res = results(src)
    if res is None and st.button("Check the data for shortcuts and duplicates", key="chk_setup_run"):
        res = results(src, run=True)
    if res is not None:
        if res["shortcut"].get("flagged"):
            st.warning(f"Possible shortcut: {res['shortcut']['warning']}")
        d = res["duplicates"]
        if d["pairs"]:
            st.warning(
                f"{d['pairs']} near-duplicate image pair(s) ({d['cross_patient']} across patients, "
                f"{d['cross_label']} across labels): keep them together so none spans two splits."
            )
        elif not res["shortcut"].get("flagged"):
            st.caption("Checks of the data: no metadata shortcut and no duplicate images found.")
    ws.widget(
        st,
        "keep_duplicates",
        help="Near-duplicates (perceptual hash) are grouped like one patient before splitting.",
    )


# ---------------------------------------------------------------- galleries


def _image(col, path: str, caption: str) -> None:
    """One thumbnail (or why it is missing)."""
    common.image_cell(col, path, caption, THUMB)


def gallery(rows: pd.DataFrame, caption) -> None:
    """Thumbnails in rows of GALLERY_COLS, captioned by caption(row)."""
    common.gallery(rows, caption, GALLERY_COLS)


def cam_picker(job: jobs.Job, rows: pd.DataFrame, key: str, class_col: str = "pred") -> None:
    """Grad-CAM of one gallery item, for the class in class_col."""
    records = rows.to_dict("records")
    names = {i: f"#{r['rank']} {Path(str(r['path'])).name}" for i, r in enumerate(records)}
    pick = st.selectbox("Grad-CAM for", list(names), format_func=names.get, key=f"{key}_cam")
    row = records[pick]
    model = common.row_model(job.run_dir, row)
    if model is None:
        st.caption("This run has no saved model to explain with.")
        return
    common.show_cam(
        model,
        str(row["path"]),
        str(row[class_col]),
        caption=f"given {row['label']}, model says {row[class_col]}",
    )


# ---------------------------------------------------------------- evaluation page


def eval_checks(job: jobs.Job, ev: dict[str, Any], frames: dict[str, pd.DataFrame], set_name: str) -> None:
    """Evaluation page: open a confusion-matrix cell, suspect labels (k-fold), act on top losses, corrections."""
    src = run_source(job)
    confusion_cells(job, ev, frames, set_name, src)
    suspect_section(job, ev, frames, src)
    if src is not None:
        corrections_panel(src)


def _tp(cell: str) -> tuple[int, int]:
    """(true, predicted) class positions of a cell key "t,p"."""
    t, p = cell.split(",")
    return int(t), int(p)


def _set_cell(key: str, classes: list[str]) -> None:
    """Chart selection callback: the clicked cell becomes the picked one."""
    common.pick_clicked_cell(key, classes, CELL)


def confusion_cells(
    job: jobs.Job,
    ev: dict[str, Any],
    frames: dict[str, pd.DataFrame],
    set_name: str,
    src: SourceConfig | None,
) -> None:
    """Click a cell (or pick it) to see its images sorted by loss, with Grad-CAM and actions."""
    st.subheader("Open a confusion-matrix cell")
    classes, set_ev = ev["classes"], ev["sets"][set_name]
    df = evaluate.apply_threshold(frames[set_name].dropna(subset=["label"]), classes, set_ev["threshold"])
    df = df[df["label"].astype(str).isin(classes)]
    cm = set_ev["confusion"]
    st.plotly_chart(
        plots.confusion_matrix_cells(cm, classes, "Click a cell to see its images"),
        width="stretch",
        key="chk_cm",
        on_select=lambda: _set_cell("chk_cm", classes),
        selection_mode="points",
    )
    n = len(classes)
    cells = [ALL, *[f"{t},{p}" for t in range(n) for p in range(n)]]
    errors = [c for c in cells[1:] if _tp(c)[0] != _tp(c)[1] and cm[_tp(c)[0]][_tp(c)[1]]]
    if st.session_state.get(CELL) not in cells:
        st.session_state[CELL] = errors[0] if errors else ALL

    def name(c: str) -> str:
        if c == ALL:
            return "all images (top losses)"
        t, p = _tp(c)
        return f"true {classes[t]} → predicted {classes[p]} ({int(cm[t][p])})"

    cell = st.selectbox("Cell", cells, key=CELL, format_func=name)
    rows = explain.top_losses(df, classes)
    if cell != ALL:
        t, p = _tp(cell)
        rows = rows[(rows["label"].astype(str) == classes[t]) & (rows["pred"].astype(str) == classes[p])]
    rows = rows.head(TOP_K)
    if rows.empty:
        st.info("No images in this cell.")
        return
    st.caption(f"{name(cell)}: the {len(rows)} with the highest loss first.")
    gallery(
        rows,
        lambda r: (
            f"#{r['rank']} true {r['label']} · pred {r['pred']} ({r['prob_pred']:.2f}) loss {r['loss']:.2f}"
        ),
    )
    cam_picker(
        job, rows, f"chk_cell_cam_{cell.replace(',', '_')}"
    )  # per cell: a picked row never carries over
    if src is None or set_name == "external":  # external images are not in the run's source
        return
    of = {"valid": "validation", "oof": "out-of-fold", "test": "hold-out test"}.get(set_name, set_name)
    withheld = checks.suspects_withheld(df, classes, set_ev.get("ci", {}).get("roc_auc"), of=of)
    if withheld:  # a useless model's top losses are no reason to exclude or relabel anything: said plainly
        st.warning(
            f"Look before you act on these images: {withheld}. A high loss here says nothing about the label."
        )
    action_picker(rows, classes, src, f"chk_cell_act_{cell.replace(',', '_')}", f"top loss ({name(cell)})")


def suspect_section(
    job: jobs.Job, ev: dict[str, Any], frames: dict[str, pd.DataFrame], src: SourceConfig | None
) -> None:
    """Items whose given label the out-of-fold model disagrees with (k-fold runs), most suspect first."""
    st.subheader("Suspect labels")
    if "oof" not in frames:
        st.caption(
            "Suspect labels need a k-fold run: out-of-fold predictions give every image an honest second "
            "opinion. Turn on k-fold on the Training setup page."
        )
        return
    classes, oof = ev["classes"], frames["oof"].dropna(subset=["label"])
    withheld = checks.suspects_withheld(oof, classes, ev["sets"].get("oof", {}).get("ci", {}).get("roc_auc"))
    if withheld:
        st.warning(
            f"Suspect labels are withheld: {withheld}. Its disagreements with the labels say nothing about them; "
            "train a model that does better than chance first (see the warnings at the top of this page)."
        )
        return
    ranked = checks.suspect_labels(oof, classes)
    n_issue = int(ranked["issue"].sum())
    st.caption(
        f"{n_issue} of {len(ranked)} images look mislabelled (confident learning on the out-of-fold "
        "probabilities); the most suspect first. The model can be wrong too: look before changing a label."
    )
    top = ranked.head(TOP_K)
    gallery(
        top,
        lambda r: (
            f"#{r['rank']} given {r['label']} · suggested {r['suggested']} ({r['p_suggested']:.2f})"
            + (" ⚠" if r["issue"] else "")
        ),
    )
    cam_picker(job, top, "chk_suspect_cam", class_col="suggested")
    if src is not None:
        action_picker(top, classes, src, "chk_suspect_act", "suspect label (out-of-fold model disagrees)")
