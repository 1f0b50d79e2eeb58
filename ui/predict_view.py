"""Predict widgets: pick a trained model, choose images (upload, folder, CSV), predict, show, explain, download.

Session state: "pr_run" / "pr_model" (the model), "pr_thr_<run id>" (threshold slider), "pr_upload" (the last
saved upload: signature, folder, refused files) and "pr_result" (the last predictions, raw probabilities; the
threshold is applied when shown, so moving it never predicts again).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pandas as pd
import streamlit as st

from core.base import fmt
from core.data import same_files
from core.evaluation import conformal, ensemble, evaluate, predict
from core.models import savedmodel, site_temperature, weightfiles
from core.runs import jobs, rundir
from core.runs.rundir import RunFolder
from core.web import hosting, uploads
from ui import common

RUN, MODEL, SOURCE, RESULT, UPLOAD = "pr_run", "pr_model", "pr_input", "pr_result", "pr_upload"
SITE = "pr_site"
UPLOADED = "images"  # the folder of an upload that loose files (and a zip's top-level files) are saved in
SOURCES = {"upload": "Upload images, DICOMs or a zip", "folder": "A folder", "csv": "A CSV of file paths"}
HOSTED_SOURCES = {
    "folder": "A configured data folder or your uploads",
    "csv": "A CSV in a data folder or your uploads",
}


# ---------------------------------------------------------------- model choice


def no_models() -> None:
    """The empty state: where models come from."""
    st.info("No trained models yet. Train one on the **Training run** page; it appears here when done.")
    common.page_link("pages/3_train.py", "Training run", icon=":material/model_training:")


def pick_run(runs: list[jobs.Job]) -> jobs.Job:
    """The run whose model predicts (default: the one on the Evaluation page, else the newest)."""
    ids = [j.id for j in runs]
    if st.session_state.get(RUN) not in ids:
        carried = [st.session_state.get(k) for k in (common.EVAL_RUN, common.LAST_EVAL_RUN, common.PICK)]
        st.session_state[RUN] = next((i for i in carried if i in ids), ids[0])
    labels = {j.id: common.run_label(j) for j in runs}
    chosen = st.selectbox("Trained model (run)", ids, key=RUN, format_func=labels.get)
    return next(j for j in runs if j.id == chosen)


def pick_model(job: jobs.Job) -> str:
    """The run's final model, a fold's model, or a k-fold run's folds as one model (core.evaluation.ensemble)."""
    models = ensemble.model_choices(job.run_dir)
    if "final model" not in models:
        st.info(
            f"This k-fold run has no final model trained on all the data (to get one, {common.FINAL_MODEL_HINT}). "
            "Pick one fold's model (each was trained on the other folds' images only) or all folds as one model."
        )
    if len(models) == 1:
        return next(iter(models.values()))
    model = models[st.selectbox("Model", list(models), key=MODEL)]
    if ensemble.ref_run(model) is not None:
        st.caption(ENSEMBLE_NOTE)
    return model


ENSEMBLE_NOTE = (
    "All folds as one model: each image's probabilities are the mean of the fold models' calibrated ones (k times "
    "slower). Usually a little better than one fold on small sets; prediction sets are not offered (they are "
    "calibrated for one model) and Grad-CAM shows fold 1's map."
)


def model_classes(model: str) -> list[str] | None:
    """The model's classes from its manifest (cheap; no weights loaded); None after showing why it is unusable."""
    try:
        return list(savedmodel.read_manifest(ensemble.member_path(model))[0].classes)
    except (weightfiles.ModelFileError, OSError) as err:
        st.error(f"This model cannot be used: {err}")
        return None


# ---------------------------------------------------------------- input


def _upload_sig(files: list) -> str:
    """A short signature of an upload (names, sizes, ids): the same files are saved once."""
    raw = "|".join(f"{f.name}:{f.size}:{getattr(f, 'file_id', '')}" for f in files)
    return hashlib.sha256(raw.encode()).hexdigest()[:12]


def save_upload(files: list) -> tuple[str, pd.DataFrame]:
    """Store uploaded files (checked by content) in this session's upload folder; (folder, refused files)."""
    sig = _upload_sig(files)
    kept = st.session_state.get(UPLOAD) or {}
    if kept.get("sig") == sig and Path(kept["root"]).is_dir():
        return kept["root"], kept["problems"]
    limits = hosting.upload_limits()
    if sum(int(f.size or 0) for f in files) > limits.max_total_bytes:
        raise uploads.UploadError(f"the upload is larger than {fmt.megabytes(limits.max_total_bytes)}")
    root, problems = uploads.save_uploads(
        common.owner_id(),
        [(f.name, f.getvalue()) for f in files],
        limits.max_total_bytes,
        limits.max_files,
        label=UPLOADED,
        dataset=uploads.prediction_dataset(sig),
    )
    table = pd.DataFrame(problems, columns=["path", "reason"])
    st.session_state[UPLOAD] = {"sig": sig, "root": str(root), "problems": table}
    return str(root), table


def input_form() -> dict[str, Any] | None:
    """Widgets describing what to predict: {"kind", ...}; None until complete."""
    names = HOSTED_SOURCES if hosting.hosted() else {}
    kind = st.radio(
        "Images to predict",
        list(SOURCES),
        horizontal=True,
        key=SOURCE,
        format_func=lambda k: names.get(k, SOURCES[k]),
    )
    if kind == "upload":
        limits = hosting.upload_limits()
        files = st.file_uploader(
            f"PNG, JPEG, TIFF, BMP, DICOM or a .zip (at most {fmt.megabytes(limits.max_total_bytes)}"
            "; every file is checked by its content)",
            accept_multiple_files=True,
            key="pr_files",
        )
        return {"kind": "upload", "files": files} if files else None
    if kind == "folder":
        folder = common.folder_picker("Folder of images or DICOMs (searched recursively)", "pr_folder")
        return {"kind": "folder", "folder": folder} if folder else None
    csv_path = common.csv_picker("CSV file", "pr_csv")
    c1, c2, c3 = st.columns(3)
    path_col = c1.text_input("Path column", "path", key="pr_pathcol")
    label_col = c2.text_input("Label column (optional: scores the model)", "label", key="pr_labelcol")
    root = "" if hosting.hosted() else c3.text_input("Image root (default: the CSV's folder)", key="pr_root")
    return (
        {"kind": "csv", "csv": csv_path, "path_col": path_col, "label_col": label_col, "root": root}
        if csv_path
        else None
    )


def options(job: jobs.Job, classes: list[str]) -> tuple[float | None, bool]:
    """Threshold (binary models; default: the one chosen on the Evaluation page) and test-time augmentation."""
    c1, c2 = st.columns([3, 1])
    threshold = None
    if len(classes) == 2:
        key = f"pr_thr_{job.id}"
        st.session_state.setdefault(key, st.session_state.get(common.CHOSEN, {}).get(job.id, 0.5))
        threshold = float(
            c1.slider(f"Threshold on P({classes[1]})", 0.0, 1.0, step=0.001, format="%.3f", key=key)
        )
    else:
        c1.caption("Multi-class model: the predicted class is the most probable one.")
    tta = c2.checkbox("Test-time augmentation", key="pr_tta", help=common.TTA_HELP)
    return threshold, tta


# ---------------------------------------------------------------- predicting


def site_choice(model: str) -> str:
    """The site whose temperature to apply, when the model keeps any (fitted on a site's labelled images); "" = none."""
    sites = sorted(site_temperature.sites_of(common.predictor(model).manifest))
    if not sites:
        return ""
    if st.session_state.get(SITE) not in ["", *sites]:
        st.session_state[SITE] = ""
    return str(
        st.selectbox(
            "Site of these images",
            ["", *sites],
            format_func=lambda s: s or "(the model's own calibration)",
            key=SITE,
            help="The model keeps a temperature for each of these sites, fitted on that site's labelled images: "
            "choose the site the images come from to get probabilities calibrated for it.",
        )
    )


def run_prediction(model: str, spec: dict[str, Any], tta: bool, site: str = "") -> dict[str, Any]:
    """Predict what the form describes with the cached model; raw probabilities, problems, the input root."""
    owner = common.owner_id()
    pred = common.predictor(model, site)
    if spec["kind"] == "csv":
        csv = hosting.check_server_path(spec["csv"], owner)
        root = hosting.check_server_path(spec["root"], owner) if spec["root"].strip() else csv.parent
        df, problems = predict.predict_csv(pred, csv, spec["path_col"], spec["label_col"], root, tta=tta)
        return {"df": df, "problems": problems, "root": str(root)}
    refused = pd.DataFrame(columns=["path", "reason"])
    if spec["kind"] == "upload":
        folder, refused = save_upload(spec["files"])
    else:
        folder = str(hosting.check_server_path(spec["folder"], owner))
    df, problems = predict.predict_folder(pred, folder, tta=tta)
    return {
        "df": df,
        "problems": pd.concat([refused, problems], ignore_index=True) if len(refused) else problems,
        "root": str(Path(folder) / UPLOADED) if spec["kind"] == "upload" else folder,  # uploads: by file name
    }


def predict_button(model: str, spec: dict[str, Any] | None, tta: bool) -> None:
    """The Predict button: runs the prediction and keeps the result for this model."""
    site = site_choice(model)
    if not st.button("Predict", key="pr_go", type="primary", disabled=spec is None):
        return
    try:
        with st.spinner("Predicting..."):
            out = run_prediction(model, spec, tta, site)
    except (
        ValueError,
        OSError,
    ) as err:  # UploadError, ModelFileError, SourceError, missing files are ValueErrors
        st.error(f"Cannot predict: {err}")
        return
    seq = int((st.session_state.get(RESULT) or {}).get("seq", 0)) + 1
    st.session_state[RESULT] = {
        **out,
        "model": model,
        "tta": tta,
        "kind": spec["kind"],
        "seq": seq,
        "site": site,
    }


# ---------------------------------------------------------------- results


def shown(df: pd.DataFrame, root: str) -> pd.DataFrame:
    """Paths as the user knows them: relative to the chosen folder or CSV root (an upload: the file name)."""
    if df.empty:
        return df
    base = Path(root)
    return df.assign(
        path=[
            Path(p).relative_to(base).as_posix() if Path(p).is_relative_to(base) else Path(p).name
            for p in df["path"].astype(str)
        ]
    )


@st.cache_data(max_entries=8, show_spinner="Scoring the labelled rows...")
def scored(df: pd.DataFrame, classes: list[str], threshold: float | None) -> dict[str, Any] | None:
    """Metrics with CIs of the labelled rows (None when none is labelled)."""
    return predict.score_predictions(df, classes, threshold=threshold)


def with_sets(df: pd.DataFrame, model: str, classes: list[str]) -> pd.DataFrame:
    """The table with conformal `set` / `refer` columns when the user asks for them (applied when shown)."""
    cal = common.predictor(model).conformal
    if df.empty or cal is None or (st.session_state.get(RESULT) or {}).get("site"):
        return df  # sets are calibrated at the training site: not offered with another site's temperature
    on = st.toggle("Prediction sets: refer the unsure images to a reader", key="pr_sets")
    if not on:
        return df
    c1, c2, c3 = st.columns(3)
    rule = conformal.SetRule(
        c1.slider("Coverage", 0.80, 0.99, 0.90, 0.01, key="pr_coverage"),
        str(
            c2.radio("Score", conformal.METHODS, format_func=conformal.METHOD_LABELS.get, key="pr_set_score")
        ),
        c3.checkbox("Per class (Mondrian)", key="pr_mondrian"),
    )
    out = conformal.add_sets(df, classes, cal, rule)
    st.caption(
        f"{rule.describe()}, calibrated on {cal.n} held-out images: each `set` holds the true class with "
        "probability >= the coverage for images like the validation ones (another site or scanner breaks "
        f"this). `refer` = the set is not exactly one class: {int(out['refer'].sum())} of {len(out)} images."
    )
    return out


def results(result: dict[str, Any], classes: list[str], threshold: float | None) -> None:
    """Predictions table, download, problems, labelled-set metrics, and one image with its Grad-CAM."""
    df = evaluate.apply_threshold(result["df"], classes, threshold) if len(result["df"]) else result["df"]
    df = with_sets(df, result["model"], classes)
    table = shown(df, result["root"])
    st.subheader(f"Predictions ({len(df)})")
    if df.empty:
        st.warning(
            "No image could be predicted." if len(result["problems"]) else "No image or DICOM files found."
        )
    else:
        overlap_warning(df, result["model"])
        counts = df["pred"].astype(str).value_counts()
        st.caption("Predicted per class: " + ", ".join(f"{c} {int(counts.get(c, 0))}" for c in classes))
        st.dataframe(table, hide_index=True, width="stretch")
        st.caption(
            f"Paths relative to {common.shown_path(result['root'])}."
            if result.get("kind") != "upload"
            else "Uploaded files, by name."
        )
        full = (
            table if hosting.hosted() else df
        )  # locally the download keeps full paths (scripts can open them)
        st.download_button(
            "Download CSV",
            full.to_csv(index=False).encode(),
            file_name="predictions.csv",
            mime="text/csv",
            key="pr_download",
        )
    problems(result)
    labelled_metrics(df, classes, threshold)
    if not df.empty:
        explain_one(df, table, result["model"], result.get("seq", 0))


@st.cache_data(max_entries=16, show_spinner=False)
def _seen(run_dir: str, version: tuple) -> dict[str, str]:
    """{resolved file path: split} of the items a run trained, validated or tested on (its items.csv)."""
    run = RunFolder(run_dir)
    cfg = run.read_config_dict().get("source") or {}
    base = Path(cfg.get("root") or (Path(cfg["csv_path"]).parent if cfg.get("csv_path") else ""))
    try:
        items = run.read_items()
    except (OSError, ValueError):
        return {}
    return {
        str((base / r).resolve()): str(sp) for r, sp in zip(items.get("relpath", []), items.get("split", []))
    }


@st.cache_data(max_entries=8, show_spinner=False)
def _copies(run_dir: str, version: tuple, new: tuple[str, ...]) -> dict[str, str]:
    """{new file: the run's item with the same bytes} (an uploaded training image has another path)."""
    return same_files.copies_of(new, _seen(run_dir, version))


def seen_in_training(df: pd.DataFrame, model: str) -> pd.Series:
    """The split ('train', 'valid', 'test') in which the model's run used each predicted file ('' if unseen)."""
    run = rundir.of_model(ensemble.member_path(model))
    if run is None:  # a model outside any run: none of the files can be its training images
        return pd.Series("", index=df.index)
    version = common.file_version(run.items, run.config)
    seen = _seen(str(run), version)
    paths = [str(Path(p).resolve()) for p in df["path"].astype(str)]
    copies = _copies(str(run), version, tuple(p for p in paths if p not in seen))
    return pd.Series([seen.get(p) or seen.get(copies.get(p, ""), "") for p in paths], index=df.index)


def overlap_warning(df: pd.DataFrame, model: str) -> None:
    """Warn when the images include the model's own training / validation images (its run's items.csv)."""
    used = seen_in_training(df, model)
    counts = used[used != ""].value_counts()
    if counts.empty:
        return
    parts = ", ".join(f"{n} in its {split} set" for split, n in counts.items())
    st.warning(
        f"{int(counts.sum())} of these {len(df)} images were used by this model's run ({parts}): "
        "predictions on training or validation images overrate the model. Use new images to judge it."
    )


def problems(result: dict[str, Any]) -> None:
    """Files that could not be read or were refused, with the reason."""
    if len(result["problems"]):
        st.subheader(f"Files that could not be used ({len(result['problems'])})")
        st.dataframe(shown(result["problems"], result["root"]), hide_index=True, width="stretch")


def labelled_metrics(df: pd.DataFrame, classes: list[str], threshold: float | None) -> None:
    """A labelled CSV: its metrics with 95 % CIs (labels that are not model classes are reported)."""
    if not len(evaluate.labelled(df)):
        return
    try:
        ev_ = scored(df, classes, threshold)
    except ValueError as err:
        st.warning(f"The labels cannot be scored: {err}")
        return
    if ev_ is not None:
        st.subheader(f"Metrics on the {ev_['n']} labelled images (95 % CIs)")
        st.dataframe(
            evaluate.comparison_table({"labelled rows": ev_}, common.METRICS),
            hide_index=True,
            width="stretch",
        )


def explain_one(df: pd.DataFrame, table: pd.DataFrame, model: str, seq: int = 0) -> None:
    """Pick a row: the image and its Grad-CAM for the predicted class, side by side.

    The picker is keyed to this result (its sequence number), so a new prediction never keeps the previous
    result's choice or label while the map shows another file.
    """
    st.subheader("Image and Grad-CAM")
    labels = {
        i: f"{table['path'].iloc[i]} → {df['pred'].iloc[i]} ({df['prob_pred'].iloc[i]:.3f})"
        for i in range(len(df))
    }
    i = st.selectbox("Image", list(labels), key=f"pr_pick_{seq}", format_func=labels.get)
    site = (st.session_state.get(RESULT) or {}).get("site")
    member = ensemble.member_path(model)  # an ensemble has no single map: its first fold's
    caption = str(table["path"].iloc[i]) + (" (Grad-CAM of fold 1's model)" if member != model else "")
    common.show_cam(
        member,
        str(df["path"].iloc[i]),
        str(df["pred"].iloc[i]),
        caption=caption,
        prob=float(df["prob_pred"].iloc[i]) if site else None,  # the site's temperature, as in the table
    )
