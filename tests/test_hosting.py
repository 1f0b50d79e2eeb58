"""Where the app listens and whether a hosted server may serve (core.web.hosting, .streamlit/config.toml)."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.web import hosting

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    ("is_hosted", "password", "oidc", "anonymous", "refused"),
    [
        (False, False, False, False, False),  # local mode: one person at their own machine
        (True, False, False, False, True),  # hosted, nobody can sign in, anonymous use not allowed
        (True, True, False, False, False),  # a shared password
        (True, False, True, False, False),  # OpenID Connect
        (True, False, False, True, False),  # the operator allowed anonymous use on purpose
    ],
)
def test_hosted_server_serves_only_with_a_sign_in_or_anonymous_allowed(
    is_hosted, password, oidc, anonymous, refused
):
    reason = hosting.serve_refusal(is_hosted, password=password, oidc=oidc, allow_anonymous=anonymous)
    assert (reason is not None) == refused
    if refused:
        assert reason == hosting.NO_SIGN_IN
        assert all(what in reason for what in ("XRT_PASSWORD", "[auth]", "XRT_ALLOW_ANONYMOUS=1"))


@pytest.mark.parametrize(("value", "allowed"), [("1", True), (" Yes ", True), ("0", False), ("", False)])
def test_allow_anonymous_reads_the_environment(monkeypatch, value, allowed):
    monkeypatch.setenv("XRT_ALLOW_ANONYMOUS", value)
    assert hosting.allow_anonymous() is allowed


def test_local_config_listens_on_localhost_only():
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    with open(ROOT / ".streamlit" / "config.toml", "rb") as f:
        server = tomllib.load(f)["server"]
    assert server["address"] == "127.0.0.1"
    assert server["enableXsrfProtection"] is True and server["enableCORS"] is True
