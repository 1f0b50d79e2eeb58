"""Training setup page."""

import streamlit as st


def render() -> None:
    """Draw the page."""
    st.title("Training setup")
    st.info("This page is being built. It will offer: Architecture, image size, batch size, epochs, learning rate with the LR finder, augmentation with a live preview, split settings and k-fold cross-validation.")
    st.caption("Meanwhile every step is scriptable from the command line: `python -m core --help`.")


render()
