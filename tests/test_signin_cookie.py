"""Issue 24 item 4: the sign-in cookie is HttpOnly (+ Secure over HTTPS, SameSite=Lax), set and cleared by the
server from a one-time ticket, never written by page JavaScript; a cookie replayed after log-out is refused."""

from __future__ import annotations

import os
import re
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from core.web import accounts, signin, signin_cookie

ROOT = Path(__file__).resolve().parents[1]
ENTRY = str(ROOT / "streamlit_app.py")


@pytest.fixture
def client():
    """The cookie routes behind Starlette's test client (same process: tickets are in-memory)."""
    from starlette.applications import Starlette
    from starlette.testclient import TestClient

    return TestClient(Starlette(routes=signin_cookie.routes()), base_url="http://lab.example:8501")


ORIGIN = {"Origin": "http://lab.example:8501"}


def _cookie(response) -> str:
    """The response's one Set-Cookie header."""
    [header] = response.headers.get_list("set-cookie")
    return header


def test_a_ticket_is_exchanged_once_for_an_httponly_cookie(client):
    token = signin.make_token("user:alice")
    ticket = signin_cookie.issue_ticket(token)
    assert token not in ticket
    response = client.post("/_xrt/session", content=ticket, headers=ORIGIN)
    assert response.status_code == 204
    header = _cookie(response)
    assert header.startswith(f"xrt_signin={token}; ")
    flags = {f.strip() for f in header.split(";")[1:]}
    assert {"HttpOnly", "SameSite=Lax", "Path=/", f"Max-Age={signin.TOKEN_TTL_S}"} <= flags
    assert "Secure" not in flags  # plain HTTP: a Secure cookie would never come back
    again = client.post("/_xrt/session", content=ticket, headers=ORIGIN)
    assert again.status_code == 403 and not again.headers.get_list("set-cookie")  # one use only


def test_secure_over_https_and_refusals(client):
    token = signin.make_token("user:alice")
    behind_proxy = {**ORIGIN, "X-Forwarded-Proto": "https"}
    response = client.post("/_xrt/session", content=signin_cookie.issue_ticket(token), headers=behind_proxy)
    assert "; Secure" in _cookie(response) and "HttpOnly" in _cookie(response)
    stale = signin_cookie.issue_ticket(token, now=0.0)  # issued long ago: expired
    assert client.post("/_xrt/session", content=stale, headers=ORIGIN).status_code == 403
    fresh = signin_cookie.issue_ticket(token)
    elsewhere = {"Origin": "https://evil.example"}
    assert client.post("/_xrt/session", content=fresh, headers=elsewhere).status_code == 403
    assert client.post("/_xrt/session", content=fresh, headers={}).status_code == 403  # no Origin at all
    assert client.get("/_xrt/session").status_code == 405
    assert client.post("/_xrt/session", content="x" * 5000, headers=ORIGIN).status_code == 403


def test_log_out_route_ends_the_session_and_clears_the_cookie(client):
    token = signin.make_token("user:alice")
    client.cookies.set(signin_cookie.COOKIE, token)
    response = client.post("/_xrt/logout", headers=ORIGIN)
    assert response.status_code == 204
    assert re.match(r"xrt_signin=; Max-Age=0; Path=/; HttpOnly; SameSite=Lax$", _cookie(response))
    assert signin.read_token(token) is None  # the cookie, replayed, signs nobody in
    assert client.post("/_xrt/logout", headers={"Origin": "https://evil.example"}).status_code == 403


def test_routes_follow_the_base_url_path():
    assert signin_cookie.route_path("", "_xrt/session") == "/_xrt/session"
    assert signin_cookie.route_path("/lab/xray/", "_xrt/logout") == "/lab/xray/_xrt/logout"


def _scripts(at) -> str:
    """Every st.html body the app run emitted."""
    return "\n".join(str(h.proto.body) for h in at.html)


def test_app_posts_a_ticket_after_sign_in_and_asks_the_server_to_clear_the_cookie_at_log_out(monkeypatch):
    from streamlit.testing.v1 import AppTest

    from ui import auth

    monkeypatch.setenv("XRT_PASSWORD", "pw")
    at = AppTest.from_file(ENTRY, default_timeout=60)
    at.session_state["src_choice"] = "folder"
    at.run()
    at.text_input(key="auth_user").input("alice")
    at.text_input(key="auth_password").input("pw")
    at.button[0].click().run()
    assert not at.exception, at.exception
    page = _scripts(at)
    assert "document.cookie" not in page  # the page never writes (or reads) the sign-in cookie
    [ticket] = re.findall(r"fetch\(\"/_xrt/session\", \{method: 'POST', body: \"([^\"]+)\"", page)
    token = at.session_state[auth.TOKEN]
    assert token not in page
    assert signin_cookie.redeem_ticket(ticket) == token  # what the server will set as the HttpOnly cookie
    at.button(key="auth_logout").click().run()
    assert [t.value for t in at.title] == ["Sign in"]
    assert 'fetch("/_xrt/logout"' in _scripts(at) and "document.cookie" not in _scripts(at)
    stamp = accounts.stamp("user:alice", shared_password="pw")
    assert signin.read_token(token, stamp_of=lambda who: stamp) is None  # replayed after log-out: refused


@pytest.mark.slow
@pytest.mark.timeout(180)
@pytest.mark.skipif(not Path("/proc").exists(), reason="starts a local server (Linux CI)")
def test_streamlit_run_serves_the_cookie_routes(tmp_path):
    """`streamlit run streamlit_app.py` (the README's command) picks up the App with the cookie routes."""
    from tests.browser.conftest import free_port, serve

    token = signin.make_token("user:alice")  # in this test's XRT_HOME, which the server shares
    env = {**os.environ, "XRT_PASSWORD": "pw", "PYTHONUNBUFFERED": "1"}
    with serve(env, Path(os.environ["XRT_HOME"]), free_port()) as url:
        with urllib.request.urlopen(url + "/", timeout=30) as page:
            assert page.status == 200 and b"<html" in page.read().lower()  # the app itself is served
        origin = {"Origin": url}
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(
                urllib.request.Request(url + "/_xrt/session", b"forged", origin), timeout=30
            )
        assert refused.value.code == 403
        cookie = {**origin, "Cookie": f"xrt_signin={token}"}
        with urllib.request.urlopen(
            urllib.request.Request(url + "/_xrt/logout", b"", cookie), timeout=30
        ) as out:
            assert out.status == 204
            assert out.headers["Set-Cookie"] == "xrt_signin=; Max-Age=0; Path=/; HttpOnly; SameSite=Lax"
    assert signin.read_token(token) is None
