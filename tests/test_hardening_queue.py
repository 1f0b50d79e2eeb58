"""Issue 24 item 15: queued jobs whose supervisor died get a new one as the app polls (no restart needed);
a Ray job whose data folder does not exist says so instead of blaming shared storage."""

from __future__ import annotations

import subprocess
import sys

from core.base.config import RunConfig, SourceConfig, to_dict
from core.runs import jobs, ray_supervisor


class Recording:
    """An executor that records being asked to start supervisors."""

    def __init__(self) -> None:
        self.starts = 0

    def start(self, store) -> None:
        self.starts += 1


def test_a_dead_supervisor_is_noticed_and_queued_jobs_get_a_new_one():
    store = jobs.JobStore()
    queued = store.submit("train", {"config": to_dict(RunConfig())})
    ex = Recording()
    jobs.revive(store, ex)
    assert ex.starts == 0  # nothing died: nothing is started (a queue is left to its live supervisors)
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        assert store.register_worker(proc.pid, 4)
    finally:
        proc.kill()
        proc.wait()
    jobs.revive(store, ex)  # the supervisor was killed while a job was queued
    assert ex.starts == 1 and store.live_workers() == 0
    assert store.get(queued.id).status == "queued"
    jobs.revive(store, ex)
    assert ex.starts == 1  # its record is gone: noticed once


def test_ray_job_with_a_missing_data_folder_says_it_does_not_exist(tmp_path):
    cfg = RunConfig(source=SourceConfig(kind="folder", root=str(tmp_path / "no-such-folder")))
    params = {"config": to_dict(cfg)}
    reason = ray_supervisor.missing_data(params)
    assert reason == f"the data {tmp_path / 'no-such-folder'} does not exist (check the path)"
    assert "shared" not in reason and "Ray node" not in reason
    (tmp_path / "no-such-folder").mkdir()
    assert ray_supervisor.missing_data(params) == ""
