"""Job queue: worker processes, progress, cancel, concurrency cap, kill -9 / orphan detection, atomic writes."""

from __future__ import annotations

import errno
import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path
from unittest.mock import ANY

import pytest

TESTS = Path(__file__).resolve().parent
if str(TESTS.parent) not in sys.path:  # plain `pytest` (not `python -m pytest`) does not add the repo root
    sys.path.insert(0, str(TESTS.parent))

import jobtasks  # noqa: E402

from core.base import paths  # noqa: E402
from core.base.fsutil import atomic_write_bytes, atomic_writer  # noqa: E402
from core.runs import executors, jobs  # noqa: E402
from core.runs.executors import LocalExecutor  # noqa: E402
from core.runs.jobs import JobStore  # noqa: E402
from core.runs.progress import JobCancelled, Progress, read_progress  # noqa: E402
from tests.helpers import wait_for  # noqa: E402

pytestmark = pytest.mark.slow


def _kill_leftovers(db: Path) -> None:
    """Kill every process these tests started: supervisors we spawned, and job children recorded in the DB."""
    for p in list(executors._SPAWNED):
        if p.poll() is None:
            p.kill()
        p.wait(timeout=10)
    executors._SPAWNED.clear()
    if not db.exists():
        return
    con = sqlite3.connect(db)
    rows = con.execute("SELECT pid, pid_token FROM jobs WHERE pid IS NOT NULL").fetchall()
    rows += con.execute("SELECT pid, token FROM workers").fetchall()
    con.close()
    for pid, token in rows:
        if pid != os.getpid() and token is not None and jobs.pid_alive(pid, token):
            os.kill(pid, signal.SIGKILL)


@pytest.fixture(autouse=True)
def _tasks(monkeypatch):
    """Test tasks registered (and importable by workers); local executor, no GPU; leftovers killed afterwards."""
    monkeypatch.setenv(
        "PYTHONPATH", os.pathsep.join(filter(None, [str(TESTS), os.environ.get("PYTHONPATH")]))
    )
    for name in (
        "XRT_MAX_JOBS",
        "XRT_JOBS_PER_GPU",
        "XRT_CANCEL_GRACE",
        "XRT_TORCH_THREADS",
        executors.RAY_ADDRESS_ENV,
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")  # slots as on a CPU machine (tests with GPUs fake them)
    monkeypatch.setenv(jobs.EXTRA_TASKS_ENV, "")  # restored afterwards, like TASKS
    saved = dict(jobs.TASKS)
    for kind, target in jobtasks.ALL.items():
        jobs.register_task(kind, target)
    db = paths.jobs_db()
    yield
    _kill_leftovers(db)
    jobs.TASKS.clear()
    jobs.TASKS.update(saved)


def running_pid(store: JobStore, job_id: str) -> jobs.Job:
    """Wait until the job's task reports progress (so its child pid is recorded and the task is running)."""
    return wait_for(lambda: (j := store.get(job_id)) and j.pid and read_progress(j.run_dir).get("pid") and j)


# ------------------------------------------------------------------------------------------ store only
def test_job_roundtrip_list_counts_and_job_json():
    store = JobStore()
    job = store.submit("ok", {"x": 1, "nested": {"a": [1, 2]}}, owner="alice")
    store.submit("ok", {"x": 2}, owner="bob")
    got = store.get(job.id)
    assert got == job and got.active and got.status == "queued" and got.params["nested"] == {"a": [1, 2]}
    assert Path(job.run_dir) == paths.runs_dir() / job.id
    assert json.loads((Path(job.run_dir) / "job.json").read_text())["id"] == job.id
    assert [j.owner for j in store.list()] == ["bob", "alice"]  # newest first
    assert [j.id for j in store.list(owner="alice")] == [job.id]
    assert store.counts() == {
        "queued": 2,
        "running": 0,
        "done": 0,
        "failed": 0,
        "cancelled": 0,
        "interrupted": 0,
    }
    assert store.get("nope") is None
    assert set(jobs.STATUSES) == {"queued", "running", "done", "failed", "cancelled", "interrupted"}


def test_job_ids_sortable_and_unique():
    ids = [jobs.new_job_id() for _ in range(2000)]
    assert len(set(ids)) == 2000
    assert ids[0][:8].isdigit() and ids[0][8] == "-" and ids == sorted(ids, key=lambda i: i[:19])
    dirs = [jobs.prepare_run_dir()[1] for _ in range(50)]
    assert len(set(dirs)) == 50 and all(d.parent == paths.runs_dir() for d in dirs)


def test_submit_refuses_unknown_kind_and_non_json_params(tmp_path):
    store = JobStore()
    with pytest.raises(ValueError, match="unknown job kind"):
        store.submit("nope", {})
    with pytest.raises(TypeError, match="JSON"):
        store.submit("ok", {"path": tmp_path})
    assert store.list() == []


def test_cancel_queued_job_at_once_and_stale_stop_flag_cleared(tmp_path):
    store = JobStore()
    job = store.submit("ok", {}, run_dir=tmp_path / "r")
    done = store.cancel(job.id)
    assert done.status == "cancelled" and done.finished and not done.active
    assert json.loads((tmp_path / "r" / "job.json").read_text())["status"] == "cancelled"
    (tmp_path / "r" / "STOP").touch()
    store.submit("ok", {}, run_dir=tmp_path / "r")  # a reused folder must not inherit the stop flag
    assert not (tmp_path / "r" / "STOP").exists()
    with pytest.raises(KeyError):
        store.cancel("nope")


def test_liveness_works_without_proc(monkeypatch):
    """macOS and Windows have no /proc: a live pid, a reused pid, an exited child and a zombie still tell apart."""
    real_read, real_exists = Path.read_text, Path.exists

    def no_proc_read(self, *a, **k):
        if str(self).startswith("/proc"):
            raise FileNotFoundError(str(self))
        return real_read(self, *a, **k)

    monkeypatch.setattr(Path, "read_text", no_proc_read)
    monkeypatch.setattr(
        Path, "exists", lambda self: False if str(self).startswith("/proc") else real_exists(self)
    )
    me, token = os.getpid(), jobs.proc_token(os.getpid())
    assert token and jobs.pid_alive(me, token) and not jobs.pid_alive(me, token + "1")
    done = subprocess.Popen([sys.executable, "-c", "pass"])
    done.wait()
    assert jobs.proc_token(done.pid) is None and not jobs.pid_alive(done.pid, token)
    zombie = subprocess.Popen([sys.executable, "-c", "pass"])
    wait_for(lambda: jobs.proc_token(zombie.pid) is None, timeout=30)  # exited, not yet waited for
    assert zombie.poll() is not None and not jobs.pid_alive(zombie.pid, None)


def test_reap_sees_through_pid_reuse():
    store = JobStore()
    live, reused = store.submit("ok", {}), store.submit("ok", {})
    me, token = os.getpid(), jobs.proc_token(os.getpid())
    con = sqlite3.connect(store.db_path)
    for job, tok in ((live, token), (reused, "123")):  # same (alive) pid, but only one started when recorded
        con.execute(
            "UPDATE jobs SET status='running', pid=?, pid_token=?, sup_pid=?, sup_token=?, host=? WHERE id=?",
            (me, tok, me, tok, jobs.HOST, job.id),
        )
    con.commit()
    con.close()
    assert store.reap() == [reused.id]
    assert store.get(live.id).status == "running"
    assert store.get(reused.id).status == "interrupted" and "interrupted" in store.get(reused.id).error


def test_progress_throttles_merges_and_flags(tmp_path):
    prog = Progress(tmp_path, "j1")
    assert read_progress(tmp_path) == {}
    prog.update(epoch=0, loss=1.0)
    assert read_progress(tmp_path)["loss"] == 1.0
    for i in range(200):  # cheap per batch: only the first hits the disk within the interval
        prog.update(batch=i)
    assert read_progress(tmp_path).get("batch") in (None, 0)
    prog.update(epoch=1)  # a stage change is written at once
    data = read_progress(tmp_path)
    assert data["epoch"] == 1 and data["batch"] == 199 and data["job_id"] == "j1" and data["updated"] > 0
    prog.update(batch=5)
    prog.flush()
    assert read_progress(tmp_path)["batch"] == 5
    assert not prog.cancelled()
    (tmp_path / "STOP").touch()
    assert prog.cancelled()
    with pytest.raises(JobCancelled):
        prog.check()
    prog.log("hello\nworld")
    assert (tmp_path / "log.txt").read_text().splitlines()[1].endswith(" world")
    (tmp_path / "progress.json").write_text('{"epoch": 3, "los')  # torn file: tolerated
    assert read_progress(tmp_path) == {}
    assert list(tmp_path.glob("*.tmp")) == []


def test_run_inline_success_and_failure(tmp_path):
    assert jobs.run_inline("ok", {"x": 4}, run_dir=tmp_path / "a")["double"] == 8
    meta = json.loads((tmp_path / "a" / "job.json").read_text())
    assert meta["status"] == "done" and meta["result"]["double"] == 8
    assert read_progress(tmp_path / "a")["stage"] == "work"
    with pytest.raises(ValueError, match="bad value 2"):
        jobs.run_inline("boom", {"x": 2}, run_dir=tmp_path / "b")
    meta = json.loads((tmp_path / "b" / "job.json").read_text())
    assert meta["status"] == "failed" and meta["error"] == "ValueError: bad value 2"
    assert "Traceback" in (tmp_path / "b" / "log.txt").read_text()
    assert jobs.run_inline("ok", {}) == {"double": 0, "pid": os.getpid()}  # default folder: runs_dir()/<id>
    assert len(list(paths.runs_dir().iterdir())) == 1


def test_describe_error_and_signal_reason():
    assert jobs.describe_error(ValueError("x")) == "ValueError: x"
    full = OSError(errno.ENOSPC, "No space left on device", "/r/model.pth")
    assert jobs.describe_error(full).startswith(
        "the disk holding the run folder is full (while writing model.pth)"
    )
    assert "signal 9 (SIGKILL), perhaps out of memory" in jobs.signal_reason(-9)
    assert "exited with code 3" in jobs.signal_reason(3)
    assert jobs.describe_error(sqlite3.OperationalError("database or disk is full")).startswith(
        "the disk holding the job database is full"
    )
    with open("/dev/full", "wb", buffering=0) as fh, pytest.raises(OSError) as info:  # a real ENOSPC
        fh.write(b"x")
    assert jobs.describe_error(info.value).startswith("the disk holding the run folder is full;")


# ------------------------------------------------------------------------------------------ atomic writes
def test_atomic_write_replaces_and_leaves_no_partial_file(tmp_path, monkeypatch):
    target = tmp_path / "ckpt.pth"
    atomic_write_bytes(target, b"old")
    atomic_write_bytes(target, b"new")
    assert target.read_bytes() == b"new"

    def fail(*a, **k):
        raise OSError(errno.EIO, "simulated crash before rename")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(OSError):
        atomic_write_bytes(target, b"partial" * 1000)
    monkeypatch.undo()
    assert target.read_bytes() == b"new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt.pth"]


def test_atomic_write_survives_writer_killed_mid_write(tmp_path):
    target = tmp_path / "ckpt.pth"
    atomic_write_bytes(target, b"good")
    code = (
        "import sys, time; from core.base.fsutil import atomic_writer\n"
        "with atomic_writer(sys.argv[1]) as tmp, open(tmp, 'wb') as fh:\n"
        "    fh.write(b'x' * 100000); fh.flush(); print('writing', flush=True); time.sleep(60)\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code, str(target)],
        cwd=paths.REPO_ROOT,
        env=executors.worker_env(),
        stdout=subprocess.PIPE,
    )
    try:
        assert proc.stdout.readline().strip() == b"writing"
    finally:
        proc.kill()
        proc.wait()
    assert target.read_bytes() == b"good"


def test_atomic_writer_names_the_file_on_disk_full(tmp_path):
    with pytest.raises(OSError) as info, atomic_writer(tmp_path / "model.pth"):
        raise OSError(errno.ENOSPC, "No space left on device")
    assert jobs.describe_error(info.value).startswith(
        "the disk holding the run folder is full (while writing model.pth)"
    )
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------------------------------ with workers
def test_submit_runs_in_worker_to_done():
    store = JobStore()
    job = jobs.submit_and_start("ok", {"x": 21}, owner="alice", store=store)
    done = jobs.wait(job.id, store, timeout=30)
    assert done.status == "done", done.error
    assert done.result["double"] == 42 and done.result["pid"] != os.getpid()
    assert done.started >= done.created and done.finished >= done.started and done.error == ""
    run = Path(done.run_dir)
    assert "started" in (run / "log.txt").read_text() and (run / "worker.log").exists()
    assert json.loads((run / "job.json").read_text())["status"] == "done"
    wait_for(lambda: store.live_workers() == 0)  # the supervisor exits when the queue is empty


def test_failing_task_reports_message_and_logs_traceback():
    store = JobStore()
    job = jobs.submit_and_start("boom", {"x": 3}, store=store)
    done = jobs.wait(job.id, store, timeout=30)
    assert done.status == "failed" and done.error == "ValueError: bad value 3"
    log = (Path(done.run_dir) / "log.txt").read_text()
    assert "Traceback" in log and "bad value 3" in log


def test_disk_full_fails_with_readable_reason():
    store = JobStore()
    done = jobs.wait(jobs.submit_and_start("disk_full", {}, store=store).id, store, timeout=30)
    assert done.status == "failed"
    assert done.error.startswith("the disk holding the run folder is full (while writing model.pth)")


def test_task_raising_job_cancelled_ends_cancelled():
    store = JobStore()
    done = jobs.wait(jobs.submit_and_start("cancelled_exc", {}, store=store).id, store, timeout=30)
    assert done.status == "cancelled"


def test_progress_visible_from_another_process_and_cancel_is_quick():
    store = JobStore()
    job = jobs.submit_and_start("loop", {}, store=store)
    running_pid(store, job.id)
    code = "import json, sys; from core.runs.progress import read_progress; print(json.dumps(read_progress(sys.argv[1])))"
    out = subprocess.run(
        [sys.executable, "-c", code, job.run_dir],
        cwd=paths.REPO_ROOT,
        env=executors.worker_env(),
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout
    seen = json.loads(out)
    assert seen["job_id"] == job.id and seen["step"] >= 0 and seen["updated"] > 0
    assert store.get(job.id).status == "running"
    t0 = time.time()
    assert store.cancel(job.id).cancel_requested
    done = jobs.wait(job.id, store, timeout=10, poll=0.02)
    assert done.status == "cancelled" and time.time() - t0 < 1.5
    assert done.result["steps"] >= 0  # a task that returns after seeing cancelled() keeps its result


def test_cancel_running_task_that_raises():
    store = JobStore()
    job = jobs.submit_and_start("loop_raise", {}, store=store)
    running_pid(store, job.id)
    store.cancel(job.id)
    assert jobs.wait(job.id, store, timeout=10).status == "cancelled"


def test_task_ignoring_cancel_is_stopped_after_grace(monkeypatch):
    monkeypatch.setenv("XRT_CANCEL_GRACE", "0.3")
    store = JobStore()
    job = jobs.submit_and_start("deaf", {}, store=store)
    running_pid(store, job.id)
    store.cancel(job.id)
    assert jobs.wait(job.id, store, timeout=15).status == "cancelled"


def test_one_job_at_a_time_by_default():
    store = JobStore()
    a = jobs.submit_and_start("sleepy", {"s": 0.8}, store=store)
    b = jobs.submit_and_start("sleepy", {"s": 0.2}, store=store, executor=LocalExecutor())
    saw_b_waiting = False
    while store.get(b.id).active:
        counts = store.counts()
        assert counts["running"] <= 1
        if store.get(a.id).status == "running" and store.get(b.id).status == "queued":
            saw_b_waiting = True
        time.sleep(0.02)
    a, b = store.get(a.id), store.get(b.id)
    assert a.status == b.status == "done" and saw_b_waiting
    assert b.started >= a.finished and b.result["start"] >= a.result["end"]


def test_max_jobs_env_allows_two_at_once(monkeypatch):
    monkeypatch.setenv("XRT_MAX_JOBS", "2")
    assert LocalExecutor().max_concurrent == 2 and LocalExecutor(3).max_concurrent == 3
    store = JobStore()
    a = jobs.submit_and_start("sleepy", {"s": 1.5}, store=store)
    b = jobs.submit_and_start("sleepy", {"s": 1.5}, store=store)
    a, b = jobs.wait(a.id, store, timeout=30), jobs.wait(b.id, store, timeout=30)
    assert a.status == b.status == "done"
    assert b.result["start"] < a.result["end"] and a.result["start"] < b.result["end"]  # they overlapped


def test_kill9_of_job_process_fails_with_signal():
    store = JobStore()
    job = running_pid(store, jobs.submit_and_start("loop", {}, store=store).id)
    os.kill(job.pid, signal.SIGKILL)
    done = jobs.wait(job.id, store, timeout=15)
    assert done.status == "failed" and "signal 9" in done.error and "SIGKILL" in done.error
    assert "signal 9" in (Path(done.run_dir) / "log.txt").read_text()


def test_kill9_of_supervisor_and_job_is_reaped_as_interrupted():
    store = JobStore()
    job = running_pid(store, jobs.submit_and_start("loop", {}, store=store).id)
    assert job.supervisor_pid and job.supervisor_pid != job.pid
    os.kill(job.supervisor_pid, signal.SIGKILL)  # left a zombie of ours on purpose: must count as dead
    os.kill(job.pid, signal.SIGKILL)
    wait_for(lambda: jobs.proc_token(job.pid) is None and jobs.proc_token(job.supervisor_pid) is None)
    assert store.get(job.id).status == "running"  # nobody is left to say otherwise ...
    assert jobs.mark_orphans_interrupted(store) == [job.id]  # ... until the server starts again
    done = store.get(job.id)
    assert done.status == "interrupted" and not done.active and done.finished
    assert store.reap() == []
    assert json.loads((Path(done.run_dir) / "job.json").read_text())["status"] == "interrupted"


def test_sigterm_of_supervisor_interrupts_job():
    store = JobStore()
    job = running_pid(store, jobs.submit_and_start("loop", {}, store=store).id)
    os.kill(job.supervisor_pid, signal.SIGTERM)
    done = jobs.wait(job.id, store, timeout=15)
    assert done.status == "interrupted" and "SIGTERM" in done.error


def test_orphans_resume_queued_jobs_on_server_start():
    store = JobStore()
    job = store.submit("ok", {"x": 1})  # queued while no server was running
    assert jobs.mark_orphans_interrupted(store, executor=LocalExecutor()) == []
    assert jobs.wait(job.id, store, timeout=30).status == "done"


def test_two_users_submitting_at_once_get_queued_not_a_crash():
    code = (
        "import sys\nfrom core.runs import jobs\n"
        "for i in range(5):\n    jobs.submit_and_start('ok', {'x': i}, owner=sys.argv[1])\n"
    )
    env = executors.worker_env()
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code, user],
            cwd=paths.REPO_ROOT,
            env=env,
            stderr=subprocess.PIPE,
            text=True,
        )
        for user in ("alice", "bob")
    ]
    errors = []

    def submit_in_thread():  # a third "user" in this process, its own JobStore
        try:
            mine = JobStore()
            for i in range(3):
                jobs.submit_and_start("ok", {"x": i}, owner="carol", store=mine)
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    thread = threading.Thread(target=submit_in_thread)
    thread.start()
    for p in procs:
        assert p.wait(timeout=60) == 0, p.stderr.read()
    thread.join(60)
    assert not errors
    store = JobStore()
    assert len(store.list()) == 13
    for job in store.list():
        assert jobs.wait(job.id, store, timeout=60).status == "done"
    assert {j.owner for j in store.list()} == {"alice", "bob", "carol"}
    wait_for(lambda: store.live_workers() == 0)


def test_core_jobs_imports_stay_light():
    code = (
        "import sys, core.runs.jobs, core.runs.worker\n"
        "bad = [m for m in ('streamlit', 'torch', 'fastai') if m in sys.modules]\nprint(bad)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=paths.REPO_ROOT,
        env=executors.worker_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    assert out.strip() == "[]"


# ------------------------------------------------------------------------------ executor seam and slots
def test_executor_is_chosen_from_configuration_without_importing_ray(monkeypatch):
    assert isinstance(executors.executor(), LocalExecutor)
    monkeypatch.setenv(executors.RAY_ADDRESS_ENV, "ray://head:10001")
    chosen = executors.executor()
    assert isinstance(chosen, executors.RayExecutor) and chosen.address == "ray://head:10001"
    code = (
        "import sys, core.runs.jobs, core.runs.worker, core.runs.executors\n"
        "core.runs.executors.executor()\n"
        "bad = [m for m in ('streamlit', 'torch', 'fastai', 'ray') if m in sys.modules]\nprint(bad)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=paths.REPO_ROOT,
        env=executors.worker_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    assert out.strip() == "[]"


def test_slots_default_to_one_per_visible_gpu(monkeypatch):
    assert executors.visible_gpus() == [] and executors.max_jobs() == 1  # CPU: one job at a time
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3")  # the server was given GPUs 2 and 3
    assert executors.visible_gpus() == ["2", "3"] and executors.max_jobs() == 2
    monkeypatch.setenv("XRT_JOBS_PER_GPU", "2")
    assert executors.max_jobs() == 4
    assert [executors.slot_env(s, 4)["CUDA_VISIBLE_DEVICES"] for s in range(4)] == ["2", "3", "2", "3"]
    monkeypatch.setenv("XRT_MAX_JOBS", "3")
    assert executors.max_jobs() == 3 and LocalExecutor().max_concurrent == 3
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,-1,1")  # CUDA ignores entries after an invalid one
    assert executors.visible_gpus() == ["0"]
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    monkeypatch.setenv("PATH", "")  # no nvidia-smi: no GPU
    executors._nvidia_smi_gpus.cache_clear()
    assert executors.visible_gpus() == []
    executors._nvidia_smi_gpus.cache_clear()


def test_cpu_slots_share_the_cores(monkeypatch):
    assert executors.slot_env(0, 1) == {} and executors.slot_env(None, 2) == {}
    assert executors.slot_env(1, 2) == {"XRT_TORCH_THREADS": str(max(1, paths.cpu_cores() // 2))}
    monkeypatch.setenv("XRT_TORCH_THREADS", "3")  # a user's own setting wins
    assert executors.slot_env(1, 2) == {}


def test_claim_takes_the_lowest_free_slot():
    store = JobStore()
    a, b, c = (store.submit("ok", {}) for _ in range(3))
    assert store.claim(os.getpid(), 2).slot == 0 and store.claim(os.getpid(), 2).slot == 1
    assert store.claim(os.getpid(), 2) == "busy"
    store.finish(a.id, "done")
    third = store.claim(os.getpid(), 2)
    assert third.id == c.id and third.slot == 0 and store.get(b.id).slot == 1


def test_children_are_listed_by_parent_and_old_databases_are_upgraded(tmp_path):
    db = tmp_path / "old.sqlite3"
    con = sqlite3.connect(db)
    con.executescript(jobs._SCHEMA.replace(", slot INTEGER,\n    parent_id TEXT NOT NULL DEFAULT ''", ""))
    con.close()
    store = JobStore(db)
    parent = store.submit("ok", {})
    kids = [store.submit("ok", {"x": i}, parent_id=parent.id) for i in range(2)]
    assert [j.id for j in store.list(parent_id=parent.id)] == [k.id for k in reversed(kids)]
    assert store.get(kids[0].id).parent_id == parent.id and store.list(parent_id="") == [store.get(parent.id)]


def test_jobs_run_pinned_to_their_own_gpu(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")  # two (fake) GPUs: two slots, one job on each
    store = JobStore()
    started = [jobs.submit_and_start("where", {"s": 1.5}, store=store) for _ in range(2)]
    done = [jobs.wait(j.id, store, timeout=60) for j in started]
    assert [d.status for d in done] == ["done", "done"]
    assert sorted(d.slot for d in done) == [0, 1]
    assert sorted(d.result["CUDA_VISIBLE_DEVICES"] for d in done) == ["0", "1"]
    assert all(d.result["CUDA_VISIBLE_DEVICES"] == str(d.slot) for d in done)


def test_cpu_slots_run_side_by_side_with_their_share_of_threads(monkeypatch):
    monkeypatch.setenv("XRT_MAX_JOBS", "2")
    store = JobStore()
    done = [
        jobs.wait(j.id, store, timeout=60)
        for j in [jobs.submit_and_start("where", {"s": 0.5}, store=store) for _ in range(2)]
    ]
    share = str(max(1, paths.cpu_cores() // 2))
    assert [d.result["XRT_TORCH_THREADS"] for d in done] == [share, share]


# ------------------------------------------------------------------------------------------ child jobs
def test_a_parent_waits_for_its_children_without_a_slot_and_runs_again_when_they_are_done():
    store = JobStore()
    job = jobs.submit_and_start("parent", {"child": "ok", "n": 2}, store=store, executor=LocalExecutor())
    done = jobs.wait(job.id, store, timeout=60)  # one slot: the waiting parent does not hold it
    assert done.status == "done" and not done.waiting, done.error
    assert done.result == {"runs": 2, "children": [{"double": 0, "pid": ANY}, {"double": 2, "pid": ANY}]}
    kids = sorted(store.list(parent_id=job.id), key=lambda k: k.params["x"])
    assert [k.status for k in kids] == ["done", "done"] and [k.params["label"] for k in kids] == [
        "part 1",
        "part 2",
    ]
    assert all(Path(k.run_dir).parent == Path(done.run_dir) / "kids" for k in kids)
    assert done.started < kids[0].started < kids[1].started < done.finished  # its first start is kept


def test_a_failed_child_fails_its_parent_with_its_reason_and_cancels_the_others():
    store = JobStore()
    job = jobs.submit_and_start("parent", {"child": "boom", "n": 2}, store=store, executor=LocalExecutor())
    done = jobs.wait(job.id, store, timeout=60)
    assert done.status == "failed" and done.error == "part 1 failed: ValueError: bad value 0"
    kids = sorted(store.list(parent_id=job.id), key=lambda k: k.params["x"])
    assert [k.status for k in kids] == ["failed", "cancelled"] and "with its parent" in kids[1].error
    assert json.loads((Path(done.run_dir) / "job.json").read_text())["status"] == "failed"


def test_cancelling_a_waiting_parent_cancels_its_running_and_queued_children():
    store = JobStore()
    job = jobs.submit_and_start("parent", {"child": "loop", "n": 3}, store=store, executor=LocalExecutor())
    wait_for(
        lambda: any(read_progress(k.run_dir).get("step") for k in store.list(parent_id=job.id)),
        timeout=60,
    )
    waiting = store.get(job.id)
    assert waiting.status == "running" and waiting.waiting and waiting.slot is None and waiting.pid is None
    assert sorted(k.status for k in store.list(parent_id=job.id)) == ["queued", "queued", "running"]
    assert store.cancel(job.id).status == "cancelled"
    kids = [jobs.wait(k.id, store, timeout=60) for k in store.list(parent_id=job.id)]
    assert [k.status for k in kids] == ["cancelled"] * 3
    assert sorted(k.error for k in kids).count("cancelled with its parent job") == 2  # the queued two
    assert store.reap() == [] and store.get(job.id).status == "cancelled"
