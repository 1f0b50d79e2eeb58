"""Issue 24 items 3-5: per-user password accounts (scrypt, an admin command, a secrets list), revocable
server-side sign-in sessions, and failed sign-ins counted per user name and client address."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from core.web import accounts, sessions, signin

ROOT = Path(__file__).resolve().parents[1]
ENTRY = str(ROOT / "streamlit_app.py")


@pytest.fixture(autouse=True)
def _cheap_scrypt(monkeypatch):
    """Hashes made in these tests use a small scrypt cost (the stored hash carries its own parameters)."""
    monkeypatch.setattr(accounts, "SCRYPT_N", 2**10)


# ---------------------------------------------------------------- item 3: real identities


def test_scrypt_accounts_check_the_typed_names_own_password(tmp_path):
    accounts.set_password("Alice", "alice-password-1")
    accounts.set_password("bob", "bob-password-22")
    assert accounts.users_file().stat().st_mode & 0o077 == 0
    stored = json.loads(accounts.users_file().read_text())
    assert set(stored) == {"alice", "bob"} and all(v.startswith("scrypt$1024$8$1$") for v in stored.values())
    assert "alice-password-1" not in accounts.users_file().read_text()
    assert accounts.authenticate(" ALICE ", "alice-password-1") == "user:alice"
    assert accounts.authenticate("alice", "bob-password-22") is None  # bob cannot sign in as alice
    assert accounts.authenticate("carol", "bob-password-22") is None
    assert accounts.authenticate("alice", "") is None
    with pytest.raises(ValueError, match="at least 10"):
        accounts.set_password("dave", "short")
    assert accounts.remove("bob") and not accounts.remove("bob")
    assert accounts.authenticate("bob", "bob-password-22") is None


def test_a_users_table_in_secrets_adds_accounts():
    listed = {"Erin": accounts.hash_password("erin-password-9")}
    assert accounts.authenticate("erin", "erin-password-9", listed) == "user:erin"
    assert accounts.authenticate("erin", "erin-password-9") is None
    assert accounts.verify_password("x", "not-a-hash") is False
    assert accounts.verify_password("x", "scrypt$99999999$8$1$00$00") is False  # absurd cost: refused unread


def test_admin_command_adds_lists_and_removes_accounts(tmp_path):
    env = {"XRT_HOME": str(tmp_path / "home"), "PATH": "/usr/bin:/bin"}
    run = lambda *a, stdin="": subprocess.run(  # noqa: E731
        [sys.executable, "-m", "core", "users", *a],
        input=stdin,
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
    )
    added = run("add", " Frank ", "--password-stdin", stdin="frank-password-7\n")
    assert added.returncode == 0, added.stderr
    assert json.loads(added.stdout)["user"] == "frank"
    assert json.loads(run("list").stdout)["users"] == ["frank"]
    assert run("remove", "frank").returncode == 0
    assert "no account named 'frank'" in run("remove", "frank").stderr


# ---------------------------------------------------------------- item 4: revocable sessions


def test_a_session_cookie_is_revoked_by_log_out_and_by_a_password_change():
    accounts.set_password("alice", "alice-password-1")
    stamp_of = lambda who: accounts.stamp(who)  # noqa: E731
    token = signin.make_token("user:alice", stamp=stamp_of("user:alice"))
    assert signin.read_token(token, stamp_of=stamp_of) == "user:alice"
    signin.revoke_token(token)
    assert signin.read_token(token, stamp_of=stamp_of) is None  # replayed after log-out
    token = signin.make_token("user:alice", stamp=stamp_of("user:alice"))
    accounts.set_password("alice", "a-new-password-2")  # the admin changes it
    assert signin.read_token(token, stamp_of=stamp_of) is None
    token = signin.make_token("user:alice", stamp=stamp_of("user:alice"))
    accounts.remove("alice")
    assert signin.read_token(token, stamp_of=stamp_of) is None


def test_a_shared_password_change_ends_sessions_made_with_the_old_one():
    old = signin.make_token("user:zoe", stamp=accounts.stamp("user:zoe", shared_password="pw-one"))
    assert (
        signin.read_token(old, stamp_of=lambda w: accounts.stamp(w, shared_password="pw-one")) == "user:zoe"
    )
    assert signin.read_token(old, stamp_of=lambda w: accounts.stamp(w, shared_password="pw-two")) is None


def test_the_session_store_holds_no_cookie_value():
    token = signin.make_token("user:alice")
    session_id = token.partition(".")[0]
    raw = (accounts.paths.app_home() / sessions.DB_NAME).read_bytes()
    assert session_id.encode() not in raw and token.encode() not in raw


# ---------------------------------------------------------------- item 5: lock-out per name and address


def test_failures_lock_out_a_user_name_and_an_address_for_a_window():
    keys = ["name:alice", "addr:10.0.0.9"]
    for _ in range(sessions.MAX_FAILS - 1):
        sessions.record_failure(keys, now=1000.0)
    assert sessions.locked_for(keys, now=1001.0) == 0
    sessions.record_failure(keys, now=1002.0)
    assert sessions.locked_for(["name:alice"], now=1003.0) == pytest.approx(sessions.WINDOW_S - 1)
    assert sessions.locked_for(["name:bob", "addr:10.0.0.9"], now=1003.0) > 0  # that address, any name
    assert sessions.locked_for(["name:bob", "addr:10.0.0.7"], now=1003.0) == 0
    assert sessions.locked_for(keys, now=1002.0 + sessions.WINDOW_S + 1) == 0
    sessions.clear_failures(["name:alice"])
    assert sessions.locked_for(["name:alice"], now=1003.0) == 0


def _sign_in(name: str, pw: str):
    """A fresh browser session (no cookie) that types a name and password."""
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(ENTRY, default_timeout=60)
    at.session_state["src_choice"] = "folder"
    at.run()
    at.text_input(key="auth_user").input(name)
    at.text_input(key="auth_password").input(pw)
    at.button[0].click().run()
    assert not at.exception, at.exception
    return at


def test_app_with_accounts_refuses_a_typed_name_and_locks_out_fresh_sessions(monkeypatch):
    monkeypatch.delenv("XRT_PASSWORD", raising=False)
    monkeypatch.setattr(sessions, "MAX_FAILS", 2)
    accounts.set_password("alice", "alice-password-1")
    accounts.set_password("bob", "bob-password-22")
    at = _sign_in("alice", "bob-password-22")  # bob types alice's name
    assert [t.value for t in at.title] == ["Sign in"]
    assert [e.value for e in at.error] == ["Wrong user name or password."]
    assert not any("shared password" in w.value for w in at.warning)  # accounts: no shared-password note
    for _ in range(sessions.MAX_FAILS - 1):
        _sign_in("alice", "guess")  # each guess from a fresh session
    at = _sign_in("alice", "alice-password-1")
    assert [t.value for t in at.title] == ["Sign in"]
    assert "Too many failed sign-ins" in at.error[0].value
    sessions.clear_failures(["name:alice"])
    at = _sign_in("alice", "alice-password-1")
    assert at.session_state["auth_identity"] == "user:alice"


def test_shared_password_sign_in_says_what_it_does_not_protect(monkeypatch):
    monkeypatch.setenv("XRT_PASSWORD", "pw")
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(ENTRY, default_timeout=60)
    at.session_state["src_choice"] = "folder"
    at.run()
    assert any("anyone who knows it can sign in under any user name" in w.value for w in at.warning)


def test_log_out_in_the_app_revokes_the_cookie_it_was_given(monkeypatch):
    from ui import auth

    monkeypatch.setenv("XRT_PASSWORD", "pw")
    at = _sign_in("alice", "pw")
    assert at.session_state["auth_identity"] == "user:alice"
    token = at.session_state[auth.TOKEN]
    assert (
        signin.read_token(token, stamp_of=lambda w: accounts.stamp(w, shared_password="pw")) == "user:alice"
    )
    at.button(key="auth_logout").click().run()
    assert not at.exception, at.exception
    assert signin.read_token(token) is None  # a copy of the cookie no longer signs anyone in
