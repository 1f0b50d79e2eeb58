"""Optional login gate: OIDC via st.login when [auth] is in the secrets, else a shared password, else open.

The shared password comes from `password` in .streamlit/secrets.toml or $XRT_PASSWORD. Until the
visitor is signed in, the app's navigation holds only the sign-in page, so no page script runs.
"""

from __future__ import annotations

import hmac
import os
import time
from collections.abc import Mapping
from typing import Any

import streamlit as st

AUTH_OK = "auth_ok"
FAILS = "auth_fails"


def _secret(key: str) -> Any:
    """A top-level secret, or None when absent or when there is no secrets file."""
    try:
        return st.secrets.get(key)
    except Exception:  # no secrets.toml at all (StreamlitSecretNotFoundError) or an unreadable one
        return None


def password() -> str:
    """The shared password ('' when none is configured): secrets first, then $XRT_PASSWORD."""
    value = _secret("password")
    return str(value) if value else os.environ.get("XRT_PASSWORD", "")


def oidc_providers() -> list[str] | None:
    """None without an [auth] secrets section; [] for one default provider; else the named providers."""
    section = _secret("auth")
    if not isinstance(section, Mapping):
        return None
    return [name for name, value in section.items() if isinstance(value, Mapping)]


def check_password(given: str, expected: str) -> bool:
    """Constant-time comparison of the typed password with the configured one."""
    return bool(expected) and hmac.compare_digest(given.encode("utf-8"), expected.encode("utf-8"))


def _oidc_signed_in() -> bool:
    """Whether st.user says the visitor is logged in through OIDC."""
    try:
        return bool(st.user.is_logged_in)
    except Exception:  # st.user unavailable (e.g. misconfigured [auth])
        return False


def signed_in() -> bool:
    """Whether this session may see the app (always true when no login is configured)."""
    if oidc_providers() is not None:
        return _oidc_signed_in()
    return not password() or bool(st.session_state.get(AUTH_OK))


def _on_password() -> None:
    """Form callback: check the typed password, remember success, slow down repeated failures."""
    typed = st.session_state.get("auth_password", "")
    st.session_state["auth_password"] = ""  # the typed password is not kept in the session
    if check_password(typed, password()):
        st.session_state[AUTH_OK] = True
        st.session_state.pop(FAILS, None)
        return
    fails = st.session_state.get(FAILS, 0) + 1
    st.session_state[FAILS] = fails
    if fails > 3:
        time.sleep(min(5.0, float(fails - 3)))  # brute force gets slow


def login_page() -> None:
    """The only page shown before sign-in: OIDC buttons or a password form."""
    st.title("Sign in")
    providers = oidc_providers()
    if providers is not None:
        st.write("This X-ray trainer is private to the lab. Sign in to continue.")
        for name in providers or [""]:
            label = f"Log in with {name.title()}" if name else "Log in"
            st.button(label, key=f"auth_login_{name or 'default'}", on_click=st.login,
                      args=(name,) if name else ())
        return
    with st.form("auth_form"):
        st.text_input("Password", type="password", key="auth_password")
        st.form_submit_button("Sign in", on_click=_on_password)
    if st.session_state.get(FAILS):
        st.error("Wrong password.")


def gate() -> None:
    """Show only the sign-in page (and stop) until the session is signed in; a log-out button after."""
    if not signed_in():
        st.navigation([st.Page(login_page, title="Sign in", icon=":material/lock:")]).run()
        st.stop()
    if oidc_providers() is not None:
        st.sidebar.button("Log out", key="auth_logout", on_click=st.logout)
    elif password():
        st.sidebar.button("Log out", key="auth_logout", on_click=_log_out)


def _log_out() -> None:
    """Forget the password sign-in of this session."""
    st.session_state.pop(AUTH_OK, None)
