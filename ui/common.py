"""Shared sidebar, cached wrappers around core calls, session keys and run-folder readers shared by the views."""

from __future__ import annotations

import dataclasses
import os
import re
import secrets
import sqlite3
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from core.base import choices, fmt, paths
from core.base.config import ConfigError, RunConfig, SourceConfig, Window, from_dict
from core.base.version import label as version_label
from core.data import imaging, sample, sources
from core.data.facts import data_facts
from core.data.items import Dataset
from core.evaluation import evaluate, plots
from core.runs import executors, jobs, rundir
from core.runs.progress import ProgressRecord
from core.runs.rundir import RunFolder
from core.web import hosting

OWNER_KEY = "owner_id"
PHASES = {  # the progress record's phases in words (core/runs/progress.py), for the Training run and setup pages
    "starting": "Starting (loading the training libraries)",
    "scanning": "Reading the dataset",
    "training": "Training",
    "testing": "Predicting the test set",
    "lr_find": "Finding a learning rate",
    "folds": "Training the folds (one job each)",
    "combining": "Combining the folds",
    "done": "Finished",
}
IDLE_EVERY_S = 5.0  # seconds between redraws of the sidebar's job counts while no job is queued or running
LIVE_EVERY_S = 2.0  # seconds between redraws of what follows running jobs (progress, runs table, job counts)
# Session keys more than one view reads (the views never import each other; they meet here)
RUN_CONFIG, RUN_CONFIG_ERROR, SOURCE_CONFIG, LR_JOB = (
    "run_config",
    "run_config_error",
    "source_config",
    "lr_job_id",
)
APPLY_SETTINGS = (
    "apply_settings"  # a view handed settings to Training setup: it re-seeds its widgets from them
)
CHECKS_RAN = "chk_ran"  # sources (keys) whose data checks ran: their warnings show (kept across reloads)
TRAIN_JOB, PICK = (
    "train_job_id",
    "tr_pick",
)  # Training run: the run this session started last, the run watched
EVAL_RUN, LAST_EVAL_RUN, CHOSEN = (
    "ev_run",
    "ev_last_run",
    "chosen_thresholds",
)  # Evaluation's run and thresholds ({run id: a binary run's threshold | a multi-label run's {finding: threshold}})
TTA_HELP = (
    "Test-time augmentation: average over small shifts (4 %), a 0.9 / 1.1 zoom and the mirror images the training "
    "setup allowed (no flips when training used none); about 8x slower."
)
METRICS = evaluate.HEADLINE + (
    "pr_auc",
    "brier",
    "ece",
    "ppv",
    "npv",
    "f1",
)  # shown per set: Evaluation, Predict


@st.cache_resource(show_spinner="Generating the synthetic sample dataset (first start only)...")
def sample_root() -> str:
    """Generate the built-in sample once per server process."""
    return str(sample.ensure_sample())


@st.cache_data(show_spinner="Scanning the dataset...", max_entries=16)
def _load(cfg_items: tuple) -> Dataset:
    """Scan a source once per distinct configuration."""
    return sources.load_source(SourceConfig(**dict(cfg_items)))


def load_dataset(cfg: SourceConfig) -> Dataset:
    """Cached scan of a source this session may read (hosted mode: data roots and own uploads only)."""
    hosting.check_source(cfg, owner_id())
    return _load(tuple(sorted(dataclasses.asdict(cfg).items())))


def forget_datasets() -> None:
    """Drop cached scans (after an upload changed a dataset's files)."""
    _load.clear()


@st.cache_data(max_entries=2000, show_spinner=False)
def _thumbnail(path: str, mtime_ns: int, size: int):
    """A small decoded preview (numpy array), cached per file version."""
    import numpy as np

    img = imaging.read_image(path)
    img.thumbnail((size, size))
    return np.asarray(img)


def thumbnail(path: str, size: int = 160):
    """A small decoded preview; a replaced file (same name, new content) is decoded again."""
    return _thumbnail(path, os.stat(path).st_mtime_ns, size)


@st.cache_data(max_entries=500, show_spinner=False)
def dicom_header(path: str) -> dict:
    """Allow-listed DICOM header (identifiers hidden)."""
    return imaging.dicom_metadata(path, include_phi=False)


@st.cache_data(ttl=600, show_spinner="Checking whether ImageNet weights can be downloaded...")
def _weights_status(arch: str, cache_present: bool) -> tuple[bool, str]:
    """core.models.pretrained.weights_obtainable, asked again every 10 minutes or when the cache file appears."""
    from core.models import pretrained

    return pretrained.weights_obtainable(arch)


def weights_status(arch: str) -> tuple[bool, str]:
    """(whether ImageNet weights of `arch` can be had now, a sentence saying so) - cached briefly."""
    from core.models import pretrained

    cached = pretrained.weights_cache_path(arch)
    return _weights_status(arch, cached is not None and cached.is_file())


def device_label() -> str:
    """GPU name or CPU, for the sidebar."""
    import torch

    if torch.cuda.is_available():
        return f"GPU: {torch.cuda.get_device_name(0)}"
    return "CPU (no GPU found: training works, slower)"


def require_entry() -> None:
    """Apply the entry point's sign-in gate when Streamlit ran this page on its own.

    On a fresh server with a pages/ folder, Streamlit's legacy multipage mode runs a deep-linked page
    script directly for the first session, before any st.navigation call: that would skip the sign-in.
    The gate's sign-in page calls st.navigation, which ends that mode for the server process.
    """
    from streamlit.runtime.pages_manager import PagesManager

    from ui import auth

    if PagesManager.uses_pages_directory:
        auth.gate()


def sidebar() -> None:
    """The sidebar shown on every page."""
    with st.sidebar:
        st.caption(f"Compute: {device_label()}")
        owner_id()
        signed_in_caption()
        jobs_caption()
        st.caption(version_label())


def signed_in_caption() -> None:
    """Hosted: who is signed in (their runs and uploads are the ones shown)."""
    from ui import auth

    who = auth.shown_identity() if hosting.hosted() else ""
    if who:
        st.caption(f"Signed in as **{who}**")


def owner_id() -> str:
    """Who owns the runs and uploads of this session.

    Hosted mode ($XRT_HOSTED=1): derived from who signed in (the OIDC identity, or the user name typed at
    the shared-password sign-in; with $XRT_ALLOW_ANONYMOUS=1 and no login, one random identity per browser
    kept by a signed cookie),
    never from the URL: a pasted link carries no ownership, and the same user on another device gets the
    same runs. A user only sees their own runs. Local mode (one person, one machine; everyone sees all runs):
    a random id per browser session, also kept in the page URL (?owner=...) so a refresh re-attaches.
    """
    if hosting.hosted():
        from core.web import signin
        from ui import auth

        owner = signin.owner_for(auth.identity())
        st.session_state[OWNER_KEY] = owner
        if "owner" in st.query_params:
            del st.query_params["owner"]  # an owner in a link means nothing here; do not invite sharing it
        return owner
    owner = st.session_state.get(OWNER_KEY)
    if not owner:
        from_url = st.query_params.get("owner", "")
        owner = from_url if re.fullmatch(r"[0-9a-f]{16,64}", from_url or "") else secrets.token_hex(16)
        st.session_state[OWNER_KEY] = owner
    if st.query_params.get("owner") != owner:
        st.query_params["owner"] = owner
    return owner


def signed_in_as() -> str:
    """' (signed in as NAME)' when the user signed in by name, else ''."""
    from ui import auth

    who = auth.shown_identity()
    return f" (signed in as {who})" if who else " (this browser)"


@st.cache_resource(show_spinner=False)
def _store(db_path: str) -> jobs.JobStore:
    """One JobStore per database per server process; orphaned runs are marked and queued ones resumed once."""
    store = jobs.JobStore(db_path)
    jobs.mark_orphans_interrupted(store, executor=executors.executor())
    return store


def job_store() -> jobs.JobStore:
    """The job store of this app home (cached; stateless apart from its database path)."""
    return _store(str(paths.jobs_db()))


def visible_jobs(limit: int = 100) -> list[jobs.Job]:
    """Jobs this session may see: its own in hosted mode, everyone's in local mode; newest first."""
    return job_store().list(owner=owner_id() if hosting.hosted() else None, limit=limit)


def job_error_text(job: jobs.Job) -> str:
    """Why a job ended badly: its reason locally; hosted, user-facing causes without server paths, else a
    generic message with the job id (internal errors stay in the server log)."""
    if hosting.hosted() and job.status == "failed":
        public = hosting.public_error(job.error)
        return public or f"The run stopped with an error. Give the administrator this run id: {job.id}"
    return job.error or f"run {job.id} ended as {job.status}"


def submit_job(kind: str, params: dict) -> jobs.Job | None:
    """Queue a job for this session's owner and make sure it runs; an error message and None on failure.

    In hosted mode every path in the config is checked here, the one door to the workers, so a loaded
    settings file cannot point a job at server files the session may not read.
    """
    try:
        check_paths(from_dict(RunConfig, params["config"]))
        return jobs.submit_and_start(kind, params, owner=owner_id(), store=job_store())
    except (ValueError, TypeError, OSError, sqlite3.Error, ConfigError) as err:
        st.error(f"Could not start the {kind.replace('_', ' ')} job: {err}")
        return None


def check_paths(cfg: RunConfig) -> None:
    """Refuse (ValueError) data or weights paths this session may not read; no-op when not hosted."""
    hosting.check_source(cfg.source, owner_id())
    if cfg.train.weights_path:
        hosting.check_server_path(cfg.train.weights_path, owner_id())


def polled(draw: Callable[..., None], live: bool) -> Callable[..., None]:
    """`draw` as a fragment redrawn every LIVE_EVERY_S seconds while `live` (jobs queued or running), else as is."""
    return st.fragment(draw, run_every=LIVE_EVERY_S) if live else draw


def job_counts() -> dict[str, int] | None:
    """Jobs per status (every user's: the shared queue); None when the job database cannot be read."""
    try:
        return job_store().counts()
    except (OSError, sqlite3.Error):  # the sidebar must never break a page (locked or unwritable database)
        return None


def jobs_caption() -> None:
    """'Jobs: running N / queued M' for the sidebar: redrawn every LIVE_EVERY_S seconds while any job is queued
    or running, and every IDLE_EVERY_S seconds otherwise, so a run started on this page (after the sidebar was
    drawn) shows up without a reload."""
    counts = job_counts()
    live = bool(counts and (counts["running"] or counts["queued"]))
    st.fragment(_jobs_line, run_every=LIVE_EVERY_S if live else IDLE_EVERY_S)()


def _jobs_line() -> None:
    """The sidebar's job counts, read now."""
    counts = job_counts()
    if counts is None:
        st.caption("Jobs: unknown (job database unavailable)")
        return
    st.caption(f"Jobs: running {counts['running']} / queued {counts['queued']}")


def phase_text(prog: ProgressRecord) -> str:
    """A running job's phase in words, with the task's message when it says more than the phase does."""
    phase = prog.phase or "starting"
    text = PHASES.get(phase, phase.replace("_", " ").capitalize())
    message = prog.message.strip()
    if message and phase != "training" and message.lower() not in text.lower():
        text += f" · {message}"
    return text


def elapsed_s(job: jobs.Job, prog: ProgressRecord) -> float | None:
    """Seconds a running job has taken: its progress record's, else since a worker started it (before any batch)."""
    if prog.elapsed_s is not None:
        return prog.elapsed_s
    return max(0.0, time.time() - job.started) if job.started else None


def page_link(path: str, label: str, icon: str | None = None) -> None:
    """A link to another page; plain text when the page is not registered (a page run on its own)."""
    try:
        st.page_link(path, label=label, icon=icon)
    except (st.errors.StreamlitAPIException, KeyError):
        st.caption(f"Next: open the **{label}** page from the navigation.")


# ---------------------------------------------------------------- finished runs, models, server paths


def finished_runs(with_model: bool = False, limit: int = 200) -> list[jobs.Job]:
    """Finished training runs this session may see (done, or crashed and finished from a checkpoint);
    with_model: only runs with a model. k-fold runs are "train" jobs too."""

    from core.train.finish import finished_from_checkpoint

    done = [
        j
        for j in visible_jobs(limit)
        if j.kind == "train"
        and RunFolder(j.run_dir).is_finished()
        and (j.status == "done" or finished_from_checkpoint(j.run_dir))
    ]
    return [j for j in done if RunFolder(j.run_dir).models()] if with_model else done


def file_version(*files: str | os.PathLike) -> tuple:
    """(path, mtime_ns, size) of each existing file: a cache key that changes when any file is rewritten."""
    out = []
    for f in files:
        try:
            st_ = os.stat(f)
        except OSError:
            continue
        out.append((str(f), st_.st_mtime_ns, st_.st_size))
    return tuple(out)


@st.cache_resource(max_entries=4, show_spinner="Loading the model...")
def _predictor(model_path: str, version: tuple, site: str = ""):
    """One loaded Predictor per model file version and site (shared by every session: never mutate it)."""
    from core.evaluation.ensemble import load_predictor

    return load_predictor(model_path, site=site)


def model_version(model_path: str) -> tuple:
    """Cache key of a saved model (or a fold ensemble): versions of the manifest and weights files of its folders."""
    from core.evaluation.ensemble import model_dirs

    files = [
        f for d in model_dirs(model_path) for pat in ("*.json", "*.safetensors") for f in sorted(d.glob(pat))
    ]
    return file_version(*files)


def predictor(model_path: str, site: str = ""):
    """A cached core.evaluation.predict.Predictor for a model folder / model.json (with a site's temperature when
    named), or an EnsemblePredictor for an ensemble reference (core.evaluation.ensemble); a rewritten model is
    loaded again."""
    return _predictor(str(model_path), model_version(model_path), site)


# ---------------------------------------------------------------- the model as a zip


@st.cache_resource(max_entries=2, show_spinner=False)
def _model_zip(run_dir: str, version: tuple) -> bytes:
    """The run's model zip (core.models.package), built once per version of its files (bytes: never mutated)."""
    from core.models import package

    with tempfile.TemporaryDirectory(prefix="model-zip-") as tmp:
        out = Path(tmp) / "model.zip"
        package.package_model(run_dir, out)
        return out.read_bytes()


def model_zip_version(run_dir: str | Path) -> tuple:
    """Cache key of a run's model zip: versions of its model files, metrics.json and the report's metrics."""
    run = RunFolder(run_dir)
    return model_version(str(run.model_dir)) + file_version(
        run.metrics, run.report_dir / rundir.REPORT_METRICS
    )


def own_run(job: jobs.Job) -> bool:
    """True when this session may take the run's files away: hosted, only the signed-in owner's runs."""
    return not hosting.hosted() or job.owner == owner_id()


def delete_button(label: str, what: str, key: str, delete: Callable[[], object]) -> bool:
    """A delete button that asks first: `label` -> a warning with **Yes, delete** / **Keep**; a refusal
    (core.runs.removal.DeleteRefused) is shown in plain words. True once deleted (the caller reruns)."""
    from core.runs.removal import DeleteRefused

    asked = f"{key}_asked"
    if not st.session_state.get(asked):
        if st.button(label, key=key):
            st.session_state[asked] = True
            st.rerun()
        return False
    st.warning(f"Delete {what}? Its files are removed for good; this cannot be undone.")
    yes, keep = st.columns(2)
    if keep.button("Keep", key=f"{key}_keep"):
        st.session_state.pop(asked, None)
        st.rerun()
    if not yes.button("Yes, delete", key=f"{key}_yes", type="primary"):
        return False
    st.session_state.pop(asked, None)
    try:
        delete()
    except DeleteRefused as err:
        st.error(str(err))
        return False
    st.toast(f"Deleted {what}.")
    return True


FINAL_MODEL_HINT = (  # where a k-fold run's one model on all the data is asked for (the setting's own label)
    f"turn on '{choices.SETTINGS['final_model_on_all'].meta.label}' beside k-fold on the Training setup page"
)


def model_download(job: jobs.Job, key: str) -> None:
    """ "Download the model (.zip)" for this session's own finished run (built on click, then cached); else why not."""
    from core.models.savedmodel import find_manifest
    from core.models.weightfiles import ModelFileError

    if not own_run(job):
        return
    run_dir = str(job.run_dir)
    try:
        find_manifest(run_dir)
    except (
        ModelFileError
    ) as err:  # a k-fold run without a final model: say what is missing, in the app's words
        folds = RunFolder(run_dir).folds_dir.is_dir()
        why = f"this k-fold run has one model per fold; for one model to download, {FINAL_MODEL_HINT}"
        st.caption(f"No model to download: {why if folds else err}.")
        return
    version = model_zip_version(run_dir)
    st.download_button(
        "Download the model (.zip)",
        data=lambda: _model_zip(run_dir, version),
        file_name=f"{RunFolder(run_dir).name}_model.zip",
        mime="application/zip",
        key=key,
        on_click="ignore",
        help="Weights (safetensors) + manifest, the same network as ONNX with its preprocessing, a README on "
        "how to load it, and the run's metrics. Built when clicked (the ONNX export takes a few seconds).",
    )


def folder_picker(label: str, key: str) -> str:
    """A folder to read: free text locally; hosted: a choice of data folders and own uploads ('' = none)."""
    if not hosting.hosted():
        return st.text_input(label, key=key).strip()
    options = [str(p) for p in hosting.allowed_folders(owner_id())]
    if not options:
        st.info(
            "No data folders are configured on this server and you have not uploaded anything yet "
            "(upload on the Dataset explorer page)."
        )
        return ""
    return st.selectbox(label, options, format_func=shown_path, key=key + "_pick") or ""


def csv_picker(label: str, key: str) -> str:
    """A CSV file to read: free text locally; hosted: a choice of CSVs in data folders and own uploads."""
    if not hosting.hosted():
        return st.text_input(label, key=key).strip()
    options = [str(p) for p in hosting.allowed_csvs(owner_id())]
    if not options:
        st.info("No CSV files in the configured data folders or in your uploads.")
        return ""
    return st.selectbox(label, options, format_func=shown_path, key=key + "_pick") or ""


def shown_path(path: str) -> str:
    """How a path is shown: as is locally; hosted: 'My uploads / x' for own uploads (no server layout)."""

    from core.web import uploads

    if not hosting.hosted():
        return path
    mine = uploads.upload_dir(owner_id())
    p = Path(path)
    return f"My uploads / {p.relative_to(mine).as_posix()}" if p.is_relative_to(mine) else path


@st.cache_data(max_entries=64, show_spinner="Computing the Grad-CAM map...")
def _cam(model_path: str, version: tuple, path: str, file_version_: tuple, class_name: str | None) -> dict:
    """Grad-CAM of one file with the cached model: the model's input image, the overlay, class and probabilities."""
    import numpy as np

    from core.evaluation import explain

    res = explain.explain(predictor(model_path), path, class_name)
    return {
        "image": np.asarray(res.image),
        "overlay": np.asarray(res.overlay),
        "class": res.class_name,
        "prob": res.prob,
        "probs": res.probs,
    }


def grad_cam(model_path: str, path: str, class_name: str | None = None) -> dict:
    """Cached Grad-CAM (see _cam) keyed by model and image file versions."""
    return _cam(str(model_path), model_version(model_path), str(path), file_version(path), class_name)


def show_cam(
    model_path: str, path: str, class_name: str | None = None, caption: str = "", prob: float | None = None
) -> None:
    """The image and its Grad-CAM overlay side by side (or why there is none); `prob`: the probability the caller's
    table shows (a site's temperature), else the model's own."""

    try:
        cam = grad_cam(model_path, path, class_name)
    except (imaging.ImageError, OSError, ValueError, RuntimeError) as err:
        st.warning(f"No Grad-CAM for this image: {err}")
        return
    left, right, _ = st.columns([2, 2, 1])
    left.image(thumbnail(path, 448), caption=caption or Path(path).name, width="stretch")
    right.image(
        cam["overlay"],
        caption=f"Grad-CAM for '{cam['class']}' (p = {cam['prob'] if prob is None else prob:.3f}): "
        "red = regions that raised this class's score",
        width="stretch",
    )


# ---------------------------------------------------------------- galleries and clickable matrices (evaluation views)


def image_cell(col, path: str, caption: str, size: int = 160) -> None:
    """One thumbnail in a column (or why it is missing)."""
    try:
        col.image(thumbnail(str(path), size), caption=caption, width="stretch")
    except (imaging.ImageError, OSError) as err:
        col.caption(f"{caption}: image unavailable ({err})")


def gallery(rows: pd.DataFrame, caption: Callable[[dict], str], cols: int = 4) -> None:
    """Thumbnails in rows of `cols`, captioned by caption(row)."""
    records = rows.to_dict("records")
    for start in range(0, len(records), cols):
        for col, row in zip(st.columns(cols), records[start : start + cols]):
            image_cell(col, row["path"], caption(row))


def row_model(run_dir: str, row: dict) -> str | None:
    """The model that predicted a row of a run's predictions: its fold's model for out-of-fold rows, else the run's."""
    run, fold = RunFolder(run_dir), row.get("fold")
    model = run.fold_model(int(fold)) if fold is not None and not pd.isna(fold) else None
    return str(model) if model is not None else next((str(m) for m in run.models().values()), None)


def cell_of_point(point: dict, classes: list[str]) -> str | None:
    """The cell key "t,p" of a clicked confusion-matrix point (its customdata, else x = predicted / y = true names)."""
    data = point.get("customdata")
    if isinstance(data, (list, tuple)) and len(data) == 2:
        return f"{int(data[0])},{int(data[1])}"
    x, y = point.get("x"), point.get("y")
    if x in classes and y in classes:
        return f"{classes.index(y)},{classes.index(x)}"
    return None


def pick_clicked_cell(chart_key: str, classes: list[str], cell_key: str) -> None:
    """Chart selection callback: the clicked cell of chart `chart_key` becomes session_state[cell_key]."""
    event = st.session_state.get(chart_key) or {}
    for point in (event.get("selection") or {}).get("points") or []:
        cell = cell_of_point(point, classes)
        if cell is not None:
            st.session_state[cell_key] = cell
            return


# ---------------------------------------------------------------- shared by the views


def lr_find_figure(data: dict) -> go.Figure:
    """Loss against learning rate (log x) with the finder's suggestions marked (core.evaluation.plots)."""
    return plots.lr_finder(data.get("lrs", []), data.get("losses", []), data.get("suggestions") or {})


# ---------------------------------------------------------------- the source and settings the pages share


def sample_source() -> SourceConfig:
    """The built-in synthetic sample in its CSV form (patient ids, so splits can be by patient)."""
    return sample.source(sample_root())


def settings_user() -> str:
    """Whose settings these are: the signed-in owner when hosted; locally the one person at the machine."""
    return owner_id() if hosting.hosted() else "local"


def window_text(window: Window | None) -> str:
    """How DICOMs are windowed, in words."""
    if window is None:
        return "each file's own window"
    return {
        "auto": "automatic (1st-99th percentile of each image)",
        "full": "full range (each image's min-max)",
    }.get(window.mode, f"centre {window.center:g}, width {window.width:g}")


def default_run_config(source: SourceConfig) -> RunConfig:
    """This machine's starting settings (core.base.choices), the schedule planned for the data when it can be read
    (core.base.plan); from scratch when ImageNet weights cannot be had."""
    gpu = choices.has_gpu()
    try:  # the split as the defaults make it (the folders' own, by patient, stratified)
        facts = data_facts(load_dataset(source).items, choices.default_config(source, gpu).data.split)
    except (ValueError, OSError):  # unreadable or not allowed here: the device defaults; the pages say why
        facts = None
    return choices.default_config(
        source, gpu, pretrained=weights_status(RunConfig().train.arch)[0], facts=facts
    )


# ---------------------------------------------------------------- run-folder readers and widgets the views share


def read_history(run_dir: str | Path) -> pd.DataFrame | None:
    """history.csv of a run (one row per epoch); None when there is none yet."""
    try:
        df = rundir.RunFolder(run_dir).read_history()
    except (OSError, ValueError):
        return None
    return df if len(df) and "epoch" in df else None


def best_epochs(summary: dict, prog: ProgressRecord | None = None) -> int | dict[int, int] | None:
    """Best epoch(s) to mark on the curves: per fold for k-fold runs, else one (from metrics or progress)."""
    per_fold = summary.get("metrics", {}).get("per_fold") if summary else None
    if per_fold:
        return {int(f["fold"]): int(f["best_epoch"]) for f in per_fold if f.get("best_epoch") is not None}
    prog = prog or ProgressRecord()
    best = summary.get("best_epoch") if summary else prog.best_epoch
    return int(best) if best is not None and not prog.n_folds else None


def curves(job: jobs.Job, best: int | dict[int, int] | None = None) -> None:
    """Loss and metric curves per epoch from history.csv (core.evaluation.plots), best epoch(s) marked."""
    df = read_history(job.run_dir)
    if df is None:
        if job.kind != "lr_find":
            st.caption(
                "Curves appear after the first epoch."
                if job.active
                else f"No training curves: the run ended ({job.status}) before its first epoch."
            )
        return
    st.plotly_chart(plots.training_curves(df, best), width="stretch")


def schedule_text(c: RunConfig) -> str:
    """'1 frozen + 5 epochs' when fine-tuning; '8 epochs' from scratch (no frozen phase there)."""
    t = c.train
    frozen = t.planned_epochs() - t.epochs
    epochs = fmt.count(t.epochs, "epoch")
    return f"{frozen} frozen + {epochs}" if frozen else epochs


def config_caption(cfg: dict) -> str:
    """One line describing a run config."""
    c = from_dict(RunConfig, cfg)
    split = c.data.split
    folds = f", {split.k_folds}-fold CV" if split.k_folds >= 2 else ""
    weights = "ImageNet weights" if c.train.pretrained else "from scratch"
    if c.train.weights_path:
        weights = f"weights from {Path(c.train.weights_path).name}"
    valid = f"{split.k_folds} folds" if split.k_folds >= 2 else f"valid {split.valid_pct:.0%}"
    where = c.source.csv_path or c.source.root
    data = f" on {Path(where).name}" if where else ""
    window = f", DICOM window {window_text(c.data.window)}" if c.data.window is not None else ""
    return (
        f"{c.train.arch} ({weights}){data}, {c.data.img_size} px {c.data.channels}, batch {c.data.batch_size}, "
        f"{schedule_text(c)}, lr {c.train.lr or 'default'}, "
        f"split {split.method} ({valid}, test {split.test_pct:.0%}){folds}{window}"
    )


def run_name(job: jobs.Job) -> tuple[str, str]:
    """(run name, dataset) from the job's config: the dataset as its last two path parts ('chest/labels.csv')."""
    cfg = (job.params or {}).get("config") or {}
    src = cfg.get("source") or {}
    where = Path(src.get("csv_path") or src.get("root") or "")
    uploaded = where.is_relative_to(paths.uploads_dir())
    parts = where.relative_to(paths.uploads_dir()).parts[1:] if uploaded else where.parts  # no owner folder
    return str(cfg.get("name") or ""), "/".join(parts[-2:]) if str(where) != "." else ""


def job_label(job: jobs.Job, *extra: str) -> str:
    """'<id> · <name> · <dataset> · ...' for pickers (the parts a job has)."""
    return " · ".join(p for p in (job.id, *run_name(job), *extra) if p)


def run_label(job: jobs.Job) -> str:
    """'<id> · <name> · <dataset> · 3-fold · ordinal · 0, 1, 2' style label of a finished run (the task type
    only when not single-label: 'single' read as the task type next to an ordinal run's grades)."""
    summary = RunFolder(job.run_dir).read_metrics()
    kind = f"{summary.get('k')}-fold" if summary.get("type") == "kfold" else "one split"
    task = (summary.get("task") or {}).get("type")
    return job_label(job, f"{kind} · {task}" if task else kind, ", ".join(summary.get("classes", [])))
