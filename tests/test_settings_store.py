"""The per-user settings store: round trip, users apart, unusable files dropped."""

from __future__ import annotations

import json

from core.base.config import RunConfig, SourceConfig
from core.web import settings_store as ss


def test_round_trip_per_user_and_unusable_files():
    cfg = RunConfig(name="mine")
    cfg.train.epochs = 7
    src = SourceConfig(kind="folder", root="/data/chest")
    ss.save("alice", ss.Saved(cfg, src, "job-1"))
    got = ss.load("alice")
    assert got.run_config.train.epochs == 7 and got.source == src and got.lr_job == "job-1"
    assert ss.load("bob") == ss.Saved()  # another user finds nothing of alice's
    assert "alice" not in ss.settings_path("alice").name
    path = ss.settings_path("alice")
    path.write_text(json.dumps({"run_config": {"bogus": 1}, "source": to_plain(src), "lr_job": 3}))
    got = ss.load("alice")  # a config that no longer fits is dropped, the rest kept
    assert got.run_config is None and got.source == src and got.lr_job == ""
    path.write_text("{half")
    assert ss.load("alice") == ss.Saved()


def to_plain(src: SourceConfig) -> dict:
    """A SourceConfig as the store writes it."""
    from core.base.config import to_dict

    return to_dict(src)


def test_public_error_keeps_user_causes_and_hides_internals():
    from core.web.hosting import public_error

    text = public_error(
        "PretrainedUnavailable: weights for resnet18 could not be downloaded (no internet); "
        "or copy the file to /root/.cache/torch/hub/checkpoints/r18.pth."
    )
    assert text.startswith("PretrainedUnavailable: weights for resnet18") and "/root" not in text
    assert (
        public_error("TrainingError: training refused: only one class in /srv/lab/a/labels.csv")
        == "TrainingError: training refused: only one class in labels.csv"
    )
    assert "out of memory" in public_error(
        "worker process died (killed by signal 9 (SIGKILL), perhaps out of memory)"
    )
    assert public_error("RuntimeError: secret /srv/data/path") is None
    assert public_error("ValueError: x\nTraceback (most recent call last): ...") is None


def test_signin_tokens_and_owner_ids():
    import pytest

    from core.web import signin

    alice = signin.owner_for("user:alice")
    assert alice == signin.owner_for("user:alice") != signin.owner_for("user:bob") and len(alice) == 32
    assert signin.clean_user_name("  Alice ") == "alice"
    for bad in ("", "a b", "../x", "x" * 65):
        with pytest.raises(ValueError):
            signin.clean_user_name(bad)
    token = signin.make_token("user:alice", ttl_s=60, now=1000.0)
    assert signin.read_token(token, now=1030.0) == "user:alice"
    assert signin.read_token(token, now=1061.0) is None  # expired
    payload, mac = token.split(".")
    assert signin.read_token(payload + "." + "0" * len(mac), now=1030.0) is None  # forged
    assert signin.read_token("garbage", now=0) is None and signin.read_token("", now=0) is None
    assert signin.privacy.key_path().stat().st_mode & 0o077 == 0 and signin.SECRET_FILE == "secret.key"
