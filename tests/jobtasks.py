"""Tiny job tasks for tests/test_jobs.py (imported by worker processes via $XRT_EXTRA_TASKS)."""

from __future__ import annotations

import errno
import json
import os
import time
from pathlib import Path

from core.runs.jobs import WaitForChildren
from core.runs.progress import JobCancelled, Progress


def ok(params: dict, run_dir: Path, progress: Progress) -> dict:
    """Return a result computed from the params."""
    progress.update(stage="work", value=params.get("x", 0))
    return {"double": params.get("x", 0) * 2, "pid": os.getpid()}


def boom(params: dict, run_dir: Path, progress: Progress) -> None:
    """Fail with a message."""
    raise ValueError(f"bad value {params.get('x')}")


def loop(params: dict, run_dir: Path, progress: Progress) -> dict:
    """Count until cancelled (or `n` steps), reporting every step; stops by returning."""
    i = 0
    for i in range(int(params.get("n", 10**9))):
        if progress.cancelled():
            break
        progress.update(step=i, pid=os.getpid())
        time.sleep(0.01)
    progress.flush()
    return {"steps": i}


def loop_raise(params: dict, run_dir: Path, progress: Progress) -> None:
    """Count until cancelled, then raise JobCancelled."""
    while True:
        progress.check()
        progress.update(pid=os.getpid())
        time.sleep(0.01)


def deaf(params: dict, run_dir: Path, progress: Progress) -> None:
    """Ignore cancel requests (the supervisor has to stop it)."""
    progress.update(pid=os.getpid(), force=True)
    while True:
        time.sleep(0.05)


def sleepy(params: dict, run_dir: Path, progress: Progress) -> dict:
    """Sleep a while; record start/end times."""
    start = time.time()
    progress.update(stage="sleeping", pid=os.getpid())
    time.sleep(float(params.get("s", 0.5)))
    return {"start": start, "end": time.time()}


def disk_full(params: dict, run_dir: Path, progress: Progress) -> None:
    """Fail as if the disk filled up while saving a checkpoint."""
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(run_dir / "model.pth"))


def cancelled_exc(params: dict, run_dir: Path, progress: Progress) -> None:
    """End by raising JobCancelled straight away."""
    raise JobCancelled("stop")


def where(params: dict, run_dir: Path, progress: Progress) -> dict:
    """Sleep a while; report the GPU and torch threads the job was given (its slot's environment)."""
    progress.update(stage="sleeping", pid=os.getpid())
    time.sleep(float(params.get("s", 0.5)))
    return {name: os.environ.get(name) for name in ("CUDA_VISIBLE_DEVICES", "XRT_TORCH_THREADS")}


def parent(params: dict, run_dir: Path, progress: Progress) -> dict:
    """Hand `n` jobs of kind `child` to the store; run again once they are done, report their results."""
    kids = run_dir / "kids"
    if kids.is_dir():
        found = sorted(kids.iterdir(), key=lambda p: p.name)
        return {"runs": 2, "children": [json.loads((p / "job.json").read_text())["result"] for p in found]}
    raise WaitForChildren(
        [
            {
                "kind": params["child"],
                "params": {"x": i},
                "run_dir": str(kids / str(i)),
                "label": f"part {i + 1}",
            }
            for i in range(int(params.get("n", 2)))
        ]
    )


ALL = {
    name: f"jobtasks:{name}"
    for name in (
        "ok",
        "boom",
        "loop",
        "loop_raise",
        "deaf",
        "sleepy",
        "disk_full",
        "cancelled_exc",
        "where",
        "parent",
    )
}
