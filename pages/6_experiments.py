"""Experiments: sweep settings over several ordinary training runs, watch them live, compare, reuse the best."""

import streamlit as st

from ui import common
from ui import experiment_view as ev


def render() -> None:
    """Draw the page."""
    common.require_entry()  # never shown without the entry's sign-in gate
    st.title("Experiments")
    with st.expander("Start a sweep", expanded=True):
        ev.start_section()
    st.subheader("Experiments")
    exp_id = ev.experiments_section()
    if exp_id:
        ev.watch(exp_id)
    st.caption(
        "Each trial is an ordinary training run (also listed on the Training run page); closing or "
        "refreshing this page does not stop them."
    )


render()
