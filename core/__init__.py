"""Core logic of the X-ray trainer: data, training, jobs, evaluation, prediction. Never imports streamlit."""

from typing import Any


def __getattr__(name: str) -> Any:
    """`core.__version__`: read from pyproject.toml (core.base.version), the one place it is written."""
    if name == "__version__":
        from core.base.version import version

        return version()
    raise AttributeError(f"module 'core' has no attribute {name!r}")
