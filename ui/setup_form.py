"""Training setup widgets: every RunConfig field as a keyed widget, seeded from the carried config.

The carried config (st.session_state["run_config"], a dict) is the source of truth between pages:
widget keys ("su_*") are seeded from it when absent (Streamlit drops widget state on other pages),
the config is rebuilt from the widget values on every run, and published again when it validates.
"""

from __future__ import annotations

import copy
import dataclasses
import json
from collections.abc import MutableMapping
from pathlib import Path
from typing import Any

import pandas as pd
import streamlit as st

from core.base import fmt, plan, schema
from core.base.choices import (
    CPU_DEFAULTS,
    KFOLD_DEFAULT,
    SETTINGS,
    Choices,
    build_config,
    device_defaults,
    has_gpu,
)
from core.base.config import ARCHS, TRAINING, ConfigError, RunConfig, SourceConfig, from_dict, to_dict
from core.data import augment_preview, balance
from core.data.facts import data_facts
from core.data.splits import SplitError
from core.runs import jobs
from core.runs.progress import ProgressRecord
from core.runs.rundir import RunFolder
from core.web import hosting, uploads
from core.web.uploads import UploadError
from ui import common
from ui import working_settings as ws
from ui.common import (  # session keys shared with other views
    LR_JOB,
    RUN_CONFIG_ERROR,
)

UPLOAD_LIMIT = 1_000_000  # bytes; a config is a few kB
SPLIT_LABELS = {
    "random": "Random",
    "stratified": "Stratified (same class mix in every split)",
    "group": "By patient (no patient in two splits)",
    "column": "From a CSV split column (train / valid / test)",
    "folder": "From folders (train / valid / test sub-folders, or a separate test folder)",
    "loso": "Leave one site out (one model per held-out site)",
}
LOSO_HELP = (
    "A CSV column, or a DICOM tag: dicom:InstitutionName (a pseudonymised site), dicom:Manufacturer, "
    "dicom:ManufacturerModelName. Each site validates one model trained on the others (the k-fold switch is not used); "
    "each needs 20 images, and no patient may be at two sites."
)
IMBALANCE_LABELS = {"none": "None", "weighted_loss": "Weighted loss", "oversample": "Oversample rare classes"}
FORMATS = {"imbalance": IMBALANCE_LABELS.get}  # option labels of the settings the training section draws
SUGGESTION_ORDER = ("valley", "slide", "steep", "minimum")
LR_PLAUSIBLE = (1e-5, 1.0)  # suggestions outside are artefacts of the curve's first or last steps


# ---------------------------------------------------------------- source


def describe_source(src: SourceConfig) -> str:
    """One line saying which data a run will use."""
    sample = str(Path(common.sample_root()))
    where = src.csv_path or src.root
    if hosting.hosted():  # never show the server's folder layout to hosted users
        src = dataclasses.replace(
            src,
            csv_path=Path(src.csv_path).name if src.csv_path else "",
            root=Path(src.root).name if src.root else "",
        )
    prefix = "the built-in SYNTHETIC sample, " if where.startswith(sample) else ""
    if src.kind == "csv":
        extra = f", patients from column '{src.group_col}'" if src.group_col else ""
        return f"{prefix}CSV table `{src.csv_path}`{extra}"
    if src.kind == "dicom":
        labels = (
            f", labels from `{src.csv_path}`"
            if src.csv_path
            else f", labels from tag {src.label_tag}"
            if src.label_tag
            else ""
        )
        return f"{prefix}DICOM folder `{src.root}`{labels}" + (
            f", patients from tag {src.group_tag}" if src.group_tag else ""
        )
    if src.kind == "sample":
        return "the built-in SYNTHETIC sample (class folders)"
    return f"{prefix}class folders in `{src.root}`"


# ---------------------------------------------------------------- config <-> widget state


def config_to_state(cfg: RunConfig) -> dict[str, Any]:
    """Widget values (by key) that show `cfg`; ConfigError for a value no widget offers (an unknown architecture)."""
    split = cfg.data.split
    return schema.to_state(cfg, SETTINGS.values()) | {
        "su_kfold": split.k_folds >= 2,  # k-fold is a switch and a number here
        "su_k": max(2, int(split.k_folds) or KFOLD_DEFAULT),
        "su_split_col": cfg.source.split_col or "split",
        "su_test_root": cfg.source.test_root,
        "su_grade_order": ", ".join(cfg.data.task.order),
    }


def seed_state(cfg: RunConfig, overwrite: bool = False, state: MutableMapping | None = None) -> None:
    """Put `cfg`'s values into the widget keys that are missing (all of them with overwrite)."""
    state = st.session_state if state is None else state
    for key, value in config_to_state(cfg).items():
        if overwrite or key not in state:
            state[key] = value


def seed_working(source: SourceConfig, overwrite: bool) -> tuple[RunConfig, str]:
    """Seed the widgets from the working settings (their base); refused ones (an unknown choice): the defaults, and why."""
    try:
        base = ws.get_or_default()
        seed_state(base, overwrite=overwrite)
        return base, ""
    except ConfigError as err:
        base = common.default_run_config(source)
        seed_state(base, overwrite=True)
        return base, f"the working settings were refused ({err}); the defaults are shown instead"


def choices_from_state(state: Any) -> Choices:
    """The setup widgets' values as the user's choices (core.base.choices maps them onto the RunConfig)."""
    chosen = schema.from_state(state, SETTINGS.values())
    chosen["default_lr"] = "lr" in chosen and chosen["lr"] is None  # blank: the schedule's default
    loso = state.get("su_split_method") == "loso"  # its folds are the sites, counted when training starts
    chosen["k_folds"] = int(state["su_k"]) if state["su_kfold"] and not loso else 0
    return chosen


def source_from_state(state: Any, source: SourceConfig) -> SourceConfig:
    """The source with this page's split column (column splits of tables) and test folder (class folders)."""
    src = copy.deepcopy(source)
    column = state["su_split_method"] == "column" and src.kind in ("csv", "dicom")
    if column:
        src.split_col = str(state["su_split_col"]).strip()
    if src.kind == "folder":
        src.test_root = str(state["su_test_root"]).strip()
    if column and not src.split_col:
        raise ConfigError("name the CSV column that holds train / valid / test")
    return src


def config_from_state(state: Any, base: RunConfig, source: SourceConfig) -> RunConfig:
    """A validated RunConfig from widget values over `base` (fields without widgets keep base's values)."""
    cfg = build_config(choices_from_state(state), base=base, source=source_from_state(state, source))
    if "su_grade_order" in state:  # ordinal: the grades lowest first (blank: inferred from their names)
        cfg.data.task.order = [g.strip() for g in str(state["su_grade_order"]).split(",") if g.strip()]
        cfg.validate()
    if cfg.train.weights_path and not checked_path(cfg.train.weights_path, "weights file").is_file():
        raise ConfigError(f"local weights file not found: {cfg.train.weights_path}")
    if cfg.source.test_root:
        checked_path(cfg.source.test_root, "test folder")
    return cfg


def checked_path(text: str, what: str) -> Path:
    """A server path this session may use (hosted: configured data folders and own uploads only), else ConfigError."""
    try:
        return hosting.check_server_path(text, common.owner_id() if hosting.hosted() else "")
    except UploadError as err:
        raise ConfigError(f"{what}: {err}") from None


# ---------------------------------------------------------------- save / load


def load_config_json(raw: bytes) -> RunConfig:
    """A RunConfig from uploaded JSON bytes; ConfigError with a reason when it is not one."""
    if len(raw) > UPLOAD_LIMIT:
        raise ConfigError(f"a settings file is a few kB; this one is {len(raw) // 1000} kB")
    try:
        data = json.loads(raw.decode("utf-8-sig"))
    except (UnicodeDecodeError, ValueError) as err:
        raise ConfigError(f"not a JSON settings file ({err})") from None
    try:
        return from_dict(RunConfig, data).validate()
    except (TypeError, AttributeError) as err:
        raise ConfigError(f"not a settings file of this app ({err})") from None


def apply_settings(raw: bytes, state: MutableMapping) -> str:
    """Load a settings file into `state` (widgets, carried config, source); the reason when refused, else ''."""
    try:
        cfg = load_config_json(raw)
        common.check_paths(cfg)
    except ConfigError as err:
        return str(err)
    except ValueError as err:
        return f"settings refused: {err}"
    ws.put(cfg, state)
    ws.set_source(cfg.source, state)
    seed_state(cfg, overwrite=True, state=state)
    return ""


def _on_upload() -> None:
    """Uploader callback: apply the chosen settings file before the page reruns."""
    up = st.session_state.get("su_upload")
    if up is not None:
        st.session_state["su_upload_error"] = apply_settings(up.getvalue(), st.session_state)


def save_load(cfg: RunConfig | None) -> None:
    """Download the current settings as JSON; upload a saved settings file."""
    left, right = st.columns(2)
    if cfg is not None:
        name = (cfg.name or "xray-run").replace(" ", "_")
        left.download_button(
            "Download settings (JSON)",
            json.dumps(to_dict(cfg), indent=2),
            f"{name}.json",
            "application/json",
            key="su_download",
        )
    else:
        left.caption("Fix the settings above to download them.")
    right.file_uploader("Load settings (JSON)", type=["json"], key="su_upload", on_change=_on_upload)
    refused = st.session_state.pop(
        "su_upload_error", ""
    )  # said once, right after the upload: not for as long
    if refused:  # as the uploader holds the file, under a verdict about the settings actually in use
        st.error(f"Settings file not loaded: {refused}. The settings above are unchanged.")


# ---------------------------------------------------------------- sections


def _on_weights_upload() -> None:
    """Uploader callback (hosted): keep a checked weights file in this session's upload folder and use it."""
    up = st.session_state.get("su_weights_upload")
    st.session_state["su_weights_error"] = ""
    if up is None:
        st.session_state["su_weights_path"] = ""
        return
    try:
        path = uploads.save_weights(common.owner_id(), up.name, up.getvalue(), hosting.max_upload_bytes())
    except UploadError as err:
        st.session_state["su_weights_error"] = str(err)
        return
    st.session_state["su_weights_path"] = str(path)


def model_section(gpu: bool) -> None:
    """Architecture, weights, image size, channels, batch size, epochs."""
    c1, c2, c3 = st.columns(3)
    arch = ws.widget(c1, "arch", format_func=lambda a: ARCHS[a]["label"])
    ws.widget(c2, "pretrained")
    ws.widget(
        c3,
        "weights_path",
        disabled=hosting.hosted(),
        help="ImageNet-style weights for the chosen architecture, read "
        "without running code. On a shared (hosted) server: upload the file below instead.",
    )
    if hosting.hosted():
        c3.file_uploader(
            "Upload a weights file",
            type=["safetensors", "pth", "pt"],
            key="su_weights_upload",
            on_change=_on_weights_upload,
        )
        if st.session_state.get("su_weights_error"):
            c3.error(f"Weights file refused: {st.session_state['su_weights_error']}")
    if not st.session_state["su_weights_path"]:
        weights_note(arch, bool(st.session_state["su_pretrained"]))
    c1, c2, c3, c4, c5 = st.columns(5)
    ws.widget(c1, "img_size")
    ws.widget(c2, "channels", horizontal=True, format_func={"rgb": "RGB", "grey": "Grey"}.get)
    ws.widget(c3, "batch_size")
    ws.widget(c4, "epochs")
    ws.widget(
        c5,
        "freeze_epochs",
        help="Epochs that train only the new head before the whole network (pretrained only).",
    )
    ws.widget(
        st,
        "resize",
        help="squish: stretch to a square; pad: keep the "
        "aspect ratio with black bars; crop: cut to a square (random position in training).",
    )
    task_row()
    if not gpu:
        st.caption(
            f"No GPU found: the defaults suit a CPU (image size {CPU_DEFAULTS.img_size}, {CPU_DEFAULTS.epochs} "
            f"epochs, batch {CPU_DEFAULTS.batch_size}). Training works, "
            "but each epoch takes much longer than on a GPU; larger images and models cost more."
        )


TASK_LABELS = {
    "single": "Single label (one class per image)",
    "multilabel": "Multi-label (any number of findings per image)",
    "ordinal": "Ordinal (ordered grades, e.g. KL 0-4)",
}
HEAD_LABELS = {
    "ce": "Cross-entropy over the grades",
    "corn": "CORN (rank-consistent, K-1 outputs)",
}


def task_row() -> None:
    """The task type, and for ordinal grades their order (blank: inferred from names such as 0..4 or KL0..KL4)."""
    c1, c2 = st.columns(2)
    task = ws.widget(c1, "task_type", format_func=TASK_LABELS.get)
    if task == "ordinal":
        c2.text_input("Grade order, lowest first (blank: from their numbers)", key="su_grade_order")
        ws.widget(c2, "ordinal_head", format_func=HEAD_LABELS.get)
    elif task == "multilabel":
        c2.caption("Findings come from the source's multi-label options (Dataset explorer page).")


def weights_note(arch: str, pretrained: bool) -> None:
    """Whether ImageNet weights can be had on this server, and what that means for the pretrained switch."""
    ok, why = common.weights_status(arch)
    if ok:
        if pretrained:
            st.caption(why)
        return
    if pretrained:
        st.warning(
            f"{why} A pretrained run would fail: turn 'pretrained' off to train from scratch, or "
            + ("upload a weights file." if hosting.hosted() else "give a local weights file.")
        )
    else:
        st.caption(f"{why} So 'pretrained' is off by default: training starts from scratch.")


def lr_section(cfg: RunConfig | None) -> None:
    """Learning rate field and the LR finder (a background job), its curve and one-click suggestions."""
    c1, c2, c3 = st.columns([2, 1, 1])
    ws.widget(c1, "lr")
    st.session_state.setdefault("su_lr_num_it", device_defaults().lr_find_steps)
    c2.number_input(
        "LR finder steps",
        10,
        1000,
        step=10,
        key="su_lr_num_it",
        help=lr_steps_help(cfg),
    )
    c3.write("")
    if c3.button("Run the LR finder", key="su_lr_find", disabled=cfg is None):
        job = common.submit_job(
            "lr_find", {"config": to_dict(cfg), "num_it": int(st.session_state["su_lr_num_it"])}
        )
        if job is not None:
            st.session_state[LR_JOB] = job.id
    job_id = st.session_state.get(LR_JOB)
    job = common.job_store().get(job_id) if job_id else None
    if job is None:
        return
    if job.active:
        _lr_live(job.id)
    elif not ws.same_images((job.params or {}).get("config", {}).get("source", {}), current_source(cfg)):
        st.caption(
            f"The last LR finder run ({job.status}) was on another dataset; run it again for this one."
        )
    elif job.status == "done":
        lr_result(job)
    elif cfg is None:  # settings that cannot work: the verdict says why, an old failure is no cause now
        return
    elif (job.params or {}).get("config") != to_dict(cfg):
        st.caption(f"The last LR finder run {job.status} with earlier settings; run it again for these.")
    else:
        st.error(f"LR finder {job.status}: {common.job_error_text(job)}")


def lr_steps_help(cfg: RunConfig | None) -> str:
    """What the LR finder's steps cost: one training batch each, and a rough time at the current settings."""
    text = "One training batch per step; more steps give a smoother curve."
    if cfg is None:
        return text
    steps = int(st.session_state["su_lr_num_it"])
    s = plan.lr_find_seconds(steps, cfg.data.batch_size, cfg.data.img_size, has_gpu())
    return (
        f"{text} {steps} steps of {cfg.data.batch_size} images at {cfg.data.img_size} px: about "
        f"{fmt.seconds(s)} on one core of a small server (rough; much less on a GPU), plus reading the data "
        "once (the first run on a data set decodes every image)."
    )


def current_source(cfg: RunConfig | None) -> SourceConfig | None:
    """The source these settings train on; the one chosen on the explorer when the settings cannot work."""
    return cfg.source if cfg is not None else st.session_state.get(common.SOURCE_CONFIG)


@st.fragment(run_every=common.LIVE_EVERY_S)
def _lr_live(job_id: str) -> None:
    """Progress of a running LR finder with elapsed time and ETA; a full rerun when it ends (then the curve shows)."""
    job = common.job_store().get(job_id)
    if job is None or not job.active:
        st.rerun()
    prog = ProgressRecord.read(job.run_dir)
    if job.status == "queued":
        st.progress(0.0, text="LR finder waiting in the queue...")
        return
    elapsed = f" · elapsed {fmt.seconds(common.elapsed_s(job, prog))}"
    if prog.phase != "lr_find" or not prog.n_batches:  # still loading the libraries or reading the dataset
        st.progress(0.0, text=f"LR finder: {common.phase_text(prog)}{elapsed}")
        return
    done, total, left = prog.batch, prog.n_batches, prog.eta_s
    timing = (
        f"about {fmt.seconds(left)} left" if left is not None else "time left: estimated after the first step"
    )
    st.progress(min(1.0, done / total), text=f"LR finder: step {done} / {total}{elapsed} · {timing}")


def _use_lr(value: float) -> None:
    """Put a suggested learning rate into the field."""
    st.session_state["su_lr"] = f"{value:.3g}"


def lr_result(job: jobs.Job) -> None:
    """The LR finder curve with its suggestions and a button per suggestion."""
    data = RunFolder(job.run_dir).read_lr_find()
    if not data:
        st.warning("The LR finder finished but wrote no curve.")
        return
    st.plotly_chart(common.lr_find_figure(data), width="stretch", key="su_lr_chart")
    sugg, verdict = data.get("suggestions", {}), data.get("verdict") or {"usable": True}
    names = [n for n in SUGGESTION_ORDER if sugg.get(n) and LR_PLAUSIBLE[0] <= sugg[n] <= LR_PLAUSIBLE[1]]
    if not verdict["usable"]:  # core.train.lr_find.curve_verdict: a flat or noisy curve suggests nothing
        st.info(
            f"No learning rate suggested: {verdict['reason']}. Training keeps the default "
            f"({verdict['default_lr']:.0e}): leave the field blank, or run the finder with more steps."
        )
        return
    if not names:
        st.caption(
            "The curve gives no plausible learning rate (all suggestions are below 1e-5 or above 1); "
            "leave the field blank for the default, or run the finder with more steps."
        )
    cols = st.columns(max(1, len(names)))
    for col, name in zip(cols, names):
        col.button(
            f"Use {name}: {sugg[name]:.2g}",
            key=f"su_lr_use_{name}",
            on_click=_use_lr,
            args=(sugg[name],),
            help="valley is usually a good choice" if name == "valley" else None,
        )


def augment_section(items: pd.DataFrame | None, cfg: RunConfig | None) -> None:
    """Augmentation switches and strengths, and a grid of augmented training samples."""
    ws.widget(st, "augment")
    off = not st.session_state["su_aug_enabled"]
    c1, c2, c3, c4 = st.columns(4)
    ws.widget(c1, "flip", disabled=off)
    ws.widget(c1, "vertical_flip", disabled=off, help="Rarely right for X-rays.")
    for where, name in ((c2, "rotate"), (c2, "zoom"), (c3, "warp"), (c4, "brightness"), (c4, "contrast")):
        ws.widget(where, name, disabled=off)
    if st.session_state["su_vflip"] and not off:
        st.caption(
            "Up-down flips make anatomy upside down; use them only when that can happen in your images."
        )
    if items is None or items.empty or cfg is None:
        return
    left, right = st.columns([4, 1])
    left.caption(
        "Preview: random training samples after the same transforms training uses (before normalisation)."
    )
    if right.button("Shuffle preview", key="su_aug_shuffle"):
        st.session_state["su_aug_seed"] = st.session_state.get("su_aug_seed", 0) + 1
    try:
        images = preview(items, cfg, st.session_state.get("su_aug_seed", 0))
    except Exception as err:  # a preview must not break the page; training reports the same error in full
        st.warning(f"No preview: {type(err).__name__}: {err}")
        return
    cols = st.columns(len(images) or 1)
    for col, img in zip(cols, images):
        col.image(img[..., 0] if img.shape[-1] == 1 else img, width="stretch")


@st.cache_data(max_entries=64, show_spinner="Drawing augmented samples...")
def _preview(paths: tuple[str, ...], labels: tuple[str, ...], data_json: str, seed: int) -> list:
    """Cached preview by item paths, data settings and seed."""
    from core.base.config import DataConfig

    items = pd.DataFrame({"path": list(paths), "label": list(labels)})
    return augment_preview.preview_augmentations(
        items, from_dict(DataConfig, json.loads(data_json)), n=8, seed=seed
    )


def preview(items: pd.DataFrame, cfg: RunConfig, seed: int) -> list:
    """Eight augmented samples of the training items for the current data settings."""
    pool = items[items["split"].fillna("").astype(str) != "test"] if "split" in items else items
    pool = pool.sample(n=min(64, len(pool)), random_state=seed)
    data_json = json.dumps({k: v for k, v in to_dict(cfg.data).items() if k != "split"}, sort_keys=True)
    return _preview(tuple(pool["path"]), tuple(pool["label"].astype(str)), data_json, seed)


def test_folder_input() -> None:
    """The separate test folder: free text locally; hosted, a choice of configured data folders and uploads."""
    label = "Separate test folder (optional, same class sub-folders)"
    if not hosting.hosted():
        st.text_input(label, key="su_test_root")
        return
    options = ["", *(str(p) for p in hosting.allowed_folders(common.owner_id()))]
    if st.session_state.get("su_test_root", "") not in options:
        st.session_state["su_test_root"] = ""
    st.selectbox(label, options, key="su_test_root", format_func=lambda p: p or "(none)")


def split_section(src: SourceConfig, items: pd.DataFrame | None, cfg: RunConfig | None) -> list[str]:
    """Split method, fractions, k-fold, seed; a summary table per split and any patient leak (returned as problems)."""
    c1, c2, c3 = st.columns([2, 1, 1])
    method = ws.widget(c1, "split_method", format_func=SPLIT_LABELS.get)
    ws.widget(
        c2,
        "valid_pct",
        disabled=bool(st.session_state.get("su_kfold")),
        help="With k-fold cross-validation each fold validates in turn; this fraction is not used.",
    )
    ws.widget(c3, "test_pct")
    if method == "column" and src.kind in ("csv", "dicom"):
        st.text_input("Split column in the CSV", key="su_split_col")
    if src.kind == "folder":
        test_folder_input()
    if method == "loso":
        ws.widget(st, "site_col", help=LOSO_HELP)
    fallback = st.session_state.pop(ws.SPLIT_FALLBACK, None)
    if fallback and method != "group":
        st.info(fallback)
    if method == "group" and not (src.group_col or src.group_tag):
        st.warning(
            "This source has no patient ids: each image counts as its own patient. "
            "Name a patient column or DICOM tag on the Dataset explorer page."
        )
    c1, c2, c3 = st.columns(3)
    c1.toggle(
        "k-fold cross-validation",
        key="su_kfold",
        help="Train k models, each validated on a different fold; reports mean ± sd.",
        disabled=method == "loso",  # its folds are the sites
    )
    c2.number_input(
        "k (folds)", 2, 20, key="su_k", disabled=not st.session_state["su_kfold"] or method == "loso"
    )
    ws.widget(c1, "final_model_on_all", disabled=not (st.session_state["su_kfold"] or method == "loso"))
    ws.widget(c3, "seed")
    if items is None or items.empty or cfg is None:
        return []
    try:
        summary, leaks = augment_preview.split_preview(items, cfg.data.split, cfg.data.task)
        cv = cfg.data.split.k_folds >= 2 or cfg.data.split.method == "loso"
        folds = augment_preview.fold_preview(items, cfg.data.split, cfg.data.task) if cv else None
    except (SplitError, ConfigError, ValueError) as err:
        st.error(f"This split cannot be made: {err}")
        return [f"the split cannot be made: {err}"]
    st.dataframe(summary, hide_index=True, width="stretch")
    if leaks:
        st.error(
            f"Patient leak: {len(leaks)} patient(s) have images in more than one split, so validation "
            "would overrate the model. Split by patient, or fix the split column."
        )
    if folds is not None:
        st.caption(
            "Validation part of each fold (test items never join a fold):"
            if "site" not in folds
            else "Each site is held out by one model (test items never join a fold):"
        )
        st.dataframe(folds, hide_index=True, width="stretch")
    return [f"{len(leaks)} patient(s) have images in more than one split"] if leaks else []


def verdict(problems: list[str]) -> None:
    """The page's one verdict: why these settings cannot work (Start is then disabled with it), or that they can."""
    if problems:
        st.session_state[RUN_CONFIG_ERROR] = "; ".join(problems)
        st.error(f"These settings cannot work: {st.session_state[RUN_CONFIG_ERROR]}")
        return
    st.session_state.pop(RUN_CONFIG_ERROR, None)
    st.success("Settings are valid and carried to the Training run page.")
    common.page_link("pages/3_train.py", "Training run", icon=":material/model_training:")


def plan_section(items: pd.DataFrame | None, cfg: RunConfig | None) -> None:
    """The schedule's optimiser steps and rough time, and one click to the plan for this data, quicker or better."""
    if items is None or cfg is None:
        return
    gpu = has_gpu()
    facts, dd = data_facts(items, cfg.data.split), device_defaults(gpu)
    planned = plan.plan_schedule(facts, cfg.train.fine_tunes(), dd, gpu)
    now = plan.schedule_of(facts, cfg, dd, gpu)
    st.caption(
        f"This schedule: {now.img_size} px, batch size {now.batch_size}, {fmt.count(now.epochs, 'epoch')} = {now.steps} "
        f"optimiser steps on {facts.n_train} training images, about {fmt.seconds(now.seconds)} "
        "(a rough estimate: a resnet18-sized model on one core of a small server, or a GPU). "
        + ("It is the one planned for this data." if now.choices() == planned.choices() else "")
    )
    options = {"planned": planned, **plan.alternatives(facts, planned, dd, gpu)}
    for col, (name, p) in zip(st.columns(len(options)), options.items()):
        col.button(
            f"{name.capitalize()}: {p.img_size} px, {fmt.count(p.epochs, 'epoch')}, ~{fmt.seconds(p.seconds)}",
            key=f"su_plan_{name}",
            on_click=_use_plan,
            args=(p,),
            help=p.why,
            disabled=now.choices() == p.choices(),
        )


def _use_plan(p: plan.Plan) -> None:
    """Put a planned schedule into the image size, batch size and epochs fields."""
    for name, value in p.choices().items():
        st.session_state[SETTINGS[name].state_key] = value


def training_section(items: pd.DataFrame | None = None) -> None:
    """The settings declared for this section (class imbalance, early stopping, label smoothing...), the run name."""
    names = [s.name for s in SETTINGS.values() if s.meta.section == TRAINING]
    cols = st.columns(len(names) + 1)
    chosen = {}
    for col, name in zip(cols, names):
        extra = {"format_func": FORMATS[name]} if name in FORMATS else {}
        chosen[name] = ws.widget(col, name, help=SETTINGS[name].help_text(), **extra)
    ws.widget(cols[-1], "name")
    if items is not None and len(items):
        training = items[items["split"].astype(str) != "test"] if "split" in items else items
        hint = balance.weighting_hint(
            training["label"].astype(str).value_counts().to_dict(), str(chosen.get("imbalance"))
        )
        if hint:
            st.info(hint)
