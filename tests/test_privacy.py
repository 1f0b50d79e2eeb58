"""Keyed pseudonyms: HMAC with a per-installation secret, so numeric patient ids cannot be brute-forced."""

from __future__ import annotations

import hashlib
import os
import stat
import subprocess
import sys

import pytest

from core.base import paths, privacy


def _sha_prefix(value: str) -> str:
    return "anon-" + hashlib.sha256(value.encode()).hexdigest()[:12]


def test_pseudonym_is_keyed_not_a_plain_hash(monkeypatch):
    monkeypatch.delenv(privacy.KEY_ENV, raising=False)
    ids = [str(n) for n in range(0, 2000)]
    table = {_sha_prefix(i): i for i in ids}  # what an attacker without the key can precompute
    assert not any(privacy.pseudonym(i) in table for i in ids)
    assert privacy.pseudonym("123456") == privacy.pseudonym("123456")
    assert privacy.pseudonym("123456").startswith("anon-") and len(privacy.pseudonym("123456")) == 17
    assert privacy.pseudonym("") == "" and privacy.pseudonym("anon-0123456789ab") == "anon-0123456789ab"


@pytest.mark.skipif(os.name != "posix", reason="POSIX file modes")
def test_key_file_created_once_with_mode_0600(monkeypatch, _isolated_home):
    monkeypatch.delenv(privacy.KEY_ENV, raising=False)
    first = privacy.pseudonym("MRN1")
    path = _isolated_home / paths.SECRET_KEY
    assert path.is_file() and stat.S_IMODE(path.stat().st_mode) == 0o600
    key = path.read_text()
    privacy._cache.clear()
    assert privacy.pseudonym("MRN1") == first and path.read_text() == key
    leftovers = [p.name for p in _isolated_home.iterdir() if p.name.endswith(".tmp")]
    assert leftovers == []


def test_different_keys_give_different_pseudonyms(monkeypatch, tmp_path):
    monkeypatch.setenv(privacy.KEY_ENV, "a" * 40)
    a = privacy.pseudonym("4711")
    monkeypatch.setenv(privacy.KEY_ENV, "b" * 40)
    b = privacy.pseudonym("4711")
    monkeypatch.delenv(privacy.KEY_ENV)
    c = privacy.pseudonym("4711")  # this installation's key file
    monkeypatch.setenv("XRT_HOME", str(tmp_path / "other_install"))
    d = privacy.pseudonym("4711")  # another installation
    assert len({a, b, c, d}) == 4 and _sha_prefix("4711") not in {a, b, c, d}


def test_concurrent_first_use_agrees_on_one_key(tmp_path):
    env = {**os.environ, "XRT_HOME": str(tmp_path)}
    env.pop(privacy.KEY_ENV, None)
    code = "from core.base.privacy import pseudonym; print(pseudonym('42'))"
    procs = [
        subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, text=True)
        for _ in range(4)
    ]
    outs = {p.communicate(timeout=60)[0].strip() for p in procs}
    assert len(outs) == 1 and outs.pop().startswith("anon-")


def test_damaged_key_file_is_refused(monkeypatch, _isolated_home):
    monkeypatch.delenv(privacy.KEY_ENV, raising=False)
    (_isolated_home / paths.SECRET_KEY).write_text("short\n")
    with pytest.raises(RuntimeError, match="damaged"):
        privacy.pseudonym("1")


def test_run_folder_groups_use_the_keyed_pseudonym():
    from core.train.prepare import pseudonym

    assert pseudonym is privacy.pseudonym
