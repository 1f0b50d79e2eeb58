"""Predict page."""

import streamlit as st


def render() -> None:
    """Draw the page."""
    st.title("Predict")
    st.info("This page is being built. It will offer: Predict one image, a DICOM or a whole folder with a trained model; download the probabilities as CSV.")
    st.caption("Meanwhile every step is scriptable from the command line: `python -m core --help`.")


render()
