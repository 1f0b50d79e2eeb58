"""The per-user settings store: round trip, users apart, unusable files dropped."""

from __future__ import annotations

import json

from core import settings_store as ss
from core.config import RunConfig, SourceConfig


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
    from core.config import to_dict

    return to_dict(src)
