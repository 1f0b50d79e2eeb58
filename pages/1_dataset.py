"""Dataset explorer: choose a source, see class counts, samples, sizes and every unusable file."""

import streamlit as st

from ui import checks_view, common
from ui import explorer_view as xv
from ui import task_view as tv
from ui import working_settings as ws


def render() -> None:
    """Draw the page."""
    common.require_entry()  # never shown without the entry's sign-in gate
    st.title("Dataset explorer")
    ws.restore()
    cfg = xv.source_form()
    if cfg is None:
        st.info("Choose a folder, CSV or upload to explore.")
        return
    ds = xv.load(cfg)
    if ds is None:
        return
    ws.set_source(cfg)
    ws.persist()
    xv.summary(ds, "multilabel" if cfg.multilabel() else "single")
    if ds.items.empty:
        xv.problems(ds)
        return
    xv.overview(ds)
    tv.explorer_panel(ds, cfg)  # findings (multi-label) or grades (ordinal)
    window = xv.window_control() if xv.has_dicom(ds) else None
    ws.persist()  # the window is part of the kept settings
    xv.samples(ds, window)
    xv.problems(ds)
    checks_view.dataset_checks(ds, cfg)
    if xv.has_dicom(ds):
        xv.dicom_panel(ds, window)


render()
