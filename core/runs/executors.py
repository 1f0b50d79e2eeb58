"""Where jobs run: the one executor seam, chosen from configuration, and this machine's job slots.

`executor()` is the only place that picks one: `$XRT_RAY_ADDRESS` set -> `RayExecutor` (each job runs as
a Ray task on a cluster), else `LocalExecutor` (the embedded default). Both only start supervisor
processes (`python -m core.runs.worker` / `python -m core.runs.ray_supervisor`) that claim queued jobs from the job
store, so neither the app nor this module ever imports Ray.

Slots: one running job per visible GPU by default (`$XRT_JOBS_PER_GPU` jobs per GPU; `$XRT_MAX_JOBS`
overrides the total), 1 on a CPU. A job in slot s is pinned to GPU s mod n with `CUDA_VISIBLE_DEVICES`;
on a CPU with several slots each job gets cores / slots torch threads (`XRT_TORCH_THREADS`).
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, Protocol

from core.base import paths

RAY_ADDRESS_ENV = "XRT_RAY_ADDRESS"
_SPAWNED: list[subprocess.Popen] = []  # supervisors started by this process (polled so none stay zombies)


class JobQueue(Protocol):
    """What an executor needs from the job store (core.runs.jobs.JobStore)."""

    db_path: Path

    def counts(self) -> dict[str, int]: ...

    def live_workers(self) -> int: ...


class Executor(Protocol):
    """Something that makes sure queued jobs will be run."""

    def start(self, store: JobQueue) -> None: ...


# ------------------------------------------------------------------------------------------------ slots
@functools.lru_cache(maxsize=1)
def _nvidia_smi_gpus() -> int:
    """GPUs nvidia-smi lists (0 without it); asks the driver only, so no CUDA context is made here."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return 0
    try:
        out = subprocess.run([exe, "-L"], capture_output=True, text=True, timeout=20, check=False).stdout
    except (OSError, subprocess.SubprocessError):
        return 0
    return sum(line.startswith("GPU ") for line in out.splitlines())


def visible_gpus() -> list[str]:
    """The GPUs jobs may use, as CUDA_VISIBLE_DEVICES entries: the server's own setting if any, else all."""
    given = os.environ.get("CUDA_VISIBLE_DEVICES")
    if given is None:
        return [str(i) for i in range(_nvidia_smi_gpus())]
    gpus = []
    for entry in (e.strip() for e in given.split(",")):
        if not entry or entry.startswith("-"):  # CUDA stops at the first invalid entry
            break
        gpus.append(entry)
    return gpus


def max_jobs() -> int:
    """Jobs running at once: $XRT_MAX_JOBS, else $XRT_JOBS_PER_GPU (default 1) per visible GPU, 1 on a CPU."""
    n_gpus = len(visible_gpus())
    default = n_gpus * paths.env_int("XRT_JOBS_PER_GPU", 1) if n_gpus else 1
    return paths.env_int("XRT_MAX_JOBS", default)


def slot_env(slot: int | None, n_slots: int) -> dict[str, str]:
    """Environment for a job in `slot` of `n_slots`: its GPU, or on a CPU its share of the cores."""
    if slot is None:
        return {}
    gpus = visible_gpus()
    if gpus:
        return {"CUDA_VISIBLE_DEVICES": gpus[slot % len(gpus)]}
    if n_slots > 1 and not os.environ.get("XRT_TORCH_THREADS"):
        return {"XRT_TORCH_THREADS": str(max(1, paths.cpu_cores() // n_slots))}
    return {}


# ---------------------------------------------------------------------------------------------- processes
def worker_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """Environment for worker processes: this one's (registered tasks included), repo root importable."""
    env = dict(os.environ)
    root = str(paths.REPO_ROOT)
    parts = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    env["PYTHONPATH"] = os.pathsep.join([root, *[p for p in parts if p != root]])
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra or {})
    return env


def detached_popen(args: list[str], log_path: Path) -> subprocess.Popen:
    """Start a process in its own session (survives reruns/refreshes), output appended to `log_path`."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    kwargs: dict[str, Any] = {"start_new_session": True}
    if sys.platform == "win32":  # pragma: no cover - Windows (spelled so mypy knows the flags exist there)
        kwargs = {"creationflags": subprocess.CREATE_NEW_PROCESS_GROUP | subprocess.DETACHED_PROCESS}
    with open(log_path, "ab") as log:
        return subprocess.Popen(
            args,
            cwd=paths.REPO_ROOT,
            env=worker_env(),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            close_fds=True,
            **kwargs,
        )


def start_supervisors(store: JobQueue, args: list[str], wanted: int) -> None:
    """Spawn detached supervisors (`python -m <args>`) while fewer than `wanted` live and jobs are queued."""
    for p in list(_SPAWNED):
        if p.poll() is not None:
            _SPAWNED.remove(p)
    missing = min(store.counts()["queued"], wanted - store.live_workers())
    cmd = [sys.executable, "-m", *args, "--db", str(store.db_path)]
    for _ in range(max(0, missing)):
        _SPAWNED.append(detached_popen(cmd, paths.workers_log(store.db_path.parent)))


# ---------------------------------------------------------------------------------------------- executors
class LocalExecutor:
    """Jobs in supervisor processes on this machine, one per slot (`max_jobs()`), each job in a child."""

    def __init__(self, max_concurrent: int | None = None):
        self.max_concurrent = max(1, int(max_concurrent if max_concurrent is not None else max_jobs()))

    def start(self, store: JobQueue) -> None:
        """Spawn supervisors while fewer than max_concurrent are alive and jobs are queued."""
        start_supervisors(
            store, ["core.runs.worker", "--supervise", "--max", str(self.max_concurrent)], self.max_concurrent
        )


class RayExecutor:
    """Jobs as Ray tasks on the cluster at `address`, submitted and watched by one supervisor process."""

    def __init__(self, address: str):
        self.address = address

    def start(self, store: JobQueue) -> None:
        """Spawn the Ray supervisor unless one is alive (it connects to the cluster, not this process)."""
        start_supervisors(store, ["core.runs.ray_supervisor", "--address", self.address], 1)


def executor() -> Executor:
    """The executor configured for this installation: Ray when $XRT_RAY_ADDRESS is set, else local."""
    address = os.environ.get(RAY_ADDRESS_ENV, "").strip()
    return RayExecutor(address) if address else LocalExecutor()
