"""Shared sidebar, cached wrappers around core calls, and session-state helpers."""

from __future__ import annotations

import dataclasses

import streamlit as st

from core import imaging, sources
from core.config import SourceConfig
from core.sample import ensure_sample


@st.cache_resource(show_spinner="Generating the synthetic sample dataset (first start only)...")
def sample_root() -> str:
    """Generate the built-in sample once per server process."""
    return str(ensure_sample())


@st.cache_data(show_spinner="Scanning the dataset...", max_entries=16)
def _load(cfg_items: tuple) -> sources.Dataset:
    """Scan a source once per distinct configuration."""
    return sources.load_source(SourceConfig(**dict(cfg_items)))


def load_dataset(cfg: SourceConfig) -> sources.Dataset:
    """Cached scan of a source."""
    return _load(tuple(sorted(dataclasses.asdict(cfg).items())))


@st.cache_data(max_entries=2000, show_spinner=False)
def thumbnail(path: str, size: int = 160):
    """A small decoded preview (numpy array), cached per file."""
    import numpy as np

    img = imaging.read_image(path)
    img.thumbnail((size, size))
    return np.asarray(img)


@st.cache_data(max_entries=500, show_spinner=False)
def dicom_header(path: str) -> dict:
    """Allow-listed DICOM header (identifiers hidden)."""
    return imaging.dicom_metadata(path, include_phi=False)


def device_label() -> str:
    """GPU name or CPU, for the sidebar."""
    import torch

    if torch.cuda.is_available():
        return f"GPU: {torch.cuda.get_device_name(0)}"
    return "CPU (no GPU found: training works, slower)"


def sidebar() -> None:
    """The sidebar shown on every page."""
    with st.sidebar:
        st.caption(f"Compute: {device_label()}")
