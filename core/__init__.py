"""Core logic of the X-ray trainer: data, training, jobs, evaluation, prediction. Never imports streamlit."""

__version__ = "0.1.0"
