"""Corrections of labels, shared by the views that offer them (the data checks of a single-label source or run,
ui.checks_view; the errors of a multi-label or ordinal run, ui.task_errors_view): pick items, exclude them or change
their label (core.evaluation.relabel: by task type), collect the decisions in the session, and write them with
core.evaluation.checks.write_corrections as a new labels CSV that becomes the data source (the user's files are
never changed).

Session state: "chk_corrections" ({"source": SourceConfig as dict, "changes": {path: {"new_label", "why"}}}) and
"chk_written" (the last set written).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pandas as pd
import streamlit as st

from core.base import paths
from core.base.config import RunConfig, SourceConfig, from_dict
from core.data import labels as lab
from core.data.items import SourceError
from core.evaluation import checks, relabel
from core.runs import jobs
from core.runs.rundir import RunFolder
from core.web import hosting, uploads
from ui import common
from ui import working_settings as ws

CORR, WRITTEN = "chk_corrections", "chk_written"


def run_config(job: jobs.Job) -> RunConfig | None:
    """The settings a run trained with (its config.json); None when they cannot be read."""
    try:
        return from_dict(RunConfig, json.loads(RunFolder(job.run_dir).config.read_text()))
    except (OSError, ValueError):
        return None


def run_source(job: jobs.Job) -> SourceConfig | None:
    """The data source a run trained on (from its config.json)."""
    cfg = run_config(job)
    return cfg.source if cfg is not None else None


def changes(cfg: SourceConfig) -> dict[str, dict[str, str]]:
    """The corrections collected for this source in this session (another source starts afresh)."""
    state = st.session_state.get(CORR)
    if not state or state["source"] != dataclasses.asdict(cfg):
        state = {"source": dataclasses.asdict(cfg), "changes": {}}
        st.session_state[CORR] = state
    return state["changes"]


def _shown_label(label: str) -> str:
    """A label in words (a multi-label set: its findings joined by commas)."""
    return str(label).replace(lab.SEP, ", ")


def action_picker(
    rows: pd.DataFrame,
    classes: list[str],
    cfg: SourceConfig,
    key: str,
    why: str,
    task: str = "single",
    default: str = relabel.EXCLUDE,
) -> None:
    """Choose items of a view and exclude them or change their label (collected, not yet written): another class,
    another grade, or (multi-label) a finding added or removed, applied to the label collected so far; `default`:
    the action offered first (core.evaluation.relabel.actions)."""
    options = rows["path"].astype(str).tolist()
    labels = dict(zip(options, rows["label"].astype(str)))
    c1, c2, c3 = st.columns([3, 2, 2])
    chosen = c1.multiselect(
        "Images",
        options,
        key=f"{key}_items",
        format_func=lambda p: f"{Path(p).name} ({_shown_label(labels[p])})",
    )
    acts = relabel.actions(task, classes)
    action = c2.selectbox(
        "Action", acts, index=acts.index(default) if default in acts else 0, key=f"{key}_action"
    )
    reason = c3.text_input("Why", why, key=f"{key}_why")
    if st.button("Add to corrections", key=f"{key}_add", disabled=not chosen):
        collected = changes(cfg)
        for p in chosen:
            before = collected.get(p, {}).get("new_label", labels[p])
            before = labels[p] if before == relabel.EXCLUDED else before  # a relabel takes an exclusion back
            collected[p] = {"new_label": relabel.apply(action, before), "why": reason.strip() or why}
        st.rerun()


def corrections_panel(cfg: SourceConfig, run: RunConfig | None = None) -> None:
    """The collected corrections; write them as a new labels CSV in the app home and use it as the source (with
    `run`: the run's settings on that source, so its task type and grade order carry to the setup page)."""
    collected = changes(cfg)
    if not collected:
        return
    st.subheader(f"Corrections ({len(collected)})")
    st.caption(
        "Your images and label files are never changed: the corrections become a new labels CSV in the app's "
        "folder, which you can then train on."
    )
    table = pd.DataFrame([{"path": p, **c} for p, c in collected.items()])
    st.dataframe(
        table.assign(
            path=[common.shown_path(p) for p in table["path"]], new_label=table["new_label"].map(_shown_label)
        ),
        hide_index=True,
        width="stretch",
    )
    c1, c2, c3 = st.columns([2, 1, 1])
    name = c1.text_input("Name of the corrected set", key="chk_corr_name")
    if c3.button("Forget these corrections", key="chk_corr_clear"):
        collected.clear()
        st.rerun()
    if c2.button("Write the corrected labels CSV", key="chk_corr_write"):
        _write(cfg, collected, name, run)
    done = st.session_state.get(WRITTEN)
    if done:
        st.success(
            f"Wrote {common.shown_path(done['csv'])} ({done['n']} images; {done['changed']} changed or left "
            "out, listed in changes.csv). It is now the data source of the Training setup page."
        )


def _write(cfg: SourceConfig, collected: dict[str, dict[str, str]], name: str, run: RunConfig | None) -> None:
    """Write the corrected table (in the source's label format) and make it the session's data source."""
    try:
        ds = common.load_dataset(cfg)
        folder, src = checks.write_corrections(
            ds.items,
            [checks.Correction(p, c["new_label"], c["why"]) for p, c in collected.items()],
            name,
            base=_corrections_base(),
            source=cfg,
        )
    except (ValueError, OSError, SourceError, uploads.UploadError) as err:
        st.error(f"Cannot write the corrections: {err}")
        return
    new = SourceConfig(**src)
    if run is not None:  # the run's settings (task type, grade order, ...) on the corrected source
        ws.hand_to_setup(dataclasses.replace(run, source=new, name=""))
    else:
        ws.set_source(new)
        ws.drop()  # the setup page rebuilds its settings for the new source
    n = len(pd.read_csv(folder / checks.CORRECTED_LABELS))
    st.session_state[WRITTEN] = {"csv": src["csv_path"], "n": n, "changed": len(collected)}


def _corrections_base() -> Path | None:
    """Where corrected sets go: the app home; hosted: this session's uploads (so the session may read them)."""
    return uploads.upload_dir(common.owner_id()) / paths.CORRECTIONS_DIR if hosting.hosted() else None
