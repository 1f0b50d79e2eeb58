"""Training setup: model, learning rate (LR finder job), augmentation preview, splits; produces a RunConfig."""

import streamlit as st

from core.base import choices
from core.base.config import ConfigError
from core.data.items import SourceError
from core.data.labels import trainable_reasons
from ui import checks_view, common
from ui import setup_form as sf
from ui import working_settings as ws


def render() -> None:
    """Draw the page."""
    common.require_entry()  # never shown without the entry's sign-in gate
    st.title("Training setup")
    ws.restore()
    src, is_default = ws.current_source()
    st.session_state.setdefault(
        common.SOURCE_CONFIG, src
    )  # the source as chosen, before this page's split column
    gpu = choices.has_gpu()
    base, refused = sf.seed_working(src, overwrite=bool(st.session_state.pop(common.APPLY_SETTINGS, False)))
    hint = " Choose another on the **Dataset explorer** page." if is_default else ""
    st.info(f"Data: {sf.describe_source(src)}.{hint}")
    if refused:
        st.error(refused[0].upper() + refused[1:])
    if st.session_state.get(ws.HANDED):
        st.info(st.session_state.pop(ws.HANDED))
    problems: list[str] = []
    try:
        cfg = sf.config_from_state(st.session_state, base, src)
        ws.put(cfg)
    except ConfigError as err:
        cfg = None
        problems.append(str(err))
    items = None
    try:
        ds = common.load_dataset(cfg.source if cfg else src)
        items = ds.items
        task = cfg.data.task if cfg else None
        reasons = trainable_reasons(ds, task.type if task else "single", task.order if task else ())
        problems += [f"training would be refused: {reason}" for reason in reasons]
        checks_view.setup_checks(src)
    except SourceError as err:
        problems.append(f"the data source cannot be read: {err}")
    for problem in problems:
        st.warning(problem[0].upper() + problem[1:])
    st.subheader("Model")
    sf.model_section(gpu)
    st.subheader("Learning rate")
    sf.lr_section(cfg if not problems else None)
    st.subheader("Augmentation")
    sf.augment_section(items, cfg)
    st.subheader("Split")
    problems += sf.split_section(src, items, cfg)
    st.subheader("Training")
    sf.training_section(items)
    sf.plan_section(items, cfg)
    st.divider()
    sf.verdict(problems)
    ws.persist()
    sf.save_load(cfg)


render()
