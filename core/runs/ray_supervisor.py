"""The Ray executor's supervisor: `python -m core.runs.ray_supervisor --address ADDRESS --db DB`.

Started by `executors.RayExecutor` (one alive per job store); only this process imports Ray. It connects
to the cluster, claims queued jobs up to the cluster's capacity and submits each as a Ray task
(`run_remote`, num_gpus=1 or $XRT_RAY_GPUS_PER_TASK, no retries) running the same job runner as a local
child (`worker.execute`). What travels is the job row (kind, params with the config, run folder path),
never images. On its node the task first checks that the run folder and the data are there at the same
path (shared storage), then writes progress.json and log.txt into the run folder and watches its STOP
file. It never opens the SQLite job store, which stays on this host: the supervisor records each
outcome, forces an unanswered cancel with ray.cancel(force=True) after $XRT_CANCEL_GRACE, and reports a
lost worker or node as failed, like a local kill -9.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.base import paths, privacy
from core.runs import executors, jobs, worker
from core.runs.jobs import Job, JobStore
from core.runs.progress import Progress

POLL_S = 0.25
GPUS_ENV, CPUS_ENV = "XRT_RAY_GPUS_PER_TASK", "XRT_RAY_CPUS_PER_TASK"
SHARED_STORAGE = "data and run folders must be on storage every Ray node mounts at the same path"
NO_AUTH_ENV = (
    "XRT_RAY_ALLOW_NO_AUTH"  # "1": use a cluster without Ray's token authentication (a private network)
)
WORKER_SETTINGS = (  # the XRT_* settings a job reads on its node; nothing else travels
    "XRT_CACHE_DIR",
    "XRT_DATA_ROOTS",
    "XRT_DECODE_MEMORY_MB",
    "XRT_EXTRA_TASKS",
    "XRT_HOSTED",
    "XRT_LOADER_MEMORY_MB",
    "XRT_MAX_FILES",
    "XRT_PACKAGE_MAX_MB",
    "XRT_PROBE_MAX",
    "XRT_TORCH_THREADS",
)
SOURCE_PATHS = ("root", "csv_path", "test_root")  # the SourceConfig fields that name files on disk
LOST = {  # Ray's exception for a task that ended without an answer -> what users are told
    "WorkerCrashedError": "the Ray worker running it was killed or crashed, perhaps out of memory",
    "NodeDiedError": "its Ray node was lost",
    "OutOfMemoryError": "Ray's memory monitor stopped it: the node ran out of memory",
    "TaskCancelledError": "the task was cancelled on the cluster",
    "OwnerDiedError": "the Ray supervisor that owned it was lost",
}


# ----------------------------------------------------------------------------------------- on the node
def data_paths(params: dict) -> list[Path]:
    """The files and folders a job's source config names (none for the sample or non-training jobs)."""
    cfg = params.get("config") if isinstance(params, dict) else None
    source = cfg.get("source") if isinstance(cfg, dict) else None
    if not isinstance(source, dict):
        return []
    return [Path(str(source[k])).expanduser() for k in SOURCE_PATHS if str(source.get(k) or "").strip()]


def missing_data(params: dict) -> str:
    """Why a job cannot run anywhere: a data path it names does not exist on the app's machine either ("" when
    all exist). Checked before submitting, so a missing folder is not reported as a shared-storage problem."""
    gone = [str(p) for p in data_paths(params) if not p.exists()]
    return f"the data {' and '.join(gone)} does not exist (check the path)" if gone else ""


def storage_problem(job: Job) -> str:
    """Why this node cannot run `job` (its run folder or data missing at the same path here), else ""."""
    missing = [] if Path(job.run_dir).is_dir() else [f"the run folder {job.run_dir}"]
    missing += [f"the data {p}" for p in data_paths(job.params) if not p.exists()]
    if not missing:
        return ""
    return f"{' and '.join(missing)} not found on Ray node {socket.gethostname()}: {SHARED_STORAGE}"


def run_remote(fields: dict) -> dict:
    """The Ray task: check shared storage on this node, then run the job here as a local child would."""
    os.chdir(paths.REPO_ROOT)  # relative paths in a config mean the same as for a local worker
    job = Job(**fields)
    problem = storage_problem(job)
    if problem:
        return {"status": "failed", "error": problem, "result": {}}
    status, error, result = worker.execute(job, store=None, on_sigterm=False)
    return {"status": status, "error": error, "result": result}


# ---------------------------------------------------------------------------------------- on this host
def forwarded_env() -> dict[str, str]:
    """Environment for the tasks on every node: the allow-listed XRT_* settings a job reads, the app home, a
    pseudonym-only key, the code on sys.path. Never the sign-in password or the installation secret: every
    process on the cluster (and, without token authentication, anyone who reaches it) can read a job's env."""
    env = {k: os.environ[k] for k in WORKER_SETTINGS if os.environ.get(k)}
    env["XRT_HOME"] = str(paths.app_home())
    env[privacy.PSEUDONYM_KEY_ENV] = privacy.pseudonym_key().decode("utf-8")
    env["PYTHONPATH"] = executors.worker_env()["PYTHONPATH"]
    env["PYTHONUNBUFFERED"] = "1"
    return env


class UnprotectedClusterError(RuntimeError):
    """The cluster accepts clients without Ray's token authentication."""


def token_auth() -> bool | None:
    """Whether this Ray client uses token authentication (a cluster that enforces it refuses clients that do
    not); None when this Ray has no such setting."""
    try:
        from ray._private.authentication.authentication_utils import is_token_auth_enabled
    except ImportError:
        return None
    return bool(is_token_auth_enabled())


def check_auth(enabled: bool | None, address: str) -> str:
    """Refuse (raise) a cluster reached without token authentication unless $XRT_RAY_ALLOW_NO_AUTH=1; the
    warning to log when allowed or when this Ray cannot tell; "" when token authentication is on."""
    if enabled:
        return ""
    if enabled is None:
        return f"WARNING: this Ray cannot tell whether {address} uses token authentication"
    what = (
        f"the Ray cluster at {address} accepts clients without token authentication: anyone who reaches it "
        "can read jobs' settings and run code on it. Start it with RAY_AUTH_MODE=token (see the README's "
        "cluster section)"
    )
    if os.environ.get(NO_AUTH_ENV, "").strip() != "1":
        raise UnprotectedClusterError(f"{what}, or set {NO_AUTH_ENV}=1 on a private network")
    return f"WARNING: {what}; allowed by {NO_AUTH_ENV}=1"


def task_options(resources: dict[str, float]) -> dict[str, Any]:
    """Ray options of a job task: one GPU (or the configured share; none on a CPU-only cluster), no retry."""
    gpus = paths.env_float(GPUS_ENV, 1.0 if resources.get("GPU", 0) >= 1 else 0.0)
    return {"num_gpus": gpus, "num_cpus": paths.env_float(CPUS_ENV, 1.0), "max_retries": 0}


def capacity(resources: dict[str, float], options: dict[str, Any], nodes: int) -> int:
    """Jobs in flight at once: $XRT_MAX_JOBS, else the cluster's GPUs / GPUs per task, else one per node."""
    if options["num_gpus"] > 0:
        default = int(resources.get("GPU", 0) // options["num_gpus"])
    else:
        default = nodes
    return paths.env_int("XRT_MAX_JOBS", max(1, default))


def lost_reason(exc: BaseException) -> str:
    """Why a task ended without an answer, worded like a local worker's death."""
    for klass in type(exc).__mro__:
        if klass.__name__ in LOST:
            return f"worker process died ({LOST[klass.__name__]})"
    cause = getattr(exc, "cause", None)  # RayTaskError: an exception raised inside the task
    return jobs.describe_error(cause if isinstance(cause, BaseException) else exc)


@dataclass
class Flight:
    """A job submitted to the cluster."""

    job: Job
    ref: Any
    started: float
    cancel_seen: float | None = None
    forced: bool = False


class RaySupervisor:
    """Claims queued jobs, runs them as Ray tasks, records their outcomes in the job store."""

    def __init__(self, store: JobStore, address: str):
        self.store, self.address, self.pid = store, address, os.getpid()
        self.flights: dict[str, Flight] = {}
        self.stopping = False
        self.ray: Any = None
        self.remote: Any = None
        self.capacity = 1
        self.next_beat = 0.0

    def _on_term(self, signum, frame):  # noqa: ARG002 - signal handler signature
        self.stopping = True

    def serve(self) -> int:
        """Take the supervisor's place, connect, then run jobs until none are queued or in flight."""
        signal.signal(signal.SIGTERM, self._on_term)
        if not self.store.register_worker(self.pid, 1):
            return 0
        try:
            try:
                self.connect()
            except Exception as exc:  # noqa: BLE001 - every queued job is told why
                self.fail_queued(self.connect_error(exc))
                return 1
            while not self.stopping and self.step():
                time.sleep(POLL_S)
        finally:
            self.stop_all()
            self.store.unregister_worker(self.pid)
            if self.ray is not None:
                with contextlib.suppress(Exception):
                    self.ray.shutdown()
        return 0

    def connect(self) -> None:
        """ray.init against the cluster; the task's options and the capacity from its resources."""
        import ray

        ray.init(
            address=self.address,
            runtime_env={"env_vars": forwarded_env()},
            namespace="xrt",
            log_to_driver=False,
            logging_level=logging.WARNING,
        )
        self.ray = ray
        warning = check_auth(token_auth(), self.address)
        if warning:
            print(warning, file=sys.stderr, flush=True)
        resources = ray.cluster_resources()
        options = task_options(resources)
        nodes = sum(1 for n in ray.nodes() if n.get("Alive"))
        self.capacity = capacity(resources, options, nodes)
        self.remote = ray.remote(max_calls=1)(run_remote).options(**options)  # a fresh process per job
        signal.signal(signal.SIGTERM, self._on_term)  # ours again after ray.init's crash handlers
        print(
            f"connected to {self.address}: {resources}; task {options}; {self.capacity} at once", flush=True
        )

    def connect_error(self, exc: BaseException) -> str:
        """What users are told when the cluster cannot be reached."""
        if isinstance(exc, UnprotectedClusterError):
            return f"refused to use the Ray cluster: {exc}"
        if isinstance(exc, ImportError):
            return "Ray is not installed on the server (pip install -r requirements-ray.txt), but XRT_RAY_ADDRESS is set"
        return f"could not connect to the Ray cluster at {self.address}: {jobs.describe_error(exc)}"

    def fail_queued(self, error: str) -> None:
        """Fail every queued job with `error` (nothing can run them)."""
        while isinstance(job := self.store.claim(self.pid, 10**6), Job):
            self.store.finish(job.id, "failed", error=error)
            worker.log_outcome(job, "failed", error, 0.0)

    def step(self) -> bool:
        """One round: record finished tasks, force overdue cancels, submit claimable jobs; False when idle."""
        self.collect()
        self.force_cancels()
        busy = self.fill()
        self.beat()
        return busy

    def fill(self) -> bool:
        """Submit queued jobs while slots are free; False when nothing is queued or in flight."""
        while len(self.flights) < self.capacity:
            job = self.store.claim(self.pid, self.capacity, release=not self.flights)
            if job is None:
                return bool(self.flights)
            if job == "busy":
                return True
            self.submit(job)
        return True

    def submit(self, job: Job) -> None:
        """Send one claimed job to the cluster (failed here when its data does not exist on this host either)."""
        missing = missing_data(job.params)
        if missing:
            self.store.finish(job.id, "failed", error=missing)
            worker.log_outcome(job, "failed", missing, 0.0)
            return
        Progress(job.run_dir).update(force=True, phase="starting", message="waiting for a Ray node")
        self.flights[job.id] = Flight(job, self.remote.remote(job.to_dict()), time.time())

    def collect(self) -> None:
        """Record the outcome of every task that has ended."""
        if not self.flights:
            return
        refs = [f.ref for f in self.flights.values()]
        ready, _ = self.ray.wait(refs, num_returns=len(refs), timeout=0)
        for flight in [f for f in self.flights.values() if f.ref in ready]:
            del self.flights[flight.job.id]
            status, error, result = self.outcome(flight)
            if jobs.record(self.store, flight.job.id, status, error=error, result=result):
                worker.log_outcome(flight.job, status, error, time.time() - flight.started)

    def outcome(self, flight: Flight) -> tuple[str, str, dict]:
        """(status, error, result) of an ended task; a task that died counts as cancelled if it was asked to."""
        try:
            out = self.ray.get(flight.ref)
            return out["status"], out["error"], out["result"]
        except Exception as exc:  # noqa: BLE001 - every way a task can end is recorded
            if flight.forced or flight.cancel_seen is not None:
                return "cancelled", "stopped by force: the task did not stop by itself", {}
            return "failed", lost_reason(exc), {}

    def force_cancels(self) -> None:
        """Notice cancel requests; force-cancel tasks that did not stop within the grace period."""
        now, grace = time.time(), worker.cancel_grace()
        for flight in self.flights.values():
            if flight.cancel_seen is None:
                cur = self.store.get(flight.job.id)
                flight.cancel_seen = now if cur is not None and cur.cancel_requested else None
            elif not flight.forced and now - flight.cancel_seen >= grace:
                self.ray.cancel(flight.ref, force=True)
                flight.forced = True

    def beat(self) -> None:
        """Refresh the heartbeats of this supervisor and its jobs every few seconds."""
        if time.time() < self.next_beat:
            return
        self.store.heartbeat(worker_pid=self.pid)
        for job_id in self.flights:
            self.store.heartbeat(job_id)
        self.next_beat = time.time() + jobs.HEARTBEAT_S

    def stop_all(self) -> None:
        """On shutdown: force-cancel tasks in flight and record them as interrupted (cancelled if asked)."""
        for flight in list(self.flights.values()):
            with contextlib.suppress(Exception):
                self.ray.cancel(flight.ref, force=True)
            cur = self.store.get(flight.job.id)
            if cur is not None and cur.cancel_requested:
                status, error = "cancelled", "stopped by force: the task did not stop by itself"
            else:
                status, error = (
                    "interrupted",
                    "interrupted: the Ray supervisor was stopped (server shutting down?)",
                )
            if self.store.finish(flight.job.id, status, error=error):
                worker.log_outcome(flight.job, status, error, time.time() - flight.started)
        self.flights.clear()


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    ap = argparse.ArgumentParser(
        prog="python -m core.runs.ray_supervisor", description=__doc__.splitlines()[0]
    )
    ap.add_argument("--db", required=True, help="path of the jobs SQLite database")
    ap.add_argument("--address", required=True, help="Ray address: auto, host:port or ray://host:port")
    args = ap.parse_args(argv)
    return RaySupervisor(JobStore(Path(args.db)), args.address).serve()


if __name__ == "__main__":
    from core.runs import ray_supervisor  # the importable copy, so Ray ships run_remote by reference

    sys.exit(ray_supervisor.main())
