"""Predict: a trained model on uploaded images, a folder or a CSV of paths; table, Grad-CAM, CSV download."""

import streamlit as st

from ui import common
from ui import predict_view as pv
from ui import task_view as tv


def render() -> None:
    """Draw the page."""
    common.require_entry()  # never shown without the entry's sign-in gate
    st.title("Predict")
    runs = common.finished_runs(with_model=True)
    if not runs:
        pv.no_models()
        return
    job = pv.pick_run(runs)
    model = pv.pick_model(job)
    classes = pv.model_classes(model)
    if classes is None:
        return
    task = tv.model_task(model)
    spec = pv.input_form()
    threshold, tta = pv.options(job, classes) if task == "single" else (None, tv.tta_option(task))
    pv.predict_button(model, spec, tta)
    result = st.session_state.get(pv.RESULT)
    if result and result["model"] == model:
        if task == "single":
            pv.results(result, classes, threshold)
        else:  # multi-label: decided at the thresholds chosen on the Evaluation page for this run, if any
            tv.predict_results(result, task, tv.chosen_thresholds(job.id))


render()
