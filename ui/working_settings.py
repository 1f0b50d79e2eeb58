"""The session's working settings: one RunConfig carried between pages, read, set, checked, kept and restored here.

The working config lives in st.session_state[RUN_CONFIG] as plain values (a dict), the chosen source in
SOURCE_CONFIG, the last LR finder job in LR_JOB (keys in ui.common). Pages and views go through this module only;
each user setting's widget is drawn from its declaration beside its RunConfig field (`widget`).
"""

from __future__ import annotations

import copy
import dataclasses
import json
from collections.abc import MutableMapping
from typing import Any

import streamlit as st

from core.base import schema
from core.base.choices import SETTINGS
from core.base.config import ConfigError, RunConfig, SourceConfig, Window, from_dict, to_dict
from core.data import sample as samples
from core.web import hosting, settings_store
from ui import common
from ui.common import APPLY_SETTINGS, CHECKS_RAN, LR_JOB, RUN_CONFIG, RUN_CONFIG_ERROR, SOURCE_CONFIG

RESTORED, KEPT = "kept_restored", "kept_last"  # restored once this session; the signature last kept
HANDED = "settings_handed"  # what settings handed to the setup page changed (shown once there)
SPLIT_FALLBACK = "split_fallback"  # why the split method was changed for a new source (shown once on setup)


def _state(state: MutableMapping | None) -> MutableMapping:
    """The given mapping, else this session's state."""
    return st.session_state if state is None else state


# ---------------------------------------------------------------- get / set / validate


def current_source(state: MutableMapping | None = None) -> tuple[SourceConfig, bool]:
    """The source chosen on the Dataset explorer (or loaded with a config); else the sample. Flag: is default."""
    state = _state(state)
    src = state.get(SOURCE_CONFIG)
    if not isinstance(src, SourceConfig):
        carried = get(state)
        src = carried.source if carried else common.sample_source()
    return dataclasses.replace(src), src.csv_path == common.sample_source().csv_path


def get(state: MutableMapping | None = None) -> RunConfig | None:
    """The working RunConfig (None when there is none yet); ConfigError or TypeError when it no longer parses."""
    carried = _state(state).get(RUN_CONFIG)
    return from_dict(RunConfig, carried) if carried else None


def get_or_default(state: MutableMapping | None = None) -> RunConfig:
    """The working RunConfig, else this machine's starting settings for the current source."""
    return get(state) or common.default_run_config(current_source(state)[0])


def put(cfg: RunConfig, state: MutableMapping | None = None) -> None:
    """Make `cfg` the working RunConfig of this session."""
    _state(state)[RUN_CONFIG] = to_dict(cfg)


def drop(state: MutableMapping | None = None) -> None:
    """Forget the working RunConfig (the setup page rebuilds it, for a new source)."""
    _state(state).pop(RUN_CONFIG, None)


IMAGE_FIELDS = (
    "kind",
    "root",
    "csv_path",
    "path_col",
    "label_col",
    "label_tag",
)  # which images, which labels


def same_images(source: SourceConfig | dict, src: SourceConfig | None) -> bool:
    """Whether `source` (a SourceConfig, or one as a job's config holds it) reads the same images and labels as `src`."""
    if src is None:
        return False
    now = dataclasses.asdict(src)
    then = dataclasses.asdict(source) if isinstance(source, SourceConfig) else source
    return all(then.get(k, now[k]) == now[k] for k in IMAGE_FIELDS)


def set_source(src: SourceConfig, state: MutableMapping | None = None) -> None:
    """Make `src` the chosen data source (the setup page trains on it); a run name given for other data is dropped."""
    state = _state(state)
    old = state.get(SOURCE_CONFIG)
    if isinstance(old, SourceConfig) and not same_images(old, src):
        state[SETTINGS["name"].state_key] = ""
        if isinstance(state.get(RUN_CONFIG), dict):
            state[RUN_CONFIG] = {**state[RUN_CONFIG], "name": ""}
    if not (src.group_col or src.group_tag):
        _no_patients(state)
    state[SOURCE_CONFIG] = src


def _no_patients(state: MutableMapping) -> None:
    """A split by patient on a source without patient ids falls back to stratified, with a note for the setup page."""
    key = SETTINGS["split_method"].state_key
    carried = state.get(RUN_CONFIG)
    split = carried.get("data", {}).get("split", {}) if isinstance(carried, dict) else {}
    if state.get(key) != "group" and split.get("method") != "group":
        return
    state[key] = "stratified"
    if split:
        state[RUN_CONFIG] = copy.deepcopy(carried)
        state[RUN_CONFIG]["data"]["split"]["method"] = "stratified"
    state[SPLIT_FALLBACK] = (
        "The split was by patient, but this source has no patient ids (each image would count as its own "
        "patient): it is now stratified. Name a patient column or DICOM tag on the Dataset explorer to split by patient."
    )


def validate(state: MutableMapping | None = None) -> tuple[RunConfig | None, str]:
    """(the working RunConfig, validated; else None) and why not: the setup page's verdict, or a bad config."""
    state = _state(state)
    if state.get(RUN_CONFIG_ERROR):
        return None, f"The settings on the Training setup page are not valid: {state[RUN_CONFIG_ERROR]}"
    try:
        cfg = get(state)
        return (cfg.validate() if cfg else None), ""
    except (ConfigError, TypeError) as err:
        return None, f"The working settings are not valid: {err}"


def hand_to_setup(cfg: RunConfig, state: MutableMapping | None = None) -> None:
    """Make `cfg` the working settings (this session and kept on the server); Training setup re-seeds from it."""
    state = _state(state)
    try:
        before = get_or_default(state)
    except (ConfigError, TypeError):  # working settings that no longer parse: all of these are new
        before = None
    changed = schema.differences(before, cfg, SETTINGS.values()) if before is not None else []
    state[HANDED] = (
        ("Settings applied. Changed: " + "; ".join(changed) + ".")
        if changed
        else "Settings applied: nothing changed."
    )
    put(cfg, state)
    state[SOURCE_CONFIG], state[APPLY_SETTINGS] = cfg.source, True
    try:
        settings_store.save(
            common.settings_user(),
            settings_store.Saved(
                cfg, cfg.source, str(state.get(LR_JOB) or ""), tuple(state.get(CHECKS_RAN) or ())
            ),
        )
    except OSError:  # a full or read-only disk: the settings still reach the setup page in this session
        pass


def window() -> Window | None:
    """The DICOM window of the working settings (None: each file's own window)."""
    try:
        cfg = get()
    except (ConfigError, TypeError):
        return None
    return cfg.data.window if cfg else None


def carry_window(win: Window | None) -> None:
    """Make a DICOM window part of the working settings, so training (and its model) decode with it."""
    if win == window():
        return
    try:
        cfg = get_or_default()
    except (ConfigError, TypeError):  # settings that no longer fit: the setup page says so
        return
    cfg.data.window = win
    put(cfg)


# ---------------------------------------------------------------- kept on the server per user


def explorer_state(src: SourceConfig) -> dict[str, Any]:
    """Dataset explorer widget values (by key) that show `src` (sample forms, folders, CSVs, DICOM folders)."""
    root = common.sample_root()
    sample = {
        str(samples.labels_csv(root)): "sample_csv",
        str(samples.folder_root(root)): "sample",
        str(samples.dicom_root(root)): "sample_dicom",
    }
    choice = sample.get(src.csv_path if src.kind == "csv" else src.root)
    if choice:
        return {"src_choice": choice}
    state: dict[str, Any] = {"src_choice": src.kind if src.kind in ("folder", "csv", "dicom") else "folder"}
    if src.kind == "csv":
        state.update(
            {
                "src_pathcol": src.path_col,
                "src_labelcol": src.label_col,
                "src_groupcol": src.group_col,
                "src_splitcol": src.split_col,
            }
        )
        state.update(
            {"src_csv_pick": src.csv_path}
            if hosting.hosted()
            else {"src_csv": src.csv_path, "src_csv_root": src.root}
        )
    else:
        state["src_root_pick" if hosting.hosted() else "src_root"] = src.root
        if src.kind == "dicom":
            state["src_gtag"] = src.group_tag
            state["src_dcm_labels"] = "csv" if src.csv_path else "tag" if src.label_tag else "folders"
            state.update(
                {
                    "src_dcm_csv_pick" if hosting.hosted() else "src_dcm_csv": src.csv_path,
                    "src_dcm_pathcol": src.path_col,
                    "src_dcm_labelcol": src.label_col,
                }
                if src.csv_path
                else {"src_ltag": src.label_tag}
                if src.label_tag
                else {}
            )
    return state


def restore(state: MutableMapping | None = None) -> bool:
    """Once per browser session: put this user's kept settings (config, source, LR finder) back; True if any."""
    state = _state(state)
    if state.get(RESTORED):
        return False
    state[RESTORED] = True
    if RUN_CONFIG in state or SOURCE_CONFIG in state:
        return False
    saved = settings_store.load(common.settings_user())
    if saved.run_config is not None:
        put(saved.run_config, state)
    if saved.source is not None:
        state[SOURCE_CONFIG] = saved.source
        for key, value in explorer_state(saved.source).items():
            state.setdefault(key, value)
    if saved.lr_job:
        state[LR_JOB] = saved.lr_job
    state[CHECKS_RAN] = list(saved.checked)  # checks run before the reload show their warnings again
    return saved.run_config is not None or saved.source is not None


def persist(state: MutableMapping | None = None) -> None:
    """Keep the working settings, the chosen source and the last LR finder on the server (when they changed)."""
    state = _state(state)
    carried, src = state.get(RUN_CONFIG), state.get(SOURCE_CONFIG)
    saved = settings_store.Saved(
        get(state),
        src if isinstance(src, SourceConfig) else None,
        str(state.get(LR_JOB) or ""),
        tuple(state.get(CHECKS_RAN) or ()),
    )
    signature = json.dumps(
        [carried, to_dict(src) if saved.source else None, saved.lr_job, saved.checked], sort_keys=True
    )
    if state.get(KEPT) == signature:
        return
    try:
        settings_store.save(common.settings_user(), saved)
    except OSError:  # a full or read-only disk must not break the page; the settings stay in this session
        return
    state[KEPT] = signature


# ---------------------------------------------------------------- a setting's widget


_DRAW = {
    "number": "number_input",
    "slider": "slider",
    "select": "selectbox",
    "radio": "radio",
    "toggle": "toggle",
    "checkbox": "checkbox",
    "text": "text_input",
}


def widget(where: Any, name: str, **kw: Any) -> Any:
    """Draw a setting's widget as declared beside its field (kind, label, bounds, choices), under its state key."""
    s = SETTINGS[name]
    m = s.meta
    args: list[Any] = [m.label]
    if m.widget in ("number", "slider"):
        lo, hi = (m.lo, m.hi) if m.lo is not None else (m.range or (None, None))
        args += [lo, hi]
        if m.step is not None:
            kw.setdefault("step", m.step)
    elif m.widget in ("select", "radio"):
        args.append(list(s.options()))
    return getattr(where, _DRAW[m.widget])(*args, key=s.state_key, **kw)
