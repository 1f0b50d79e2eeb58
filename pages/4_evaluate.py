"""Evaluation page."""

import streamlit as st


def render() -> None:
    """Draw the page."""
    st.title("Evaluation")
    st.info("This page is being built. It will offer: Accuracy, per-class metrics, ROC AUC with confidence intervals, confusion matrix and ROC curves, per-fold results, the images the model got most wrong.")
    st.caption("Meanwhile every step is scriptable from the command line: `python -m core --help`.")


render()
