"""The sign-in cookie, set and cleared by the server: HttpOnly (page scripts cannot read it), SameSite=Lax, and
Secure when the request came over HTTPS.

Streamlit's page scripts cannot set response headers, so the sign-in page hands the browser a one-time ticket
(random, valid for TICKET_TTL_S, kept only in this process's memory) and the browser posts it to
`POST <base>/_xrt/session`, which answers with the cookie (the session token of core.web.signin). The token
never passes through a URL or a page script. `POST <base>/_xrt/logout` ends the cookie's server-side session
and clears the cookie. Both routes refuse a request from another origin. `routes()` gives them to the
`streamlit.starlette.App` that `streamlit run streamlit_app.py` serves.
"""

from __future__ import annotations

import secrets
import threading
import time
from typing import Any

from core.web import signin

COOKIE = "xrt_signin"
TICKET_TTL_S = 60.0
SESSION_PATH, LOGOUT_PATH = "_xrt/session", "_xrt/logout"
_MAX_BODY = 256
_tickets: dict[str, tuple[str, float]] = {}
_lock = threading.Lock()


def issue_ticket(token: str, now: float | None = None) -> str:
    """A one-time ticket the browser exchanges for a cookie holding `token` (expired tickets are dropped)."""
    now = time.time() if now is None else now
    ticket = secrets.token_urlsafe(32)
    with _lock:
        for old in [t for t, (_, expires) in _tickets.items() if expires <= now]:
            del _tickets[old]
        _tickets[ticket] = (token, now + TICKET_TTL_S)
    return ticket


def redeem_ticket(ticket: str, now: float | None = None) -> str | None:
    """The token behind a live ticket, once (the ticket is gone after); None when unknown or expired."""
    with _lock:
        token, expires = _tickets.pop(ticket, ("", 0.0))
    return token if token and expires > (time.time() if now is None else now) else None


def set_cookie_header(token: str, max_age: float, secure: bool) -> str:
    """The Set-Cookie value for the sign-in cookie (max_age 0 with an empty token clears it)."""
    flags = f"Max-Age={int(max_age)}; Path=/; HttpOnly; SameSite=Lax" + ("; Secure" if secure else "")
    return f"{COOKIE}={token}; {flags}"


def route_path(base_url: str, path: str) -> str:
    """A route's URL path under Streamlit's server.baseUrlPath ('' or e.g. 'lab/xray')."""
    base = "/".join(part for part in (base_url or "").split("/") if part)
    return "/" + (f"{base}/" if base else "") + path


def _same_origin(headers: Any) -> bool:
    """Whether a browser request comes from a page of this server (its Origin names this Host)."""
    origin, host = headers.get("origin", ""), headers.get("host", "")
    return bool(host) and origin in (f"http://{host}", f"https://{host}")


def _https(headers: Any, scheme: str) -> bool:
    """Whether the browser reached us over HTTPS (directly, or through a proxy that says so)."""
    return scheme == "https" or headers.get("x-forwarded-proto", "").split(",")[0].strip() == "https"


async def _session(request: Any) -> Any:
    """POST a ticket -> 204 with the HttpOnly sign-in cookie; 403 for an unknown, used or expired ticket."""
    from starlette.responses import Response

    if not _same_origin(request.headers):
        return Response("cross-origin request refused", status_code=403)
    body = (await request.body())[:_MAX_BODY].decode("ascii", "replace").strip()
    token = redeem_ticket(body)
    if token is None:
        return Response("unknown or expired sign-in ticket", status_code=403)
    header = set_cookie_header(token, signin.TOKEN_TTL_S, _https(request.headers, request.url.scheme))
    return Response(status_code=204, headers={"Set-Cookie": header, "Cache-Control": "no-store"})


async def _logout(request: Any) -> Any:
    """POST -> the cookie's server-side session ended and the cookie cleared (204)."""
    from starlette.responses import Response

    if not _same_origin(request.headers):
        return Response("cross-origin request refused", status_code=403)
    signin.revoke_token(request.cookies.get(COOKIE, ""))
    header = set_cookie_header("", 0, _https(request.headers, request.url.scheme))
    return Response(status_code=204, headers={"Set-Cookie": header, "Cache-Control": "no-store"})


def routes(base_url: str = "") -> list[Any]:
    """The two cookie routes, for streamlit.starlette.App(routes=...)."""
    from starlette.routing import Route

    return [
        Route(route_path(base_url, SESSION_PATH), _session, methods=["POST"]),
        Route(route_path(base_url, LOGOUT_PATH), _logout, methods=["POST"]),
    ]
