"""Training run page."""

import streamlit as st


def render() -> None:
    """Draw the page."""
    st.title("Training run")
    st.info("This page is being built. It will offer: Start a run as a background job, watch live progress and curves, cancel; runs keep going when the page is refreshed.")
    st.caption("Meanwhile every step is scriptable from the command line: `python -m core --help`.")


render()
