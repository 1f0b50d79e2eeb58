"""Training setup: model, learning rate (LR finder job), augmentation preview, splits; produces a RunConfig."""

import streamlit as st

from core.config import ConfigError, RunConfig, from_dict, to_dict
from core.sources import SourceError
from ui import checks_view, common
from ui import setup_form as sf


def render() -> None:
    """Draw the page."""
    st.title("Training setup")
    src, is_default = sf.current_source()
    gpu = sf.has_gpu()
    carried = st.session_state.get(sf.RUN_CONFIG)
    base = from_dict(RunConfig, carried) if carried else sf.default_config(src, gpu)
    sf.seed_state(base)
    hint = " Choose another on the **Dataset explorer** page." if is_default else ""
    st.info(f"Data: {sf.describe_source(src)}.{hint}")
    try:
        cfg = sf.config_from_state(st.session_state, base, src)
        st.session_state[sf.RUN_CONFIG] = to_dict(cfg)
        st.session_state.pop(sf.RUN_CONFIG_ERROR, None)
    except ConfigError as err:
        cfg = None
        st.session_state[sf.RUN_CONFIG_ERROR] = str(err)
    items = None
    try:
        ds = common.load_dataset(cfg.source if cfg else src)
        items = ds.items
        for reason in ds.check_trainable():
            st.warning(f"Training would be refused: {reason}")
        checks_view.setup_checks(src)
    except SourceError as err:
        st.error(f"The data source cannot be read: {err}")
    st.subheader("Model")
    sf.model_section(gpu)
    st.subheader("Learning rate")
    sf.lr_section(cfg)
    st.subheader("Augmentation")
    sf.augment_section(items, cfg)
    st.subheader("Split")
    sf.split_section(src, items, cfg)
    st.subheader("Training")
    sf.training_section()
    st.divider()
    if cfg is None:
        st.error(f"These settings cannot work: {st.session_state[sf.RUN_CONFIG_ERROR]}")
    else:
        st.success("Settings are valid and carried to the Training run page.")
        common.page_link("pages/3_train.py", "Training run", icon=":material/model_training:")
    sf.save_load(cfg)


render()
