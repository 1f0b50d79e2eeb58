"""Issue 24 item 2: a Ray job's environment is an allow-list (never the sign-in password or the installation
secret); workers get a pseudonym-only key that gives the app's pseudonyms; a cluster without token
authentication is refused unless allowed."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from core.base import paths, privacy
from core.runs import ray_supervisor
from core.runs.ray_supervisor import UnprotectedClusterError, check_auth, forwarded_env


@pytest.fixture
def secrets_set(monkeypatch):
    """An app host with a password, an installation secret and settings, some of which a job needs."""
    monkeypatch.setenv("XRT_PASSWORD", "pw-very-secret")
    monkeypatch.setenv("XRT_SECRET", "installation-secret-0123456789abcdef0123456789")
    monkeypatch.setenv("XRT_DECODE_MEMORY_MB", "300")
    monkeypatch.setenv("XRT_RAY_ADDRESS", "head:6379")
    monkeypatch.setenv("XRT_SOME_FUTURE_SECRET", "x")


def test_forwarded_env_is_an_allow_list_without_password_or_secret(secrets_set):
    env = forwarded_env()
    assert "XRT_PASSWORD" not in env and "XRT_SECRET" not in env
    assert "XRT_RAY_ADDRESS" not in env and "XRT_SOME_FUTURE_SECRET" not in env
    values = " ".join(env.values())
    assert "pw-very-secret" not in values and "installation-secret" not in values
    assert env["XRT_DECODE_MEMORY_MB"] == "300" and env["XRT_HOME"] == str(paths.app_home())
    assert set(k for k in env if k.startswith("XRT_")) <= set(ray_supervisor.WORKER_SETTINGS) | {
        "XRT_HOME",
        privacy.PSEUDONYM_KEY_ENV,
    }


def test_a_worker_with_only_the_forwarded_env_makes_the_apps_pseudonyms(secrets_set, tmp_path):
    want = privacy.pseudonym("MRN-4711")
    env = {k: v for k, v in os.environ.items() if not k.startswith("XRT_")}
    env.update(forwarded_env())
    env["XRT_HOME"] = str(tmp_path / "elsewhere")  # not even the key file: the derived key is enough
    code = "from core.base.privacy import pseudonym; print(pseudonym('MRN-4711'))"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == want
    assert not (tmp_path / "elsewhere").exists()  # the worker never needed (or created) the secret


def test_the_pseudonym_key_is_not_the_installation_secret_and_follows_it(secrets_set, monkeypatch):
    first = privacy.pseudonym_key()
    assert first != privacy.installation_key() and b"installation-secret" not in first
    monkeypatch.setenv("XRT_SECRET", "another-installation-secret-0123456789abcdef")
    assert privacy.pseudonym_key() != first


def test_a_cluster_without_token_auth_is_refused_unless_allowed(monkeypatch):
    monkeypatch.delenv(ray_supervisor.NO_AUTH_ENV, raising=False)
    assert check_auth(True, "head:6379") == ""
    with pytest.raises(UnprotectedClusterError, match="RAY_AUTH_MODE=token") as info:
        check_auth(False, "head:6379")
    sup = ray_supervisor.RaySupervisor.__new__(ray_supervisor.RaySupervisor)
    sup.address = "head:6379"
    told = sup.connect_error(info.value)
    assert told.startswith("refused to use the Ray cluster") and "XRT_RAY_ALLOW_NO_AUTH=1" in told
    monkeypatch.setenv(ray_supervisor.NO_AUTH_ENV, "1")
    assert check_auth(False, "head:6379").startswith("WARNING")
    assert "cannot tell" in check_auth(None, "head:6379")
