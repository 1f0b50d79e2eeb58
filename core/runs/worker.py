"""Worker processes: `python -m core.runs.worker --supervise [--max N] --db DB` or `--job ID --db DB`.

A supervisor (the local executor's) takes a place (at most N alive), claims queued jobs one after another,
runs each in its own child process pinned to the job's slot (`executors.slot_env`: its GPU, or its share
of the cores), and reports a child that died without a result (kill -9, OOM) as failed with the signal.
A child runs the task (`execute`: the same job runner a Ray task uses) and records done / failed / cancelled,
or "waiting" when the task handed its work to child jobs (`jobs.WaitForChildren`, e.g. k-fold folds).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import time
import traceback
from pathlib import Path

from core.base import paths
from core.runs import executors, jobs, rundir
from core.runs.jobs import Job, JobStore
from core.runs.progress import JobCancelled, Progress

POLL_S = 0.25
STARTING = "loading the training libraries"  # the job's first progress message, written from its own process


class Terminated(BaseException):
    """SIGTERM arrived (server shutting down, or a cancel that was not honoured in time)."""


def _raise_terminated(signum, frame):  # noqa: ARG001 - signal handler signature
    raise Terminated()


def cancel_grace() -> float:
    """Seconds a task gets to honour a cancel before the supervisor stops it by force ($XRT_CANCEL_GRACE)."""
    return paths.env_float("XRT_CANCEL_GRACE", 30.0)


# ---------------------------------------------------------------------------------------------- child
def execute(job: Job, store: JobStore | None = None, on_sigterm: bool = True) -> tuple[str, str, dict]:
    """Run a claimed job's task in this process: (status, error, result); cancel through the STOP file
    (and the store's flag when given); with `on_sigterm`, SIGTERM ends it as interrupted. A task that raised
    WaitForChildren ends as "waiting" with result {"children": [...]} (for `jobs.record`)."""
    if on_sigterm:
        signal.signal(signal.SIGTERM, _raise_terminated)
    job_id, run_dir = job.id, Path(job.run_dir)
    progress = Progress(run_dir, job_id, store, can_spawn=True)
    status, error, result = "failed", "", {}
    try:
        progress.log(f"job {job_id} ({job.kind}) started on {jobs.HOST}, pid {os.getpid()}")
        progress.update(force=True, phase="starting", message=STARTING)
        fn = jobs.resolve_task(job.kind)
        value = fn(job.params, run_dir, progress)
        result = value if isinstance(value, dict) else ({} if value is None else {"value": value})
        status = "cancelled" if progress.cancelled() else "done"
    except JobCancelled:
        status = "cancelled"
    except jobs.WaitForChildren as wait:
        status, result = "waiting", {"children": wait.children}
        progress.log(f"job {job_id} handed its work to {len(wait.children)} child job(s)")
    except Terminated:
        status = "cancelled" if progress.cancelled() else "interrupted"
        error = (
            "" if status == "cancelled" else "interrupted: worker stopped by SIGTERM (server shutting down?)"
        )
    except BaseException as exc:  # noqa: BLE001 - every failure becomes a readable job error
        error = jobs.describe_error(exc)
        with contextlib.suppress(OSError):
            progress.log(f"job {job_id} failed: {error}\n{traceback.format_exc()}")
        traceback.print_exc()
    if on_sigterm:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # let the outcome be recorded; SIGKILL still works
    with contextlib.suppress(OSError):
        progress.flush()
    return status, error, result


def log_outcome(job: Job, status: str, error: str, seconds: float) -> None:
    """One line in the run's log.txt saying how the job ended."""
    with contextlib.suppress(OSError):
        Progress(job.run_dir).log(
            f"job {job.id} {status} after {seconds:.1f}s" + (f": {error}" if error else "")
        )


def run_job(store: JobStore, job_id: str) -> int:
    """Run one claimed job in this process and record how it ended."""
    job = store.get(job_id)
    if job is None or job.status != "running":
        return 0
    t0 = time.time()
    status, error, result = execute(job, store)
    jobs.record(store, job_id, status, error=error, result=result, hooks=False)  # the supervisor runs them
    log_outcome(job, status, error, time.time() - t0)
    return 0


# ------------------------------------------------------------------------------------------ supervisor
class Supervisor:
    """Claims queued jobs one after another; each runs in a child process watched from here."""

    def __init__(self, store: JobStore, max_jobs: int):
        self.store, self.max_jobs, self.pid = store, max_jobs, os.getpid()
        self.child: subprocess.Popen | None = None
        self.stopping = False

    def _on_term(self, signum, frame):  # noqa: ARG002
        self.stopping = True
        if self.child is not None and self.child.poll() is None:
            with contextlib.suppress(OSError):
                self.child.terminate()

    def serve(self) -> int:
        """Take a slot, then run jobs until none are queued."""
        signal.signal(signal.SIGTERM, self._on_term)
        if not self.store.register_worker(self.pid, self.max_jobs):
            return 0
        try:
            while not self.stopping:
                job = self.store.claim(self.pid, self.max_jobs)
                if job is None:  # claim released our slot in the same transaction
                    return 0
                if job == "busy":
                    self.store.heartbeat(worker_pid=self.pid)
                    time.sleep(1.0)
                    continue
                self.run_one(job)
        finally:
            self.store.unregister_worker(self.pid)
        return 0

    def run_one(self, job: jobs.Job) -> None:
        """Run one job in a child process; report how it ended if the child could not."""
        folder = rundir.RunFolder(job.run_dir)
        args = [sys.executable, "-m", "core.runs.worker", "--db", str(self.store.db_path), "--job", job.id]
        try:
            folder.path.mkdir(parents=True, exist_ok=True)
            with open(folder.worker_log, "ab") as log:
                self.child = subprocess.Popen(
                    args,
                    cwd=jobs.paths.REPO_ROOT,
                    env=executors.worker_env(executors.slot_env(job.slot, self.max_jobs)),
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
        except OSError as exc:
            self.store.finish(
                job.id, "failed", error=f"could not start the worker: {jobs.describe_error(exc)}"
            )
            return
        self.store.set_pid(job.id, self.child.pid)
        rc = self.watch(job, self.child)
        self.child = None
        after = self.store.get(job.id)
        if after is None or after.waiting:
            return
        if after.status != "running":  # the child recorded how it ended: its end hook runs here
            jobs.run_end_hook(after)
            return
        if after.cancel_requested:
            status, error = "cancelled", "stopped by force: the task did not stop by itself"
        elif self.stopping:
            status, error = "interrupted", "interrupted: worker stopped by SIGTERM (server shutting down?)"
        else:
            status, error = "failed", jobs.signal_reason(rc)
        if self.store.finish(job.id, status, error=error):
            with contextlib.suppress(OSError):
                Progress(folder.path).log(f"job {job.id} {status}: {error}")
            jobs.run_end_hook(self.store.get(job.id))

    def watch(self, job: jobs.Job, child: subprocess.Popen) -> int:
        """Wait for the child; heartbeat; escalate an unanswered cancel (SIGTERM, then SIGKILL)."""
        grace = cancel_grace()
        next_beat, cancel_seen, term_sent = 0.0, None, None
        while True:
            try:
                return child.wait(timeout=POLL_S)
            except subprocess.TimeoutExpired:
                pass
            now = time.time()
            if now >= next_beat:
                with contextlib.suppress(Exception):
                    self.store.heartbeat(job.id, self.pid)
                next_beat = now + jobs.HEARTBEAT_S
            if cancel_seen is None:
                with contextlib.suppress(Exception):
                    cur = self.store.get(job.id)
                    cancel_seen = now if cur is not None and cur.cancel_requested else None
            elif term_sent is None and now - cancel_seen >= grace:
                child.terminate()
                term_sent = now
            elif term_sent is not None and now - term_sent >= 10.0:
                child.kill()
            if self.stopping and term_sent is None:
                child.terminate()
                term_sent = now


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    ap = argparse.ArgumentParser(prog="python -m core.runs.worker", description=__doc__.splitlines()[0])
    ap.add_argument("--db", required=True, help="path of the jobs SQLite database")
    mode = ap.add_mutually_exclusive_group(required=True)
    mode.add_argument("--supervise", action="store_true", help="run queued jobs until none are left")
    mode.add_argument("--job", help="run this one claimed job in this process")
    ap.add_argument(
        "--max", type=int, default=None, help="jobs at once (default: executors.max_jobs(), one per GPU)"
    )
    args = ap.parse_args(argv)
    jobs.load_extra_tasks()
    store = JobStore(Path(args.db))
    if args.job:
        return run_job(store, args.job)
    max_jobs = args.max if args.max is not None else executors.max_jobs()
    return Supervisor(store, max(1, max_jobs)).serve()


if __name__ == "__main__":
    sys.exit(main())
