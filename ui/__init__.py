"""UI-side helpers: Streamlit caching wrappers and session state. Core logic stays in core/."""
