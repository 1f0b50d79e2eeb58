"""Sign-in gate: OIDC via st.login when [auth] is in the secrets, else password sign-in, else open (locally, or
hosted with $XRT_ALLOW_ANONYMOUS=1; a hosted app with no sign-in configured refuses to serve).

Password sign-in checks each user's own scrypt hash when accounts exist (core.web.accounts: `python -m core users
add NAME`, or a [users] table in secrets.toml); else one shared password (`password` in secrets.toml or
$XRT_PASSWORD), with which each person types a user name and the page says plainly that this does not keep users
apart. The name (or the OIDC identity) owns runs and uploads (core.web.signin). Failed sign-ins are counted per
user name and client address with a lock-out (core.web.sessions). Until the visitor is signed in, the app's
navigation holds only the sign-in page, so no page script runs; the page asked for is remembered and opened after
sign-in. A password sign-in is kept across reloads by an HttpOnly cookie holding a server-side session id,
revoked at log-out and by a password change (OIDC: Streamlit's own cookie); the server sets and clears it
(core.web.signin_cookie): this page only has the browser post a one-time ticket to the server's cookie route. A hosted server with no sign-in configured
shows only a page saying what to configure (core.web.hosting.serve_refusal) unless anonymous use is allowed.
"""

from __future__ import annotations

import hmac
import json
import os
import re
import secrets
from collections.abc import Mapping
from typing import Any

import streamlit as st
from streamlit.logger import get_logger

from core.web import accounts, hosting, sessions, signin, signin_cookie

AUTH_OK = "auth_ok"
FAILS = "auth_fails"
IDENTITY, NEXT, COOKIE_DONE = "auth_identity", "auth_next", "auth_cookie_done"
TOKEN = "auth_token"  # the session id this browser session was given (revoked at log-out)
LOGGED_OUT, CLEARED = "auth_logged_out", "auth_cookie_cleared"
REFUSAL_LOGGED = "auth_refusal_logged"
COOKIE = signin_cookie.COOKIE
LOG = get_logger(__name__)


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


def listed_users() -> Mapping:
    """The [users] table of secrets.toml (name = "scrypt$..." hash), {} when absent."""
    value = _secret("users")
    return value if isinstance(value, Mapping) else {}


def per_user() -> bool:
    """Whether password sign-in checks each user's own password (accounts exist) rather than one shared one."""
    return bool(accounts.all_users(listed_users()))


def password_login() -> bool:
    """Whether sign-in is by user name and password (per-user accounts, or a shared password)."""
    return per_user() or bool(password())


def _stamp(identity: str) -> str:
    """The credential stamp a kept sign-in must still match (a changed password ends old sessions)."""
    return accounts.stamp(identity, listed_users(), "" if per_user() else password())


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
    if password_login() and not st.session_state.get(AUTH_OK):
        _from_cookie("user:")
    return not password_login() or bool(st.session_state.get(AUTH_OK))


def _from_cookie(prefix: str) -> None:
    """Sign this session in from the cookie of a live server-side session of the given identity kind."""
    identity = signin.read_token(_cookie_value(), stamp_of=_stamp)
    if identity and identity.startswith(prefix):
        st.session_state[AUTH_OK], st.session_state[IDENTITY] = True, identity
        st.session_state[COOKIE_DONE] = True  # the browser already holds it


def _cookie_value() -> str:
    """The sign-in cookie the browser sent ('' when none, or without a browser)."""
    try:
        return str(st.context.cookies.get(COOKIE, "") or "")
    except Exception:  # no browser context (a bare script run)
        return ""


def shown_identity() -> str:
    """Who is signed in, for the page ('' when nobody signed in by name)."""
    who = st.session_state.get(IDENTITY, "")
    if who.startswith("user:"):
        return who[5:]
    if oidc_providers() is not None and _oidc_signed_in():
        return str(st.user.get("email") or st.user.get("name") or "")
    return ""


def identity() -> str:
    """Who this session is: "oidc:<subject>", "user:<name>" (password sign-in) or "anon:<random>" (no login)."""
    if oidc_providers() is not None and _oidc_signed_in():
        user = st.user
        return "oidc:" + str(user.get("sub") or user.get("email") or "")
    if st.session_state.get(IDENTITY):
        return st.session_state[IDENTITY]
    _from_cookie("anon:")  # hosted without a login: one random identity per browser, kept by the cookie
    st.session_state.setdefault(IDENTITY, "anon:" + secrets.token_hex(16))
    return st.session_state[IDENTITY]


def _client_address() -> str:
    """The browser's address as the server sees it ('' when unknown; behind a proxy, the proxy's)."""
    try:
        return str(st.context.ip_address or "")
    except Exception:  # no browser context
        return ""


def _fail_keys(name: str) -> list[str]:
    """What failed sign-ins are counted against: the typed user name and the client address."""
    keys = ["name:" + (name or "").strip().lower()[:64]]
    return keys + (["addr:" + _client_address()] if _client_address() else [])


def _check(name: str, typed: str) -> tuple[str | None, str]:
    """(identity, "") when the name and password are right; (None, why) otherwise."""
    if per_user():
        who = accounts.authenticate(name, typed, listed_users())
        return (who, "") if who else (None, "Wrong user name or password.")
    if not check_password(typed, password()):
        return None, "Wrong password."
    try:
        return f"user:{signin.clean_user_name(name)}", ""
    except ValueError as err:
        return None, f"Type your user name: {err}."


def _on_password() -> None:
    """Form callback: refuse while locked out, check name + password, count failures per name and address."""
    typed = st.session_state.get("auth_password", "")
    st.session_state["auth_password"] = ""  # the typed password is not kept in the session
    name = st.session_state.get("auth_user", "")
    keys = _fail_keys(name)
    wait = sessions.locked_for(keys)
    if wait > 0:
        st.session_state[FAILS + "_why"] = (
            f"Too many failed sign-ins for this user name or from this address: try again in "
            f"{max(1, round(wait / 60))} min."
        )
        return
    who, why = _check(name, typed)
    if who is None:
        if why.startswith("Wrong"):
            sessions.record_failure(keys)
        st.session_state[FAILS + "_why"] = why
        return
    sessions.clear_failures(keys[:1])
    st.session_state[AUTH_OK], st.session_state[IDENTITY] = True, who
    st.session_state.pop(FAILS + "_why", None)


SHARED_NOTE = (
    "This server uses one shared password. It keeps out people who do not know it, but anyone who knows it can "
    "sign in under any user name and see that name's runs, uploads and kept settings. For private work ask the "
    "operator for a personal account (`python -m core users add NAME`) or single sign-on."
)


def login_page() -> None:
    """The only page shown before sign-in: OIDC buttons or a password form."""
    st.title("Sign in")
    providers = oidc_providers()
    if providers is not None:
        st.write("This X-ray trainer is private to the lab. Sign in to continue.")
        for name in providers or [""]:
            label = f"Log in with {name.title()}" if name else "Log in"
            st.button(
                label, key=f"auth_login_{name or 'default'}", on_click=st.login, args=(name,) if name else ()
            )
        return
    if not per_user():
        st.warning(SHARED_NOTE)
    with st.form("auth_form"):
        st.text_input("Your user name (your runs and uploads are kept under it)", key="auth_user")
        st.text_input("Password", type="password", key="auth_password")
        st.form_submit_button("Sign in", on_click=_on_password)
    if st.session_state.get(FAILS + "_why"):
        st.error(st.session_state[FAILS + "_why"])


def _requested_page() -> str:
    """The page path the browser asked for ('' for the start page), e.g. 'evaluate' from .../evaluate."""
    try:  # the URL as the browser sent it (st.context.url drops a page path it knows)
        from streamlit.runtime.scriptrunner import get_script_run_ctx

        info = get_script_run_ctx().context_info
        url = info.url if info is not None and info.HasField("url") else ""
    except Exception:  # no browser context, or another Streamlit version's internals
        return ""
    path = url.split("://", 1)[-1].partition("/")[2].strip("/")
    return path.rsplit("/", 1)[-1]


def refusal() -> str | None:
    """Why this server must not serve pages (hosted without any sign-in configured), else None."""
    return hosting.serve_refusal(
        hosting.hosted(),
        password=password_login(),
        oidc=oidc_providers() is not None,
        allow_anonymous=hosting.allow_anonymous(),
    )


def refusal_page() -> None:
    """The only page of a hosted server that may not serve: what the operator must configure."""
    st.title("Not available")
    st.error(refusal() or "")


def _wanted() -> str:
    """The page path the browser asked for when it looks like one of ours ('' otherwise)."""
    wanted = _requested_page()
    return wanted if re.fullmatch(r"[A-Za-z0-9_-]{1,64}", wanted) else ""


def _only(page: Any, title: str, icon: str) -> None:
    """Run `page` as the app's only page (at the deep link's path too: no "page not found"), then stop."""
    wanted = _wanted()
    pages = [st.Page(page, title=title, icon=icon, default=True)]
    if wanted:
        pages.append(st.Page(page, title=title, icon=icon, url_path=wanted))
    st.navigation(pages, position="hidden").run()
    st.stop()


def gate() -> None:
    """Refuse to serve when hosted without a sign-in; show only the sign-in page (and stop) until the session
    is signed in; a log-out button after."""
    reason = refusal()
    if reason:
        if not st.session_state.get(REFUSAL_LOGGED):
            LOG.error("refusing to serve: %s", reason)
            st.session_state[REFUSAL_LOGGED] = True
        _only(refusal_page, "Not available", ":material/block:")
    if not signed_in():
        st.session_state.setdefault(NEXT, _wanted())  # a deep link opens after sign-in
        _clear_cookie_once()  # a stale, forged or logged-out cookie is cleared by the server
        _only(login_page, "Sign in", ":material/lock:")
    if oidc_providers() is not None:
        st.sidebar.button("Log out", key="auth_logout", on_click=st.logout)
        return
    if password_login() or hosting.hosted():
        if not st.session_state.get(COOKIE_DONE):
            token = signin.make_token(identity(), stamp=_stamp(identity()))
            _browser_post(signin_cookie.SESSION_PATH, signin_cookie.issue_ticket(token))
            st.session_state[COOKIE_DONE], st.session_state[TOKEN] = True, token
    if password_login():
        st.sidebar.button("Log out", key="auth_logout", on_click=_log_out)


def next_page(pages: list) -> Any | None:
    """The page asked for before sign-in (once), when it is one of `pages` other than the one shown."""
    wanted = st.session_state.pop(NEXT, "")
    return next((p for p in pages if wanted and getattr(p, "url_path", "") == wanted), None)


def _browser_post(path: str, body: str = "") -> None:
    """Have the browser POST `body` to one of the server's cookie routes, which answers with the HttpOnly
    Set-Cookie (the page never sees the cookie's value)."""
    url = signin_cookie.route_path(str(st.get_option("server.baseUrlPath") or ""), path)
    st.html(
        f"<script>fetch({json.dumps(url)}, {{method: 'POST', body: {json.dumps(body)}, "
        "credentials: 'same-origin', cache: 'no-store'});</script>",
        unsafe_allow_javascript=True,
        width=1,
    )


def _clear_cookie_once() -> None:
    """On the sign-in page: have the server clear the cookie this browser holds (stale, forged or logged out)."""
    if (_cookie_value() or st.session_state.get(LOGGED_OUT)) and not st.session_state.get(CLEARED):
        _browser_post(signin_cookie.LOGOUT_PATH)
        st.session_state[CLEARED] = True


def _log_out() -> None:
    """End the server-side session (a copied cookie no longer signs in) and forget this session's sign-in
    (the server clears the cookie when the sign-in page asks it to)."""
    for token in {_cookie_value(), st.session_state.get(TOKEN, "")} - {""}:
        signin.revoke_token(token)
    for key in (AUTH_OK, IDENTITY, COOKIE_DONE, TOKEN, CLEARED):
        st.session_state.pop(key, None)
    st.session_state[LOGGED_OUT] = True
