"""Training run: start a background job, pick a run, watch it live, cancel it, see its final metrics."""

import streamlit as st

from core.web import hosting
from ui import common
from ui import run_view as rv


def render() -> None:
    """Draw the page."""
    common.require_entry()  # never shown without the entry's sign-in gate
    st.title("Training run")
    owner = common.owner_id()
    rv.maybe_reap(common.job_store())
    rv.start_section()
    st.subheader("Runs")
    job_id = rv.runs_section(owner)
    if job_id:
        rv.watch(job_id)
    st.caption(
        "Runs go on in the background: closing or refreshing this page does not stop them."
        + (f" You see only your own runs{common.signed_in_as()}." if hosting.hosted() else "")
    )


render()
