"""Experiment (sweep) widgets: start a sweep from the working settings, pick an experiment, watch its trials
live (polled fragment), compare them (table with CIs, charts, curves), cancel, and reuse a trial's settings.

Only ids live in session state ("ex_pick": the experiment shown); everything else is read back from the
experiment's record and its trials' run folders and job rows.
"""

from __future__ import annotations

import math
import time

import pandas as pd
import streamlit as st

from core.base import fmt, schema
from core.base.config import ConfigError, RunConfig
from core.evaluation import learning_curve, plots
from core.runs import jobs
from core.train import experiments, sweep_report
from core.web import hosting
from ui import common
from ui import working_settings as ws

PICK = "ex_pick"
SETUP_PAGE = "pages/2_setup.py"
DEFAULT_SWEPT = ["lr"]


# ---------------------------------------------------------------- plain helpers


def base_config() -> tuple[RunConfig | None, str]:
    """The working settings of Training setup (kept per user), else the setup defaults; with a note."""
    cfg, why = ws.validate()
    if cfg is not None:
        return cfg, "the working settings of Training setup"
    if why:
        return None, why
    return ws.get_or_default(), "the default settings (Training setup not opened yet)"


def suggested_values(cfg: RunConfig, name: str) -> str:
    """A starting text for a setting's values, around the base config's value."""
    d, t = cfg.data, cfg.train
    return {
        "epochs": f"{t.epochs},{t.epochs * 2}",
        "lr": f"{t.lr / 3:.2g},{t.lr * 3:.2g}" if t.lr else "1e-3,1e-2",
        "wd": "1e-4:1e-1:log3",
        "img_size": f"{max(16, d.img_size // 2)},{d.img_size}",
        "batch_size": f"{max(1, d.batch_size // 2)},{d.batch_size}",
        "arch": f"{t.arch},resnet34",
        "aug": "none,default,fastai",
        "aug_strength": "0.5,1,2",
        "imbalance": "none,weighted_loss,oversample",
        "train_fraction": "0.25,0.5,1",
        "seed": "1,2,3",
    }.get(name) or _current(cfg, name)


def _current(cfg: RunConfig, name: str) -> str:
    """A setting's choices, else the base config's value (a setting without a suggestion of its own)."""
    s = experiments.SETTINGS[name]
    return ",".join(s.options()) if s.meta.choices else str(schema.get(cfg, s.path)) if s.path else ""


def fmt_metric(row: pd.Series, metric: str) -> str:
    """'0.850 (0.800-0.900)' or '' when the trial has no result."""
    value = row[metric]
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return f"{value:.3f} ({row['ci_lo']:.3f}-{row['ci_hi']:.3f})"


TRIAL_COLUMNS = {  # long texts get bounded columns (the full text on hover), so the table fits the page
    "best": st.column_config.TextColumn(width="small"),
    "trial": st.column_config.NumberColumn(width="small"),
    "name": st.column_config.TextColumn(width="medium"),
    "progress": st.column_config.TextColumn(width="medium"),
    "note": st.column_config.TextColumn(width="medium"),
    "job": st.column_config.TextColumn(width="small"),
}


def shown_table(table: pd.DataFrame, metric: str, settings: list[str]) -> pd.DataFrame:
    """The trial table as the page shows it: best starred, metric with CI, duration readable."""
    return pd.DataFrame(
        {
            "best": ["★" if b else "" for b in table["best"]],
            "trial": table["trial"],
            "name": table["name"],
            "status": table["status"],
            **{s: table[s].astype(str) for s in settings},
            f"valid {metric} (95% CI)": [fmt_metric(r, metric) for _, r in table.iterrows()],
            "progress": table["progress"],
            "duration": ["" if math.isnan(d) else fmt.seconds(d) for d in table["duration_s"]],
            "note": table["note"].fillna(""),
            "job": table["job"],
        }
    )


def experiment_label(record: dict) -> str:
    """'name · dataset · status · n trials' for the picker."""
    dataset = experiments.dataset_text(experiments.base_of(record))
    return f"{record['name']} · {dataset} · {record['status']} · {len(record['trials'])} trials"


# ---------------------------------------------------------------- start a sweep


def spec_from_state(chosen: list[str]) -> experiments.SweepSpec:
    """The SweepSpec the form's widgets describe."""
    state = st.session_state
    axes = [f"{name}={state.get(f'ex_val_{name}', '')}" for name in chosen]
    return experiments.SweepSpec(
        axes=axes,
        mode=state.get("ex_mode", "grid"),
        trials=int(state.get("ex_trials", 0)),
        budget_min=float(state.get("ex_budget", 0.0)),
        metric=state.get("ex_metric", experiments.METRICS[0]),
        name=str(state.get("ex_name", "")).strip(),
        pruner=state.get("ex_pruner", "none"),
        prune_epoch=int(state.get("ex_prune_epoch", 1)),
        parallel=int(state.get("ex_parallel", 0)),
    )


def start_section() -> None:
    """The sweep form over the working settings; Start sweep queues one training job per trial."""
    cfg, note = base_config()
    if cfg is None:
        st.warning(note)
        common.page_link(SETUP_PAGE, "Training setup", icon=":material/tune:")
        return
    st.caption(
        f"Every trial starts from {note}: {experiments.dataset_text(cfg)}, {cfg.train.arch}, "
        f"{cfg.data.img_size} px, {fmt.count(cfg.train.epochs, 'epoch')}; only the settings chosen here vary."
    )
    chosen = st.multiselect(
        "Settings to sweep",
        list(experiments.SETTINGS),
        default=DEFAULT_SWEPT,
        key="ex_settings",
        format_func=lambda n: f"{n} - {experiments.SETTINGS[n].meta.sweep}",
    )
    for name in chosen:
        st.text_input(
            f"Values of {name}",
            value=suggested_values(cfg, name),
            key=f"ex_val_{name}",
            help=experiments.SYNTAX,
        )
    search_options()
    st.text_input("Experiment name", key="ex_name", placeholder="e.g. learning rate vs augmentation")
    spec = spec_from_state(chosen)
    try:
        n = experiments.check(spec, cfg)  # every trial's config must be valid before Start is offered
        st.caption(f"{n} trial(s), each an ordinary training run; {PACE[spec.mode]}")
    except ConfigError as err:
        st.warning(str(err))
        n = 0
    plan = n > 0
    if st.button("Start sweep", key="ex_start", type="primary", disabled=not plan):
        start(spec, cfg)


PACE = {
    "grid": "all queued at once.",
    "random": "all queued at once.",
    "tpe": "each asked for from the results so far when a trial ends (no page needs to stay open).",
}


def search_options() -> None:
    """Search mode, trial and time budgets, ranking metric, pruning and (model-based) parallel trials."""
    c1, c2, c3, c4 = st.columns(4)
    c1.radio(
        "Search",
        experiments.MODES,
        key="ex_mode",
        horizontal=True,
        help="grid: every combination; random: seeded draws; tpe: model-based (Optuna's TPE sampler)",
    )
    c2.number_input(
        f"Trials (0 = every grid point, {experiments.DEFAULT_RANDOM_TRIALS} otherwise)",
        0,
        experiments.max_trials(),
        key="ex_trials",
    )
    c3.number_input("Time budget (minutes, 0 = none)", 0.0, 10_000.0, step=5.0, key="ex_budget")
    c4.selectbox("Rank trials by", experiments.METRICS, key="ex_metric")
    c5, c6, c7 = st.columns(3)
    c5.selectbox(
        "Stop poor trials early",
        ("none", "median", "asha"),
        key="ex_pruner",
        help="median: below the median of finished trials at the same epoch; asha: not in the top third at "
        "epochs 1, 3, 9, ... after the first one (successive halving). The trial stops itself.",
    )
    c6.number_input("Pruning from epoch", 1, 1000, key="ex_prune_epoch")
    c7.number_input("Trials at once (tpe, 0 = job slots)", 0, 64, key="ex_parallel")


def start(spec: experiments.SweepSpec, cfg: RunConfig) -> None:
    """Check paths (hosted), queue the trials for this session's owner, show the new experiment."""
    try:
        common.check_paths(cfg)
        record = experiments.start(spec, cfg, owner=common.owner_id(), store=common.job_store())
    except (ValueError, OSError) as err:
        st.error(f"Could not start the sweep: {err}")
        return
    st.session_state[PICK] = record["id"]
    st.rerun()


# ---------------------------------------------------------------- pick and watch


def experiments_section() -> str | None:
    """The experiments table and the picker; returns the chosen experiment id."""
    store = common.job_store()
    owner = common.owner_id() if hosting.hosted() else None
    records = {i: experiments.refresh(i, store) for i in experiments.list_ids(owner)}
    if not records:
        st.info("No experiments yet. Choose settings above and press **Start sweep**.")
        return None
    st.dataframe(
        pd.DataFrame(
            [
                {
                    "id": i,
                    "name": r["name"],
                    "dataset": experiments.dataset_text(experiments.base_of(r)),
                    "status": r["status"],
                    "trials": len(r["trials"]),
                    "started": time.strftime("%Y-%m-%d %H:%M", time.localtime(r["created"])),
                }
                for i, r in records.items()
            ]
        ),
        hide_index=True,
        width="stretch",
    )
    ids = list(records)
    if st.session_state.get(PICK) not in ids:
        st.session_state[PICK] = ids[0]
    return st.selectbox("Show experiment", ids, key=PICK, format_func=lambda i: f"{i} · {records[i]['name']}")


def watch(exp_id: str) -> None:
    """The chosen experiment: cancel controls and a live panel while trials run, the comparison, reuse."""
    store = common.job_store()
    record = experiments.refresh(exp_id, store)
    st.subheader(f"Experiment {record['name']}")
    spec = experiments.spec_of(record)
    st.caption(
        f"{experiments.dataset_text(experiments.base_of(record))} · {spec.mode} search over "
        f"{', '.join(spec.axes)} · ranked by validation {spec.metric} (the test set is for the chosen model only)"
    )
    if record["status"] in jobs.ACTIVE:
        live_panel(exp_id)
    else:
        trials_panel(record)
    use_section(record)
    if record["status"] not in jobs.ACTIVE:
        delete_offer(record)


def delete_offer(record: dict) -> None:
    """**Delete experiment** (asks first): its record and every trial's run; hosted, the owner's only."""
    if hosting.hosted() and record.get("owner") != common.owner_id():
        return
    exp_id = record["id"]
    what = f"experiment {record['name']} and its {len(record['trials'])} trial run(s)"
    if common.delete_button("Delete experiment", what, f"ex_delete_{exp_id}", lambda: _delete(exp_id)):
        st.session_state.pop(PICK, None)
        st.rerun()


def _delete(exp_id: str) -> None:
    """Delete an experiment (refused while a trial is queued or running)."""
    experiments.delete(exp_id, common.job_store())


def cancel_controls(record: dict) -> None:
    """Cancel one trial or all of them."""
    states = experiments.child_jobs(record, common.job_store())
    active = [t for t in record["trials"] if (j := states.get(t["job"])) and j.active]
    c1, c2, c3 = st.columns([2, 1, 1])
    names = {t["job"]: t["name"] for t in active}
    pick = c1.selectbox("Trial", list(names), format_func=names.get, key="ex_cancel_pick") if names else None
    if c2.button("Cancel trial", key="ex_cancel_one", disabled=pick is None):
        experiments.cancel(record["id"], pick, store=common.job_store())
        st.rerun()
    if c3.button("Cancel all", key="ex_cancel_all"):
        n = len(experiments.cancel(record["id"], store=common.job_store()))
        st.toast(f"Cancel requested for {n} trial(s).")
        st.rerun()


@st.fragment(run_every=2)
def live_panel(exp_id: str) -> None:
    """Polled every 2 s: status, the trial table and charts; a full rerun once no trial is queued or running."""
    record = experiments.refresh(exp_id, common.job_store())
    if record["status"] not in jobs.ACTIVE:
        st.rerun()
    cancel_controls(record)  # redrawn with the panel: the picker offers only trials still queued or running
    trials_panel(record)


def trials_panel(record: dict) -> None:
    """Status counts, the trial table with the best trial marked, metric-vs-setting charts and curves."""
    store = common.job_store()
    metric = experiments.spec_of(record).metric
    counts = ", ".join(f"{n} {s}" for s, n in record["counts"].items())
    st.markdown(f"**Status: {record['status']}** ({counts})")
    table = experiments.trial_table(record, store)
    settings = experiments.varying(record)
    st.dataframe(
        shown_table(table, metric, settings), hide_index=True, width="stretch", column_config=TRIAL_COLUMNS
    )
    if table[metric].notna().any():
        cols = st.columns(min(2, len(settings)))
        for i, s in enumerate(settings):
            cols[i % len(cols)].plotly_chart(plots.sweep_metric(table, s, metric), key=f"ex_vs_{s}")
        if len(settings) > 2:
            st.plotly_chart(plots.sweep_parallel(table, settings, metric), key="ex_parallel")
    curves = experiments.trial_curves(record)
    if len(curves):
        st.plotly_chart(plots.sweep_curves(curves, metric), key="ex_curves")
    mattered_section(record, table)
    forecast_section(table, metric)


@st.cache_data(max_entries=16, show_spinner=False)
def _forecast(points: pd.DataFrame, metric: str) -> dict | None:
    """The learning-curve forecast of a sweep's finished trials (cached: the live panel redraws every 2 s)."""
    return learning_curve.from_trials(points, metric)


def forecast_section(table: pd.DataFrame, metric: str) -> None:
    """A train-fraction sweep: the learning curve fitted to its trials and the forecast at 2x / 4x the data."""
    if "train_fraction" not in table:
        return
    fc = _forecast(table[["train_fraction", "status", metric]], metric)
    if fc is None:
        return
    st.markdown("**How much more data would help (learning curve)**")
    if "refused" in fc:
        st.caption(f"No forecast yet: {fc['refused']}.")
        return
    points = learning_curve.points(table, metric)
    st.plotly_chart(plots.learning_curve(fc, points), key="ex_learning_curve")
    rows = [
        f"{e['multiple']:g}x the data: {e['value']:.3f} (95 % range {e['lo']:.3f} to {e['hi']:.3f})"
        for e in fc["forecast"]
    ]
    st.caption(
        f"valid {metric}, fitted to {fc['n_points']} trials at {len(fc['fractions'])} fractions: "
        + "; ".join(rows)
        + f"; ceiling a = {fc['ceiling']:.3f}. "
        + fc["caveat"]
    )


def mattered_section(record: dict, table: pd.DataFrame) -> None:
    """What mattered: importance of each swept setting (with its trust note), a contour of the two most
    important numeric settings, and the best trial's settings beside the base settings."""
    if not (table["status"] == "done").any():
        return
    st.markdown("**What mattered**")
    metric = experiments.spec_of(record).metric
    imp = sweep_report.importance(record, common.job_store())
    if imp["values"]:
        st.plotly_chart(plots.sweep_importance(imp["values"], imp["note"]), key="ex_importance")
    elif imp["note"]:
        st.caption(imp["note"])
    ranked = sorted(imp["values"], key=imp["values"].get, reverse=True) or experiments.varying(record)
    numeric = [n for n in ranked if n in table and pd.api.types.is_numeric_dtype(table[n])]
    if len(numeric) >= 2:
        surface = sweep_report.contour_surface(table, numeric[0], numeric[1], metric)
        st.plotly_chart(plots.sweep_contour(table, numeric[0], numeric[1], metric, surface), key="ex_contour")
    rows = sweep_report.best_vs_base(record, experiments.best_trial(table, metric))
    if rows:
        st.caption("The best trial's settings beside the base settings every trial started from")
        st.dataframe(pd.DataFrame(rows).astype(str), hide_index=True, width="stretch")


def use_section(record: dict) -> None:
    """'Use these settings': a finished trial's config becomes the working settings of Training setup."""
    store = common.job_store()
    states = experiments.child_jobs(record, store)
    done = [t for t in record["trials"] if (j := states.get(t["job"])) and j.status == "done"]
    if not done:
        return
    best = experiments.best_trial(experiments.trial_table(record, store), experiments.spec_of(record).metric)
    ids = [t["job"] for t in done]
    names = {t["job"]: t["name"] + (" (best)" if t["job"] == best else "") for t in done}
    c1, c2 = st.columns([3, 1])
    pick = c1.selectbox(
        "Trial to reuse",
        ids,
        index=ids.index(best) if best in ids else 0,
        format_func=names.get,
        key="ex_use_pick",
    )
    if c2.button("Use these settings", key="ex_use", type="primary"):
        use_settings(experiments.trial_config(record, pick))


def use_settings(cfg: RunConfig) -> None:
    """Make `cfg` the working settings (session and kept on the server) and open Training setup."""
    ws.hand_to_setup(cfg)
    st.switch_page(SETUP_PAGE)
