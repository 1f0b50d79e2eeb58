"""Evaluation: metrics with confidence intervals, figures, threshold, folds, top losses, external test, report."""

import streamlit as st

from ui import checks_view, common
from ui import eval_view as ev
from ui import task_errors_view as te
from ui import task_view as tv


def render() -> None:
    """Draw the page."""
    common.require_entry()  # never shown without the entry's sign-in gate
    st.title("Evaluation")
    runs = common.finished_runs()
    if not runs:
        ev.no_runs()
        return
    job = ev.pick_run(runs)
    if tv.run_task(job.run_dir) != "single":  # multi-label findings or ordinal grades
        tv.show_run(job, checks=te.task_checks)
        return
    ev.show_run(job, runs, checks=checks_view.eval_checks)


render()
