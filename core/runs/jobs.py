"""Job queue: each run executes in its own worker process; state in SQLite + the run folder.

Layout: the UI (or CLI) `submit`s a job row (status "queued") and asks the configured executor
(`core.runs.executors.executor()`, the one place that picks it) to make sure queued jobs will run. Its
supervisors claim queued jobs (each claim takes a free slot) and run each in a child process
(`core.runs.worker`) or as a Ray task (`core.runs.ray_supervisor`), and record how it ended. `reap()` finds
"running" rows whose processes are gone (pid + start time via psutil, so a reused pid is not mistaken
for the worker). A job may have a parent (`parent_id`): the seam for folds and trials as child jobs.

Child jobs: a task may end a run of itself by raising `WaitForChildren` (k-fold folds on several slots).
The parent then stays "running" but `waiting`: no process, no slot, its children queued. Its state comes
from its children whenever the store is read by a claim or a reap (`_settle_waiting`): all done -> the
parent is queued again and its task runs once more (it finds the children's results and combines them);
a child failed / interrupted / cancelled -> the parent ends the same way with that child's reason and its
other children are cancelled. Cancelling a waiting parent ends it at once and cancels its children.

File systems: the SQLite database (WAL) is opened by processes on the server's host only; run folders
(progress.json, STOP, log, results) must be one shared file system for everything that runs a job.
"""

from __future__ import annotations

import builtins
import contextlib
import dataclasses
import errno
import importlib
import json
import os
import secrets
import signal
import socket
import sqlite3
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import psutil

from core.base import paths
from core.runs import executors, rundir
from core.runs.progress import JobCancelled, Progress

__all__ = [
    "STATUSES",
    "Job",
    "WaitForChildren",
    "record",
    "TASKS",
    "register_task",
    "resolve_task",
    "JobStore",
    "submit_and_start",
    "run_inline",
    "wait",
    "mark_orphans_interrupted",
    "describe_error",
    "new_job_id",
    "prepare_run_dir",
]

STATUSES = ("queued", "running", "done", "failed", "cancelled", "interrupted")
ACTIVE = ("queued", "running")

TASKS: dict[str, str] = {
    "train": "core.train.tasks:run_task",
    "fold": "core.train.tasks:fold_task",  # one fold of a k-fold "train" job, when folds run as child jobs
    "lr_find": "core.train.tasks:lr_find_task",
}
EXTRA_TASKS_ENV = "XRT_EXTRA_TASKS"  # "kind=module:function,..." read by workers
# What runs when a job has ended, wherever its end is recorded (its worker, its supervisor, a reap): a job's
# params["on_end"] names one of these, called with the ended Job (a sweep asks for its next trial).
END_HOOKS: dict[str, str] = {"sweep": "core.train.sweep_loop:on_trial_end"}

HEARTBEAT_S = 5.0  # supervisors refresh their heartbeat this often
STALE_S = 60.0  # a heartbeat older than this means dead (used where pids cannot be checked)
# The run-folder names jobs use, as core.runs.rundir spells them (these aliases serve older importers).
PROGRESS_FILE, STOP_FILE, LOG_FILE, JOB_FILE, WORKER_LOG = (
    rundir.PROGRESS,
    rundir.STOP,
    rundir.LOG,
    rundir.JOB,
    rundir.WORKER_LOG,
)
HOST = socket.gethostname()


class WaitForChildren(Exception):
    """Raised by a task to hand its work to child jobs and run again once they are all done.

    Each child is {"kind", "params", "run_dir", "label"} ("label" names it in the parent's error, e.g. "fold 2/5").
    Only a task whose `Progress.can_spawn` is true may raise it (a worker's, not `run_inline`'s).
    """

    def __init__(self, children: list[dict]):
        super().__init__(f"waiting for {len(children)} child job(s)")
        self.children = children


# ----------------------------------------------------------------------------------------------- jobs
@dataclass
class Job:
    """One row of the job table."""

    id: str
    kind: str
    status: str
    params: dict
    run_dir: str
    created: float
    started: float | None = None
    finished: float | None = None
    error: str = ""
    pid: int | None = None
    cancel_requested: bool = False
    result: dict = field(default_factory=dict)
    owner: str = ""
    supervisor_pid: int | None = None
    heartbeat: float | None = None
    slot: int | None = None
    parent_id: str = ""
    waiting: bool = False  # running through its child jobs: no process or slot of its own

    @property
    def active(self) -> bool:
        """Queued or running."""
        return self.status in ACTIVE

    def to_dict(self) -> dict:
        """Plain JSON-ready dict (what job.json holds)."""
        return dataclasses.asdict(self)


def new_job_id() -> str:
    """Sortable, unique id: local time to the millisecond plus random hex, e.g. 20261122-015512-123-ab12cd34."""
    now = time.time()
    return f"{time.strftime('%Y%m%d-%H%M%S', time.localtime(now))}-{int(now * 1000) % 1000:03d}-{secrets.token_hex(4)}"


def prepare_run_dir(run_dir: str | os.PathLike | None = None) -> tuple[str, Path]:
    """A new job id and its run folder (default runs_dir()/<id>, created fresh); stale STOP/progress removed."""
    for _ in range(100):
        job_id = new_job_id()
        if run_dir is not None:
            rdir = Path(run_dir).expanduser().resolve()
            rdir.mkdir(parents=True, exist_ok=True)
            break
        rdir = paths.runs_dir() / job_id
        try:
            rdir.mkdir()  # atomic: two processes never share a default folder
            break
        except FileExistsError:
            continue
    else:  # pragma: no cover - 100 collisions in a row
        raise RuntimeError("could not create a unique run folder")
    folder = rundir.RunFolder(rdir)
    for stale in (folder.stop, folder.progress):  # a reused folder must not inherit a stop flag
        stale.unlink(missing_ok=True)
    return job_id, rdir


_DISK_FULL_TEXT = ("no space left on device", "disk quota exceeded", "storagefull", "os error 28")


def _chain(exc: BaseException) -> list[BaseException]:
    """`exc` and the exceptions it was raised from or during (fastai and our own wrappers chain them)."""
    out: list[BaseException] = []
    e: BaseException | None = exc
    while e is not None and all(e is not o for o in out):
        out.append(e)
        e = e.__cause__ or e.__context__
    return out


def _disk_full(exc: BaseException) -> BaseException | None:
    """The exception in `exc`'s chain that says a disk is full: an ENOSPC/EDQUOT OSError, else the text of one
    (safetensors' SafetensorError, fastai's "Exception occured in `TrainMonitor`..." rewording)."""
    chain = _chain(exc)
    for e in chain:
        if isinstance(e, OSError) and e.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", -1)):
            return e
    return next((e for e in chain if any(t in str(e).lower() for t in _DISK_FULL_TEXT)), None)


def describe_error(exc: BaseException) -> str:
    """A one-line reason for users: exception type + message; disk full and OOM spelled out."""
    if isinstance(exc, sqlite3.OperationalError) and "disk is full" in str(exc):
        return "the disk holding the job database is full; free some space and try again"
    full = _disk_full(exc)
    if full is not None:
        name = getattr(full, "filename", None)
        where = f" (while writing {Path(str(name)).name})" if name else ""
        return f"the disk holding the run folder is full{where}; free some space and start the run again"
    if isinstance(exc, MemoryError):
        return "out of memory (MemoryError); try a smaller batch size or image size"
    msg = str(exc).strip()
    text = f"{type(exc).__name__}: {msg}" if msg else type(exc).__name__
    if type(exc).__name__ == "OutOfMemoryError":  # torch.cuda.OutOfMemoryError
        text = text[:1500] + " (try a smaller batch size or image size)"
    return text if len(text) <= 2000 else text[:1997] + "..."


def signal_reason(returncode: int) -> str:
    """Why a child process ended, from its return code."""
    if returncode < 0:
        sig = -returncode
        with contextlib.suppress(ValueError):
            name = signal.Signals(sig).name
            hint = ", perhaps out of memory" if name == "SIGKILL" else ""
            return f"worker process died (killed by signal {sig} ({name}){hint})"
        return f"worker process died (killed by signal {sig})"
    return f"worker process exited with code {returncode} before reporting a result; see {rundir.WORKER_LOG}"


# ---------------------------------------------------------------------------------------------- tasks
def register_task(kind: str, target: str) -> None:
    """Register `kind` -> "module:function" here and, through $XRT_EXTRA_TASKS, in the workers started later."""
    if ":" not in target or "," in target or "=" in kind or "," in kind:
        raise ValueError(f"task target must look like 'module:function', got {target!r}")
    TASKS[kind] = target
    extra = {**_parse_extra(os.environ.get(EXTRA_TASKS_ENV, "")), kind: target}
    os.environ[EXTRA_TASKS_ENV] = ",".join(f"{k}={v}" for k, v in extra.items())


def _parse_extra(text: str) -> dict[str, str]:
    """Parse "kind=module:function,..."."""
    out = {}
    for item in filter(None, (s.strip() for s in text.split(","))):
        kind, _, target = item.partition("=")
        if kind and ":" in target:
            out[kind.strip()] = target.strip()
    return out


def load_extra_tasks() -> None:
    """Add the tasks named in $XRT_EXTRA_TASKS (how test tasks reach a worker process)."""
    TASKS.update(_parse_extra(os.environ.get(EXTRA_TASKS_ENV, "")))


def resolve_task(kind: str) -> Callable[..., dict | None]:
    """Import the function behind `kind`."""
    load_extra_tasks()
    if kind not in TASKS:
        raise ValueError(f"unknown job kind {kind!r}; known: {', '.join(sorted(TASKS))}")
    module, _, name = TASKS[kind].partition(":")
    return getattr(importlib.import_module(module), name)


# ------------------------------------------------------------------------------------- process checks
def proc_token(pid: int | None) -> str | None:
    """The process's start time (psutil, any OS), None if gone or a zombie, "" if it exists but cannot be read."""
    if not pid:
        return None
    try:
        proc = psutil.Process(pid)
        if proc.status() in (psutil.STATUS_ZOMBIE, psutil.STATUS_DEAD):
            return None
        return f"{proc.create_time():.3f}"
    except (psutil.NoSuchProcess, ValueError):  # ZombieProcess is a NoSuchProcess
        return None
    except (psutil.AccessDenied, OSError):
        return ""


def pid_alive(pid: int | None, token: str | None, host: str = "", heartbeat: float | None = None) -> bool:
    """Is the process that we recorded (pid + start token on `host`) still running?"""
    if not pid:
        return False
    if host and host != HOST:  # another machine/container: only its heartbeat can tell
        return heartbeat is not None and time.time() - heartbeat < STALE_S
    now_token = proc_token(pid)
    if now_token is None:
        return False
    if now_token == "":  # running, but its start time cannot be read (another user's): trust the heartbeat
        return heartbeat is None or time.time() - heartbeat < STALE_S
    return token is None or now_token == token


def _sync_job_json(job: Job | None) -> None:
    """Best-effort copy of the job row into run_dir/job.json."""
    if job is None:
        return
    with contextlib.suppress(OSError):
        _write_job_json(job)


def _write_job_json(job: Job) -> None:
    """job.json in the job's run folder: the job row as it is now (through the run folder's one JSON writer)."""
    rundir.RunFolder(job.run_dir).write(rundir.JOB, job.to_dict())


def _stop_or_sync(touched: Sequence[Job | None]) -> None:
    """After a cancel: a running job gets its STOP file (it stops itself); any other gets its job.json."""
    for job in filter(None, touched):
        if job.status == "running" and not job.waiting:
            with contextlib.suppress(OSError):
                Path(job.run_dir).mkdir(parents=True, exist_ok=True)
                rundir.RunFolder(job.run_dir).stop.touch()
        else:
            _sync_job_json(job)


def _new_job(kind: str, params: dict, run_dir: str | os.PathLike | None, owner: str, parent_id: str) -> Job:
    """A queued job not yet in the store: kind and params checked, its run folder made with job.json."""
    load_extra_tasks()
    if kind not in TASKS:
        raise ValueError(f"unknown job kind {kind!r}; known: {', '.join(sorted(TASKS))}")
    try:
        params_json = json.dumps(params if params is not None else {})
    except (TypeError, ValueError) as err:
        raise TypeError(f"job params must be JSON-serialisable: {err}") from err
    job_id, rdir = prepare_run_dir(run_dir)
    job = Job(
        id=job_id,
        kind=kind,
        status="queued",
        params=json.loads(params_json),
        run_dir=str(rdir),
        created=time.time(),
        owner=owner,
        parent_id=parent_id,
    )
    _write_job_json(job)  # before the row exists: a worker may rewrite it
    return job


def _note_reaped(reaped: list[Job | None]) -> None:
    """Tell the run folders of reaped jobs (job.json, log.txt) what happened; run their end hooks."""
    for job in filter(None, reaped):
        _sync_job_json(job)
        with contextlib.suppress(OSError):
            Progress(job.run_dir).log(f"job {job.id} {job.status}: {job.error}")
        run_end_hook(job)


def run_end_hook(job: Job | None) -> None:
    """Call an ended job's hook (params["on_end"], a name in END_HOOKS); a failure is logged in its run folder."""
    name = str((job.params or {}).get("on_end") or "") if job is not None else ""
    if job is None or not name or job.active:
        return
    try:
        module, _, func = END_HOOKS[name].partition(":")
        getattr(importlib.import_module(module), func)(job)
    except Exception as exc:  # noqa: BLE001 - a hook never changes how the job ended
        with contextlib.suppress(OSError):
            Progress(job.run_dir).log(f"job {job.id}: end hook {name!r} failed: {describe_error(exc)}")


# ---------------------------------------------------------------------------------------------- store
_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY, kind TEXT NOT NULL, status TEXT NOT NULL, params TEXT NOT NULL DEFAULT '{}',
    run_dir TEXT NOT NULL, owner TEXT NOT NULL DEFAULT '', created REAL NOT NULL, started REAL,
    finished REAL, error TEXT NOT NULL DEFAULT '', pid INTEGER, pid_token TEXT, sup_pid INTEGER,
    sup_token TEXT, host TEXT NOT NULL DEFAULT '', heartbeat REAL,
    cancel_requested INTEGER NOT NULL DEFAULT 0, result TEXT NOT NULL DEFAULT '{}', slot INTEGER,
    parent_id TEXT NOT NULL DEFAULT '', waiting INTEGER NOT NULL DEFAULT 0);
CREATE INDEX IF NOT EXISTS jobs_status_created ON jobs(status, created);
CREATE INDEX IF NOT EXISTS jobs_created ON jobs(created);
CREATE TABLE IF NOT EXISTS workers (
    pid INTEGER NOT NULL, token TEXT, host TEXT NOT NULL DEFAULT '', started REAL, heartbeat REAL);
"""
_ADDED_COLUMNS = {
    "slot": "slot INTEGER",
    "parent_id": "parent_id TEXT NOT NULL DEFAULT ''",
    "waiting": "waiting INTEGER NOT NULL DEFAULT 0",
}  # since the first schema


class JobStore:
    """Jobs in SQLite (WAL, busy timeout): safe from several threads and processes at once."""

    BUSY_TIMEOUT_S = 30.0

    def __init__(self, db_path: str | os.PathLike | None = None):
        self.db_path = Path(db_path) if db_path is not None else paths.jobs_db()
        self.db_path.parent.mkdir(parents=True, exist_ok=True)
        self._init_db()

    # -- connection helpers
    def _connect(self) -> sqlite3.Connection:
        con = sqlite3.connect(self.db_path, timeout=self.BUSY_TIMEOUT_S, isolation_level=None)
        con.row_factory = sqlite3.Row
        con.execute(f"PRAGMA busy_timeout={int(self.BUSY_TIMEOUT_S * 1000)}")
        con.execute("PRAGMA synchronous=NORMAL")
        return con

    @contextlib.contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        con = self._connect()
        try:
            yield con
        finally:
            con.close()

    @contextlib.contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """A write transaction that takes the lock up front (BEGIN IMMEDIATE: no upgrade deadlocks)."""
        con = self._connect()
        try:
            con.execute("BEGIN IMMEDIATE")
            try:
                yield con
            except BaseException:
                con.execute("ROLLBACK")
                raise
            con.execute("COMMIT")
        finally:
            con.close()

    def _init_db(self) -> None:
        deadline = time.time() + self.BUSY_TIMEOUT_S
        while True:
            try:
                with self._read() as con:
                    if con.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
                        con.execute("PRAGMA journal_mode=WAL")
                    con.executescript(_SCHEMA)
                    self._add_columns(con)
                return
            except sqlite3.OperationalError as err:
                if "locked" not in str(err) or time.time() > deadline:
                    raise
                time.sleep(0.05)

    @staticmethod
    def _add_columns(con: sqlite3.Connection) -> None:
        """Bring a database made by an older version up to the current columns."""
        have = {r[1] for r in con.execute("PRAGMA table_info(jobs)").fetchall()}
        for name, ddl in _ADDED_COLUMNS.items():
            if name not in have:
                with contextlib.suppress(sqlite3.OperationalError):  # another process added it first
                    con.execute(f"ALTER TABLE jobs ADD COLUMN {ddl}")
        con.execute("CREATE INDEX IF NOT EXISTS jobs_parent ON jobs(parent_id, created)")

    @staticmethod
    def _job(row: sqlite3.Row) -> Job:
        return Job(
            id=row["id"],
            kind=row["kind"],
            status=row["status"],
            params=json.loads(row["params"] or "{}"),
            run_dir=row["run_dir"],
            created=row["created"],
            started=row["started"],
            finished=row["finished"],
            error=row["error"] or "",
            pid=row["pid"],
            cancel_requested=bool(row["cancel_requested"]),
            result=json.loads(row["result"] or "{}"),
            owner=row["owner"] or "",
            supervisor_pid=row["sup_pid"],
            heartbeat=row["heartbeat"],
            slot=row["slot"],
            parent_id=row["parent_id"] or "",
            waiting=bool(row["waiting"]),
        )

    def _get(self, con: sqlite3.Connection, job_id: str) -> Job | None:
        row = con.execute("SELECT * FROM jobs WHERE id=?", (job_id,)).fetchone()
        return None if row is None else self._job(row)

    def _must_get(self, con: sqlite3.Connection, job_id: str) -> Job:
        """The job; KeyError when there is none."""
        job = self._get(con, job_id)
        if job is None:
            raise KeyError(f"no job {job_id!r}")
        return job

    # -- public API
    def submit(
        self,
        kind: str,
        params: dict,
        run_dir: str | os.PathLike | None = None,
        owner: str = "",
        parent_id: str = "",
    ) -> Job:
        """Queue a job (a child of `parent_id` if given); its run folder gets job.json (default: runs_dir()/<id>)."""
        job = _new_job(kind, params, run_dir, owner, parent_id)
        with self._write() as con:
            self._insert(con, job)
        return job

    @staticmethod
    def _insert(con: sqlite3.Connection, job: Job) -> None:
        """Add a queued job's row (a new id when the same one was drawn in the same millisecond)."""
        while True:
            try:
                con.execute(
                    "INSERT INTO jobs (id, kind, status, params, run_dir, owner, created, parent_id) "
                    "VALUES (?,?,?,?,?,?,?,?)",
                    (
                        job.id,
                        job.kind,
                        "queued",
                        json.dumps(job.params),
                        job.run_dir,
                        job.owner,
                        job.created,
                        job.parent_id,
                    ),
                )
                return
            except sqlite3.IntegrityError:
                job.id = new_job_id()
                _write_job_json(job)

    def wait_for_children(self, job_id: str, children: list[dict]) -> bool:
        """A running job hands its work to `children` (see WaitForChildren): they are queued and it waits
        without a slot; a job asked to cancel meanwhile is cancelled instead. True if the row changed."""
        parent = self.get(job_id)
        if parent is None or parent.status != "running":
            return False
        kids = [
            _new_job(
                c["kind"], {**c["params"], "label": c.get("label", "")}, c["run_dir"], parent.owner, job_id
            )
            for c in children
        ]
        with self._write() as con:
            row = con.execute("SELECT status, cancel_requested FROM jobs WHERE id=?", (job_id,)).fetchone()
            if row is None or row["status"] != "running":
                return False
            if row["cancel_requested"]:
                con.execute(
                    "UPDATE jobs SET status='cancelled', finished=? WHERE id=?", (time.time(), job_id)
                )
            else:
                for kid in kids:
                    self._insert(con, kid)
                con.execute(
                    "UPDATE jobs SET waiting=1, slot=NULL, pid=NULL, pid_token=NULL WHERE id=?", (job_id,)
                )
            job = self._get(con, job_id)
        _sync_job_json(job)
        return True

    def get(self, job_id: str) -> Job | None:
        """The job, or None."""
        with self._read() as con:
            return self._get(con, job_id)

    def list(self, owner: str | None = None, limit: int = 200, parent_id: str | None = None) -> list[Job]:
        """Jobs, newest first (optionally one owner's, and/or the children of one parent)."""
        where = {k: v for k, v in (("owner", owner), ("parent_id", parent_id)) if v is not None}
        sql = "SELECT * FROM jobs" + (" WHERE " + " AND ".join(f"{k}=?" for k in where) if where else "")
        with self._read() as con:
            rows = con.execute(
                sql + " ORDER BY created DESC, id DESC LIMIT ?", (*where.values(), int(limit))
            ).fetchall()
        return [self._job(r) for r in rows]

    def counts(self) -> dict[str, int]:
        """Number of jobs per status (every status present)."""
        with self._read() as con:
            rows = con.execute("SELECT status, COUNT(*) FROM jobs GROUP BY status").fetchall()
        out = dict.fromkeys(STATUSES, 0)
        out.update({r[0]: r[1] for r in rows})
        return out

    def cancel(self, job_id: str) -> Job:
        """Queued -> cancelled now; running -> cancel_requested + STOP file (the task stops itself)."""
        with self._write() as con:
            job = self._must_get(con, job_id)
            if job.status == "queued" or job.waiting:
                error = "cancelled while its child jobs ran" if job.waiting else "cancelled before it started"
                con.execute(
                    "UPDATE jobs SET status='cancelled', waiting=0, finished=?, error=? WHERE id=?",
                    (time.time(), error, job_id),
                )
            elif job.status == "running":
                con.execute("UPDATE jobs SET cancel_requested=1 WHERE id=?", (job_id,))
            kids = self._cancel_children(con, job_id)
            job = self._must_get(con, job_id)
        _stop_or_sync([job, *kids])
        return job

    def _cancel_children(self, con: sqlite3.Connection, job_id: str) -> builtins.list[Job]:
        """Cancel a job's queued / running children (running ones are asked to stop); returns those touched."""
        active = con.execute(
            "SELECT id FROM jobs WHERE parent_id=? AND status IN ('queued', 'running')", (job_id,)
        ).fetchall()
        con.execute(
            "UPDATE jobs SET status='cancelled', finished=?, error='cancelled with its parent job' "
            "WHERE parent_id=? AND status='queued'",
            (time.time(), job_id),
        )
        con.execute("UPDATE jobs SET cancel_requested=1 WHERE parent_id=? AND status='running'", (job_id,))
        return [self._must_get(con, r["id"]) for r in active]

    def _settle_waiting(self, con: sqlite3.Connection) -> tuple[builtins.list[str], builtins.list[Job]]:
        """Waiting parents whose children ended: all done -> queued again (to finish their work); a child
        failed / interrupted / cancelled -> the parent ends so, with its reason, and the other children are
        cancelled. Returns (ended parent ids, children asked to stop)."""
        ended: builtins.list[str] = []
        stopped: builtins.list[Job] = []
        for row in con.execute("SELECT id FROM jobs WHERE status='running' AND waiting=1").fetchall():
            kids = [
                self._job(r)
                for r in con.execute(
                    "SELECT * FROM jobs WHERE parent_id=? ORDER BY created, id", (row["id"],)
                ).fetchall()
            ]
            bad = next(
                (k for s in ("failed", "interrupted", "cancelled") for k in kids if k.status == s), None
            )
            if bad is not None:
                name = bad.params.get("label") or f"child job {bad.id}"
                verb = "failed" if bad.status == "failed" else f"was {bad.status}"
                con.execute(
                    "UPDATE jobs SET status=?, error=?, waiting=0, finished=? WHERE id=?",
                    (
                        bad.status,
                        f"{name} {verb}: {bad.error}" if bad.error else f"{name} {verb}",
                        time.time(),
                        row["id"],
                    ),
                )
                ended.append(row["id"])
                stopped += self._cancel_children(con, row["id"])
            elif not any(k.active for k in kids):
                con.execute("UPDATE jobs SET status='queued', waiting=0 WHERE id=?", (row["id"],))
        return ended, stopped

    def finish(
        self,
        job_id: str,
        status: str,
        error: str = "",
        result: dict | None = None,
        only_if_running: bool = True,
    ) -> bool:
        """Record a final status (by default only over "running"); True if the row changed."""
        if status not in STATUSES or status in ACTIVE:
            raise ValueError(f"not a final status: {status!r}")
        result_json = json.dumps(result or {}, default=str)
        with self._write() as con:
            cur = con.execute(
                "UPDATE jobs SET status=?, error=?, result=?, finished=? WHERE id=?"
                + (" AND status='running'" if only_if_running else ""),
                (status, error, result_json, time.time(), job_id),
            )
            job = self._get(con, job_id) if cur.rowcount else None
        _sync_job_json(job)
        return bool(cur.rowcount)

    def requeue(self, job_id: str, params: dict) -> Job | None:
        """An ended job (failed / interrupted / cancelled) queued again, at the back, with these params (a run
        resumed in its own folder); None when it is not in such a state. Its stale STOP and progress go."""
        with self._write() as con:
            cur = con.execute(
                "UPDATE jobs SET status='queued', params=?, error='', result='{}', created=?, started=NULL, "
                "finished=NULL, pid=NULL, pid_token=NULL, cancel_requested=0, waiting=0 "
                "WHERE id=? AND status IN ('failed', 'interrupted', 'cancelled')",
                (json.dumps(params), time.time(), job_id),
            )
            job = self._get(con, job_id) if cur.rowcount else None
        if job is not None:
            folder = rundir.RunFolder(job.run_dir)
            for stale in (folder.stop, folder.progress):
                stale.unlink(missing_ok=True)
            _sync_job_json(job)
        return job

    def delete(self, job_ids: Sequence[str]) -> bool:
        """Remove these job rows, all or none: False (nothing removed) when one is queued or running."""
        marks = ",".join("?" * len(job_ids))
        with self._write() as con:
            busy = con.execute(
                f"SELECT COUNT(*) FROM jobs WHERE id IN ({marks}) AND status IN ('queued', 'running')",
                job_ids,
            ).fetchone()[0]
            if busy:
                return False
            con.execute(f"DELETE FROM jobs WHERE id IN ({marks})", job_ids)
        return True

    def set_pid(self, job_id: str, pid: int) -> None:
        """Record the job's child process (with its start time, to see through pid reuse)."""
        with self._write() as con:
            con.execute("UPDATE jobs SET pid=?, pid_token=? WHERE id=?", (pid, proc_token(pid), job_id))

    def heartbeat(self, job_id: str | None = None, worker_pid: int | None = None) -> None:
        """Refresh a supervisor's heartbeat (and its job's)."""
        now = time.time()
        with self._write() as con:
            if job_id:
                con.execute("UPDATE jobs SET heartbeat=? WHERE id=?", (now, job_id))
            if worker_pid:
                con.execute("UPDATE workers SET heartbeat=? WHERE pid=? AND host=?", (now, worker_pid, HOST))

    def _job_alive(self, row: sqlite3.Row) -> bool:
        """Is someone still looking after this running job (its child or its supervisor)?"""
        if row["waiting"]:  # no process of its own: its children decide (_settle_waiting)
            return True
        host, hb = row["host"], row["heartbeat"]
        return pid_alive(row["pid"], row["pid_token"], host, hb) or pid_alive(
            row["sup_pid"], row["sup_token"], host, hb
        )

    def _reap(self, con: sqlite3.Connection) -> builtins.list[str]:
        changed = []
        for row in con.execute("SELECT * FROM jobs WHERE status='running'").fetchall():
            if self._job_alive(row):
                continue
            if row["cancel_requested"]:
                status, error = "cancelled", "cancelled; the worker stopped before confirming"
            else:
                status, error = (
                    "interrupted",
                    (
                        "interrupted: the worker process and its supervisor are gone "
                        "(server restarted or processes killed)"
                    ),
                )
            con.execute(
                "UPDATE jobs SET status=?, error=?, finished=? WHERE id=? AND status='running'",
                (status, error, time.time(), row["id"]),
            )
            changed.append(row["id"])
        return changed

    def reap(self) -> builtins.list[str]:
        """Running jobs whose processes are gone -> interrupted (cancelled if asked); returns their ids."""
        with self._write() as con:
            changed = self._reap(con)
            ended, stopped = self._settle_waiting(con)
            reaped = [self._get(con, i) for i in changed + ended]
        _note_reaped(reaped)
        _stop_or_sync(stopped)
        return changed + ended

    # -- used by supervisors (core.runs.worker)
    def _live_workers(self, con: sqlite3.Connection) -> int:
        rows = con.execute("SELECT rowid, * FROM workers").fetchall()
        dead = [r["rowid"] for r in rows if not pid_alive(r["pid"], r["token"], r["host"], r["heartbeat"])]
        con.executemany("DELETE FROM workers WHERE rowid=?", [(d,) for d in dead])
        return len(rows) - len(dead)

    def forget_dead_workers(self) -> int:
        """Drop the records of supervisors that died (killed, or lost with their machine); how many there were."""
        with self._write() as con:
            before = con.execute("SELECT COUNT(*) FROM workers").fetchone()[0]
            return int(before) - self._live_workers(con)

    def live_workers(self) -> int:
        """Supervisor processes alive now."""
        with self._write() as con:
            return self._live_workers(con)

    def register_worker(self, pid: int, max_workers: int) -> bool:
        """Take a supervisor slot if fewer than `max_workers` are alive."""
        now = time.time()
        with self._write() as con:
            if self._live_workers(con) >= max_workers:
                return False
            con.execute(
                "INSERT INTO workers (pid, token, host, started, heartbeat) VALUES (?,?,?,?,?)",
                (pid, proc_token(pid), HOST, now, now),
            )
            return True

    def unregister_worker(self, pid: int) -> None:
        """Give the supervisor slot back."""
        with self._write() as con:
            con.execute("DELETE FROM workers WHERE pid=? AND host=?", (pid, HOST))

    def claim(self, worker_pid: int, max_running: int, release: bool = True) -> Job | Literal["busy"] | None:
        """Atomically take the oldest queued job and the lowest free slot (0..max_running-1); "busy" if all
        slots are taken; None if nothing is queued (then, with `release`, the supervisor's slot is given back)."""
        now = time.time()
        with self._write() as con:
            changed = self._reap(con)
            ended, stopped = self._settle_waiting(con)
            changed += ended
            taken = [
                r[0]
                for r in con.execute("SELECT slot FROM jobs WHERE status='running' AND waiting=0").fetchall()
            ]
            queued = con.execute(
                "SELECT id FROM jobs WHERE status='queued' ORDER BY created, id LIMIT 1"
            ).fetchone()
            free = next((s for s in range(max_running) if s not in taken), None)
            job: Job | Literal["busy"] | None
            if queued is None:
                if release:
                    con.execute("DELETE FROM workers WHERE pid=? AND host=?", (worker_pid, HOST))
                job = None
            elif len(taken) >= max_running or free is None:  # (rows of an older version have no slot)
                job = "busy"
            else:
                con.execute(
                    "UPDATE jobs SET status='running', started=COALESCE(started, ?), sup_pid=?, sup_token=?, host=?, heartbeat=?, "
                    "pid=NULL, pid_token=NULL, slot=? WHERE id=? AND status='queued'",
                    (now, worker_pid, proc_token(worker_pid), HOST, now, free, queued["id"]),
                )
                job = self._get(con, queued["id"])
            reaped = [self._get(con, i) for i in changed]
        _note_reaped(reaped)
        _stop_or_sync(stopped)
        if isinstance(job, Job):
            _sync_job_json(job)
        return job


# ---------------------------------------------------------------------------------------- conveniences
def submit_and_start(
    kind: str,
    params: dict,
    run_dir: str | os.PathLike | None = None,
    owner: str = "",
    store: JobStore | None = None,
    executor: executors.Executor | None = None,
    parent_id: str = "",
) -> Job:
    """Queue a job and make sure it will run (on the configured executor unless one is given)."""
    store = store or JobStore()
    job = store.submit(kind, params, run_dir=run_dir, owner=owner, parent_id=parent_id)
    (executor or executors.executor()).start(store)
    return job


def record(
    store: JobStore,
    job_id: str,
    status: str,
    error: str = "",
    result: dict | None = None,
    executor: executors.Executor | None = None,
    hooks: bool = True,
) -> bool:
    """Record how one run of a job ended: a final status (then its end hook runs, unless `hooks` is False: a
    worker's child leaves that to its supervisor, whose environment is the server's), or "waiting" with its
    children (result["children"]) queued and the executor asked to run them. True if the row changed."""
    if status != "waiting":
        changed = store.finish(job_id, status, error=error, result=result)
        if changed and hooks:
            run_end_hook(store.get(job_id))
        return changed
    changed = store.wait_for_children(job_id, (result or {}).get("children", []))
    if changed:
        (executor or executors.executor()).start(store)
    return changed


def run_inline(kind: str, params: dict, run_dir: str | os.PathLike | None = None) -> dict:
    """Run a task in this process, without the job store (tests, benchmarks); errors are logged and re-raised."""
    json.dumps(params)  # same rule as submit: params must be JSON-serialisable
    job_id, rdir = prepare_run_dir(run_dir)
    job = Job(
        id=job_id,
        kind=kind,
        status="running",
        params=params,
        run_dir=str(rdir),
        created=time.time(),
        started=time.time(),
        pid=os.getpid(),
        owner="inline",
    )
    _write_job_json(job)
    progress = Progress(rdir, job_id)
    try:
        result = resolve_task(kind)(params, rdir, progress) or {}
        job.status = "cancelled" if progress.cancelled() else "done"
        job.result = result
        return result
    except JobCancelled:
        job.status = "cancelled"
        raise
    except KeyboardInterrupt:
        job.status, job.error = "interrupted", "interrupted (Ctrl+C)"
        raise
    except BaseException as exc:
        job.status, job.error = "failed", describe_error(exc)
        progress.log(f"job {job_id} failed: {job.error}\n{traceback.format_exc()}")
        raise
    finally:
        job.finished = time.time()
        with contextlib.suppress(OSError):
            progress.flush()
        _sync_job_json(job)


def wait(job_id: str, store: JobStore | None = None, timeout: float = 600, poll: float = 0.2) -> Job:
    """Block until the job is no longer queued/running (reaping dead workers now and then)."""
    store = store or JobStore()
    deadline, next_reap = time.time() + timeout, time.time() + 2.0
    while True:
        job = store.get(job_id)
        if job is None:
            raise KeyError(f"no job {job_id!r}")
        if not job.active:
            return job
        if time.time() >= deadline:
            raise TimeoutError(f"job {job_id} still {job.status} after {timeout:.0f}s")
        if time.time() >= next_reap:
            store.reap()
            next_reap = time.time() + 2.0
        time.sleep(poll)


def revive(store: JobStore, executor: executors.Executor) -> list[str]:
    """As the app polls: reap dead runs; when a supervisor was found dead (its jobs reaped, or its record stale),
    start supervisors for the jobs still queued, so they do not wait for an app restart. Returns reaped ids."""
    changed = store.reap()
    if changed or store.forget_dead_workers():
        executor.start(store)
    return changed


def mark_orphans_interrupted(
    store: JobStore | None = None, executor: executors.Executor | None = None
) -> list[str]:
    """At server start: mark running jobs whose processes are gone; with `executor`, resume queued jobs."""
    store = store or JobStore()
    changed = store.reap()
    if executor is not None:
        executor.start(store)
    return changed
