"""The Ray executor on a real local Ray cluster: the same predictions as the local executor; cancel and a
killed task reported like their local counterparts; the shared-storage check on the node."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import pandas as pd
import pytest

TESTS = Path(__file__).resolve().parent
if str(TESTS) not in sys.path:  # jobtasks, as in test_jobs
    sys.path.insert(0, str(TESTS))

import jobtasks  # noqa: E402

from core.base.config import RunConfig, SourceConfig, to_dict  # noqa: E402
from core.runs import executors, jobs, ray_supervisor, rundir  # noqa: E402
from core.runs.jobs import Job, JobStore  # noqa: E402
from core.runs.progress import read_progress  # noqa: E402
from core.runs.ray_supervisor import storage_problem  # noqa: E402
from tests.helpers import wait_for  # noqa: E402
from tests.synth import blob_dataset  # noqa: E402

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def ray_address():
    """A local 2-CPU Ray cluster for this module (started once, shut down after)."""
    ray = pytest.importorskip("ray")
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        object_store_memory=100 * 1024**2,
        log_to_driver=False,
        namespace="xrt-tests",
    )
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()


@pytest.fixture
def on_ray(ray_address, monkeypatch):
    """Jobs of this test go to the cluster; test tasks registered; supervisors stopped afterwards."""
    monkeypatch.setenv(
        "PYTHONPATH", os.pathsep.join(filter(None, [str(TESTS), os.environ.get("PYTHONPATH")]))
    )
    monkeypatch.setenv(executors.RAY_ADDRESS_ENV, ray_address)
    monkeypatch.setenv("XRT_MAX_JOBS", "2")
    monkeypatch.setenv("XRT_TORCH_THREADS", "1")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    monkeypatch.setenv(jobs.EXTRA_TASKS_ENV, "")
    monkeypatch.setenv(ray_supervisor.NO_AUTH_ENV, "1")  # the local test cluster has no token authentication
    saved = dict(jobs.TASKS)
    for kind, target in jobtasks.ALL.items():
        jobs.register_task(kind, target)
    yield ray_address
    for p in list(executors._SPAWNED):  # SIGTERM: the supervisor cancels its tasks and disconnects
        if p.poll() is None:
            p.terminate()
        try:
            p.wait(timeout=30)
        except Exception:  # noqa: BLE001 - a stuck supervisor is killed
            p.kill()
            p.wait(timeout=10)
    executors._SPAWNED.clear()
    jobs.TASKS.clear()
    jobs.TASKS.update(saved)


def task_pid(store: JobStore, job_id: str) -> int:
    """The pid the task itself reported in progress.json (on the Ray worker)."""
    return wait_for(
        lambda: store.get(job_id).status == "running" and read_progress(store.get(job_id).run_dir).get("pid"),
        timeout=120,
    )


def tiny_kfold(root: Path) -> dict:
    """Params of a 2-fold, 1-epoch, 32 px run from scratch on the blob data."""
    cfg = RunConfig(
        source=SourceConfig(kind="csv", csv_path=str(root / "labels.csv"), group_col="patient_id")
    )
    cfg.data.img_size, cfg.data.batch_size, cfg.data.aug.enabled = 32, 8, False
    cfg.data.split.k_folds = 2
    cfg.train.pretrained, cfg.train.freeze_epochs, cfg.train.epochs = False, 0, 1
    return {"config": to_dict(cfg)}


def test_kfold_on_ray_gives_the_local_out_of_fold_probabilities(on_ray, tmp_path):
    params = tiny_kfold(blob_dataset(tmp_path / "blobs", n_per_class=12))
    local_store, ray_store = JobStore(tmp_path / "local.sqlite3"), JobStore(tmp_path / "ray.sqlite3")
    local = jobs.submit_and_start("train", params, store=local_store, executor=executors.LocalExecutor())
    remote = jobs.submit_and_start("train", params, store=ray_store)  # XRT_RAY_ADDRESS: the Ray executor
    local, remote = (
        jobs.wait(local.id, local_store, timeout=400),
        jobs.wait(remote.id, ray_store, timeout=400),
    )
    assert local.status == remote.status == "done", (local.error, remote.error)
    assert remote.supervisor_pid != local.supervisor_pid and remote.pid is None  # ran on Ray, not in a child
    oof = [
        pd.read_csv(rundir.RunFolder(j.run_dir).predictions("oof")).sort_values("path")
        for j in (local, remote)
    ]
    probs = [o.filter(like="prob_").to_numpy() for o in oof]
    assert list(oof[0]["path"]) == list(oof[1]["path"]) and len(probs[0]) == 24
    assert abs(probs[0] - probs[1]).max() <= 1e-6
    assert "started on" in rundir.RunFolder(remote.run_dir).log.read_text()
    assert read_progress(remote.run_dir)["job_id"] == remote.id


def test_cancel_on_ray_is_cooperative_first_then_forced(on_ray, monkeypatch):
    monkeypatch.setenv("XRT_CANCEL_GRACE", "1")
    store = JobStore()
    polite, deaf = (jobs.submit_and_start(kind, {}, store=store) for kind in ("loop", "deaf"))
    for job in (polite, deaf):
        task_pid(store, job.id)
        store.cancel(job.id)
    polite, deaf = jobs.wait(polite.id, store, timeout=60), jobs.wait(deaf.id, store, timeout=60)
    assert (
        polite.status == "cancelled" and polite.result["steps"] >= 0
    )  # it stopped itself and kept its result
    assert deaf.status == "cancelled" and "stopped by force" in deaf.error  # as a local supervisor says it


def test_a_killed_ray_task_fails_like_a_local_kill9(on_ray):
    store = JobStore()
    job = jobs.submit_and_start("loop", {}, store=store)
    os.kill(task_pid(store, job.id), signal.SIGKILL)
    done = jobs.wait(job.id, store, timeout=60)
    local_words = jobs.signal_reason(-9).split(" (")[0]
    assert done.status == "failed" and done.error.startswith(local_words + " (")
    assert "failed" in rundir.RunFolder(done.run_dir).log.read_text()


def test_a_node_without_the_shared_storage_refuses_the_job(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    params = {"config": {"source": {"kind": "csv", "csv_path": str(tmp_path / "nowhere" / "labels.csv")}}}
    job = Job(id="j", kind="train", status="running", params=params, run_dir=str(run), created=0.0)
    assert "the data" in storage_problem(job) and "mounts at the same path" in storage_problem(job)
    job.params = {"config": {"source": {"kind": "sample"}}}
    assert storage_problem(job) == ""
    job.run_dir = str(tmp_path / "elsewhere")
    assert storage_problem(job).startswith(f"the run folder {job.run_dir} not found on Ray node ")


def test_a_model_based_sweep_goes_on_by_itself_on_ray(on_ray, tmp_path):
    from core.train import experiments as ex

    jobs.register_task("train", "sweeptasks:scripted")
    root = blob_dataset(tmp_path / "blobs", n_per_class=6)
    cfg = RunConfig(source=SourceConfig(kind="csv", csv_path=str(root / "labels.csv")))
    cfg.train.epochs = 2
    spec = ex.SweepSpec(axes=["lr=1e-4:1e-1:log"], mode="tpe", trials=3, parallel=1, pruner="median")
    store = JobStore()
    record = ex.start(spec, cfg, store=store)
    assert len(record["trials"]) == 1  # the others are asked for by the Ray supervisor as trials end

    def finished() -> dict | None:  # read without refresh: nobody watches
        now = ex.read(record["id"])
        now = {**now, **ex.status(now, store)}
        return now if len(now["trials"]) == 3 and now["status"] not in jobs.ACTIVE else None

    done = wait_for(finished, timeout=240, poll=0.5)
    assert set(done["counts"]) <= {"done", "pruned"} and sum(done["counts"].values()) == 3
