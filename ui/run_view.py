"""Training run widgets: start a job, the runs table, live progress (polled fragment), curves, final metrics.

Only job ids live in session state: "train_job_id" (the run this session started last) and "tr_pick"
(the run being watched). Everything else is read back from the job store and the run folder.
"""

from __future__ import annotations

import time
from pathlib import Path

import pandas as pd
import streamlit as st

from core.base import eta, fmt
from core.base.config import SourceConfig, TaskConfig, to_dict
from core.data import labels as lab
from core.evaluation import bytask, evaluate
from core.runs import executors, jobs
from core.runs.progress import ProgressRecord
from core.runs.rundir import RunFolder
from core.web import hosting
from ui import common
from ui import working_settings as ws
from ui.common import PICK, TRAIN_JOB, best_epochs, config_caption, curves, lr_find_figure  # shared

REAP_EVERY_S = 10.0
_last_reap = [0.0]  # process-wide throttle for reaping dead workers (no user data)


# ---------------------------------------------------------------- plain helpers


def maybe_reap(store: jobs.JobStore) -> None:
    """Mark runs whose worker died and restart supervisors for queued jobs (a supervisor killed while jobs or
    sweep trials were queued), at most every REAP_EVERY_S seconds per server process."""
    if time.time() - _last_reap[0] >= REAP_EVERY_S:
        _last_reap[0] = time.time()
        jobs.revive(store, executors.executor())


def runs_frame(job_list: list[jobs.Job], owner: str) -> pd.DataFrame:
    """The runs table: id, name, dataset, kind, status, created, yours, error."""
    rows = [
        {
            "id": j.id,
            "name": common.run_name(j)[0],
            "dataset": common.run_name(j)[1],
            "kind": j.kind,
            "status": j.status,
            "created": fmt.timestamp(j.created),
            "yours": j.owner == owner,
            "error": ((hosting.public_error(j.error) or "details hidden") if hosting.hosted() else j.error)
            if j.error
            else "",
        }
        for j in job_list
    ]
    return pd.DataFrame(
        rows, columns=["id", "name", "dataset", "kind", "status", "created", "yours", "error"]
    )


def default_pick(job_list: list[jobs.Job], owner: str, attached: str | None) -> str | None:
    """Which run to watch: the one this session started, else this owner's latest active one, else its newest.

    None when this owner has no run here: another session's run is never picked for it (local mode lists
    everyone's runs, and the user chooses one).
    """
    ids = [j.id for j in job_list]
    if attached in ids:
        return attached
    mine = [j for j in job_list if j.owner == owner]
    return next((j.id for j in mine if j.active), mine[0].id if mine else None)


def metrics_tables(summary: dict) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """Final metrics as tables: (valid/test rows) or (k-fold mean ± sd per metric, per-fold rows)."""
    m = summary.get("metrics", {})
    if summary.get("type") == "kfold":
        ms = m.get("mean_sd", {})
        main = pd.DataFrame(
            [
                {
                    "metric": k,
                    "mean": v.get("mean"),
                    "sd": v.get("sd"),
                    "mean ± sd": fmt.mean_sd(v.get("mean"), v.get("sd")),
                }
                for k, v in ms.items()
            ]
        )
        folds = pd.DataFrame(m.get("per_fold", []))
        if m.get("pooled_oof"):
            folds = pd.concat(
                [
                    folds.assign(fold=folds["fold"].astype(int).add(1).astype(str))
                    if "fold" in folds
                    else folds,
                    pd.DataFrame([{"fold": "pooled (out-of-fold)", **m["pooled_oof"]}]),
                ],
                ignore_index=True,
            )  # folds numbered 1..k as in the progress bar; one column type
        return main, folds
    order = sorted(
        (k for k, v in m.items() if isinstance(v, dict)), key=lambda k: k != "test"
    )  # test = headline
    return pd.DataFrame([{"split": "test (headline)" if k == "test" else k, **m[k]} for k in order]), None


# ---------------------------------------------------------------- widgets


def carried_config() -> tuple[dict | None, str]:
    """The config from the Training setup page (validated), or the default one; with a note for the user."""
    cfg, why = ws.validate()
    if cfg is None and why:
        return None, why
    note = (
        ""
        if cfg is not None
        else "Default settings (the Training setup page has not been opened in this session)."
    )
    cfg = cfg if cfg is not None else ws.get_or_default()
    refused = untrainable(cfg.source, cfg.data.task)
    return (None, refused) if refused else (to_dict(cfg), note)


def untrainable(src: SourceConfig, task: TaskConfig | None = None) -> str:
    """Why training on this source would be refused (no usable images, one class...), '' when it can train;
    findings or grades count as the classes of a multi-label or ordinal task (core.data.labels.trainable_reasons)."""
    task = task or TaskConfig()
    try:
        reasons = lab.trainable_reasons(common.load_dataset(src), task.type, task.order)
    except (ValueError, OSError) as err:  # SourceError, a hosted refusal
        return f"The data source cannot be read: {err}"
    return (
        f"Training would be refused: {'; '.join(reasons)}. Choose other data on the Dataset explorer."
        if reasons
        else ""
    )


def start_section() -> None:
    """The config in use and the Start training button (submits a "train" job; stores its id)."""
    cfg, note = carried_config()
    if cfg is None:
        st.error(note)
    else:
        st.caption(("" if not note else note + " ") + "Settings: " + config_caption(cfg))
    attached = (
        common.job_store().get(st.session_state[TRAIN_JOB]) if st.session_state.get(TRAIN_JOB) else None
    )
    if attached is not None and attached.active:
        st.caption(f"Your run {attached.id} is still {attached.status}; another run would queue behind it.")
    if st.button("Start training", key="tr_start", type="primary", disabled=cfg is None):
        job = common.submit_job("train", {"config": cfg})
        if job is not None:
            st.session_state[TRAIN_JOB] = job.id
            st.session_state[PICK] = job.id
            st.toast(f"Run {job.id} queued")


def runs_section(owner: str) -> str | None:
    """The runs table and the choice of run to watch; returns the chosen job id."""
    job_list = common.visible_jobs()
    if not job_list:
        st.info("No runs yet. Press **Start training** to queue one.")
        return None
    common.polled(runs_table, any(j.active for j in job_list))(owner)
    ids = [j.id for j in job_list]
    if st.session_state.get(PICK) not in ids:
        pick = default_pick(job_list, owner, st.session_state.get(TRAIN_JOB))
        if pick is None:
            st.session_state.pop(PICK, None)
        else:
            st.session_state[PICK] = pick
    label = {
        j.id: common.job_label(j, j.kind) for j in job_list
    }  # status lives in the table (a keyed label would go stale)
    chosen = st.selectbox(
        "Watch run", ids, key=PICK, index=None, placeholder="Choose a run to watch", format_func=label.get
    )
    if chosen is None:
        st.caption(
            "No run here was started in this browser session: choose one above to watch it, "
            "or press **Start training**."
        )
    return chosen


def runs_table(owner: str) -> None:
    """The runs table, read now (polled while runs are queued or running: statuses change under it)."""
    st.dataframe(
        runs_frame(common.visible_jobs(), owner),
        hide_index=True,
        width="stretch",
        column_config={"yours": st.column_config.CheckboxColumn("yours")},
    )


def watch(job_id: str) -> None:
    """The chosen run: live (polled) while queued or running, the outcome afterwards."""
    store = common.job_store()
    job = store.get(job_id)
    if job is None:
        st.warning(f"Run {job_id} no longer exists.")
        return
    st.subheader(f"Run {job.id} ({job.kind})")
    if job.active:
        if st.button("Cancel run", key="tr_cancel"):
            job = store.cancel(job.id)
            st.toast(
                "Cancel requested: the run stops after the current batch." if job.active else "Run cancelled."
            )
            st.rerun()  # the start caption, the table and this panel all show the new status
    if job.active:
        live_panel(job.id)
    else:
        outcome(job)
        delete_offer(job)


def delete_offer(job: jobs.Job) -> None:
    """**Delete run** (asks first) for an ended run this session owns; a fold or a sweep trial goes with its parent."""
    if not common.own_run(job):
        return
    exp = (job.params or {}).get("experiment")
    if job.parent_id or exp:
        st.caption(
            f"This run is a fold of run {job.parent_id}: delete that run to remove it."
            if job.parent_id
            else f"This run is a trial of experiment {exp}: delete it on the Experiments page."
        )
        return
    if common.delete_button("Delete run", f"run {job.id}", f"tr_delete_{job.id}", lambda: _delete(job.id)):
        st.session_state.pop(PICK, None)
        st.rerun()


def _delete(job_id: str) -> None:
    """Delete a run (folder and job rows; core.runs.removal refuses an active one)."""
    from core.runs import removal

    removal.delete(job_id, common.job_store())


@st.fragment(run_every=common.LIVE_EVERY_S)
def live_panel(job_id: str) -> None:
    """Polled every 2 s: status, progress bars, ETA and curves; a full rerun once the job ends."""
    store = common.job_store()
    maybe_reap(store)
    job = store.get(job_id)
    if job is None or not job.active:
        st.rerun()
    prog = ProgressRecord.read(job.run_dir)
    progress_panel(job, prog)
    curves(job, best_epochs({}, prog))


def queue_position(job: jobs.Job) -> tuple[int, int]:
    """(runs queued before this one, runs running now) - every user's: the queue is shared."""
    listed = common.job_store().list(limit=1000)
    queued = [j for j in listed if j.status == "queued"]
    ahead = sum(1 for j in queued if (j.created, j.id) < (job.created, job.id))
    return ahead, sum(1 for j in listed if j.status == "running")


def progress_panel(job: jobs.Job, prog: ProgressRecord) -> None:
    """Phase, fold/epoch/batch bars, ETA and the latest losses."""
    if job.status == "queued":
        ahead, running = queue_position(job)
        if ahead or running:
            st.info(
                f"Queued: {ahead + running} run(s) ahead of this one ({running} running, {ahead} queued). "
                "It starts when a worker is free."
            )
        else:
            st.info("Queued: starting a worker...")
        return
    if job.cancel_requested:
        st.warning("Cancel requested: stopping after the current batch...")
    if job.waiting:
        folds_panel(job)
        return
    st.markdown(f"**Status:** running · **phase:** {common.phase_text(prog)}")
    n_folds, fold = prog.n_folds, prog.fold
    if n_folds and fold is not None:
        st.progress(min(1.0, (prog.folds_done or fold) / n_folds), text=f"Fold {fold + 1} / {n_folds}")
    n_batches, batch = prog.n_batches, prog.batch
    if job.kind != "lr_find" and prog.n_epochs:
        n_epochs, epoch = prog.n_epochs, prog.epoch
        frac = (epoch + (batch / n_batches if n_batches else 0)) / max(1, n_epochs)
        st.progress(min(1.0, frac), text=f"Epoch {min(epoch + 1, n_epochs)} / {n_epochs}")
    if n_batches:
        st.progress(min(1.0, batch / n_batches), text=f"Batch {batch} / {n_batches}")
    cols = st.columns(4)
    left = prog.eta_s
    cols[0].metric(
        "Time left" + (" (this fold)" if n_folds else ""),
        fmt.seconds(left) if left is not None else "estimating",
        help=None if left is not None else "Estimated once the first batch has been timed.",
    )
    cols[1].metric("Elapsed" + (" (this fold)" if n_folds else ""), fmt.seconds(common.elapsed_s(job, prog)))
    if n_folds:
        job_elapsed = time.time() - job.started if job.started else None
        whole = eta.job_eta(prog, job_elapsed)
        st.caption(
            f"Whole job: elapsed {fmt.seconds(job_elapsed)} · time left "
            + (
                f"about {fmt.seconds(whole)} for {n_folds} folds"
                if whole is not None
                else "after the first batch"
            )
        )
    if prog.train_loss is not None:
        cols[2].metric("Train loss (smoothed)", f"{prog.train_loss:.4f}")
    if prog.last_epoch.get("valid_loss") is not None:
        cols[3].metric("Valid loss (last epoch)", fmt.number(prog.last_epoch["valid_loss"]))


def folds_panel(job: jobs.Job) -> None:
    """A k-fold run whose folds train as child jobs: one bar per fold, and the whole run's time left."""
    kids = sorted(common.job_store().list(parent_id=job.id), key=lambda j: int(j.params.get("fold", 0)))
    folds = [(kid.status, ProgressRecord.read(kid.run_dir)) for kid in kids]
    st.markdown(f"**Status:** running · **phase:** {common.PHASES['folds']}")
    for kid, (status, prog) in zip(kids, folds):
        frac = 1.0 if status == "done" else eta.step_fraction(prog) or 0.0
        left = prog.eta_s if status == "running" else None
        extra = (
            f" · epoch {min(prog.epoch + 1, prog.n_epochs)} / {prog.n_epochs}"
            if status == "running" and prog.n_epochs
            else ""
        )
        extra += f" · time left {fmt.seconds(left)}" if left is not None else ""
        st.progress(min(1.0, frac), text=f"{kid.params.get('label') or kid.id}: {status}{extra}")
    whole = eta.folds_eta(folds)
    job_elapsed = time.time() - job.started if job.started else None
    st.caption(
        f"Whole job: elapsed {fmt.seconds(job_elapsed)} · time left "
        + (
            f"about {fmt.seconds(whole)}"
            if whole is not None
            else "after the first batch of each running fold"
        )
    )


def outcome(job: jobs.Job) -> None:
    """A finished run: final metrics (done), the reason (failed / cancelled / interrupted), its curves."""
    if job.status == "done":
        st.success(f"Finished ({fmt.seconds((job.finished or 0) - (job.started or job.created))}).")
        if job.kind == "lr_find":
            data = RunFolder(job.run_dir).read_lr_find()
            if data:
                st.plotly_chart(lr_find_figure(data), width="stretch")
                st.caption("Apply a suggestion on the Training setup page.")
            return
        final_metrics(job)
    elif job.status == "failed":
        st.error(f"The run failed: {common.job_error_text(job)}")
        if not hosting.hosted():
            log_tail(job)
    else:
        st.warning(ended_text(job))
    if job.status != "done" and job.kind == "train":
        resume_offer(job)
        finish_offer(job)
    curves(job, best_epochs(RunFolder(job.run_dir).read_metrics()))


def ended_text(job: jobs.Job) -> str:
    """'The run was cancelled before it started.' / 'The run was interrupted: <why>' (the reason said once)."""
    why = common.job_error_text(job)
    if why.startswith(job.status):  # "cancelled before it started", "cancelled while its child jobs ran"
        return f"The run was {why}."
    return f"The run was {job.status}: {why}"


def resume_offer(job: jobs.Job) -> None:
    """A crashed run that saved its state at an epoch's end: a button queuing it again from there."""
    from core.train import resume

    if resume.why_not_resumable(job.run_dir, verify=False):  # the state's checksums are checked on click
        return
    st.caption(
        "It saved its state at the end of its last complete epoch: it can continue from there to its planned "
        "epochs, to the result it would have reached without the interruption."
    )
    if st.button("Resume training", key="tr_resume", type="primary"):
        try:
            resume.queue_resume(job.run_dir, store=common.job_store(), owner=job.owner)
        except (RuntimeError, ValueError, OSError) as err:
            st.error(f"Could not resume the run: {err}")
            return
        st.rerun()


def finish_offer(job: jobs.Job) -> None:
    """A crashed run: its finished-from-checkpoint metrics, or a button making the model from its checkpoint."""
    from core.train import finish

    origin = finish.finished_from_checkpoint(job.run_dir)
    if origin:
        st.info(f"Finished from its checkpoint: {origin.get('note', '')}.")
        final_metrics(job)
    elif not finish.why_not_finishable(job.run_dir):
        st.caption(
            "Its best checkpoint survived: it can become a usable model, with validation predictions "
            "and metrics, labelled as coming from an interrupted run."
        )
        if st.button("Finish from checkpoint", key="tr_finish"):
            try:
                with st.spinner("Making the model from the checkpoint..."):
                    finish.finish_from_checkpoint(job.run_dir)
            except (RuntimeError, ValueError, OSError) as err:
                st.error(f"Could not finish the run: {err}")
                return
            st.rerun()


def final_metrics(job: jobs.Job) -> None:
    """metrics.json as tables, and where to look next."""
    summary = RunFolder(job.run_dir).read_metrics()
    if not summary:
        st.warning(f"The run finished but {RunFolder(job.run_dir).metrics.name} is missing.")
        return
    main, folds = metrics_tables(summary)
    if summary.get("type") == "kfold":
        st.markdown(f"**{summary.get('k')}-fold cross-validation: mean ± sd over folds**")
        st.dataframe(main, hide_index=True, width="stretch")
        with st.expander("Per fold"):
            st.dataframe(folds, hide_index=True, width="stretch")
    else:
        notes = [
            f"best epoch {int(summary['best_epoch']) + 1}" if summary.get("best_epoch", -1) >= 0 else "",
            "stopped early" if summary.get("stopped_early") else "",
            f"monitor {summary.get('monitor', '')}",
        ]
        st.markdown("**Final metrics** (" + ", ".join(n for n in notes if n) + ")")
        st.dataframe(main, hide_index=True, width="stretch")
    st.caption(evaluate.provenance(summary))
    learned_nothing(job)
    common.model_download(job, key="tr_dl_model")
    common.page_link("pages/4_evaluate.py", "Evaluation", icon=":material/monitoring:")


def learned_nothing(job: jobs.Job) -> None:
    """A plain warning when the model predicts one class for (almost) everything or ranks at chance."""
    try:
        warnings = bytask.run_warnings(job.run_dir)
    except (
        ValueError,
        OSError,
        KeyError,
    ):  # predictions missing or not matching: the tables above say enough
        return
    if warnings:
        st.warning("\n\n".join(warnings))


def log_tail(job: jobs.Job, lines: int = 40) -> None:
    """The end of the run's log (local mode only: it may hold a traceback)."""
    try:
        text = (Path(job.run_dir) / jobs.LOG_FILE).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return
    with st.expander("Log (last lines)"):
        st.code("\n".join(text.splitlines()[-lines:]) or "(empty)")
