"""App responsiveness: `streamlit run` to the first page rendered, and Start to the job's first progress update.

First page: a Streamlit client session (the browser's protocol over the websocket, or a real headless
Chromium when the playwright package is installed) asks for the default page; we time the page's title
arriving and the page script finishing. Start: the same call as the Start button (jobs.submit_and_start
of a "train" job on the built-in sample) until progress.json first appears and until the first batch.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import common as c

TITLE = "Dataset explorer"
PAGE_DONE = "Usable images"  # a metric the explorer shows once it has scanned the (sample) data set


def parse() -> Any:
    """Command-line options."""
    p = c.base_parser(__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=1, help="server starts measured")
    p.add_argument("--timeout", type=float, default=180.0)
    p.add_argument("--client", choices=["auto", "websocket", "browser"], default="auto")
    p.add_argument("--skip-job", action="store_true", help="only the first-page measurement")
    return p.parse_args()


def free_port() -> int:
    """An unused local TCP port."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(port: int, home: Path) -> subprocess.Popen:
    """`streamlit run streamlit_app.py` on a local port, output to a log file in the app home."""
    args = [
        sys.executable,
        "-m",
        "streamlit",
        "run",
        "streamlit_app.py",
        "--server.port",
        str(port),
        "--server.address",
        "127.0.0.1",
        "--server.headless",
        "true",
        "--browser.gatherUsageStats",
        "false",
    ]
    log = open(home / f"streamlit-{port}.log", "wb")  # noqa: SIM115 - closed with the process
    return subprocess.Popen(
        args, cwd=c.REPO, env=dict(os.environ), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
    )


def wait_health(port: int, proc: subprocess.Popen, deadline: float) -> None:
    """Block until /_stcore/health answers 200 (or the server died / time ran out)."""
    url = f"http://127.0.0.1:{port}/_stcore/health"
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"streamlit exited with code {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.05)
    raise TimeoutError("streamlit did not become healthy in time")


def websocket_page(port: int, t0: float, timeout: float) -> dict[str, float]:
    """Seconds from t0 until the title delta and the script_finished message of a fresh session."""
    from streamlit.proto.BackMsg_pb2 import BackMsg
    from streamlit.proto.ClientState_pb2 import ClientState
    from streamlit.proto.ForwardMsg_pb2 import ForwardMsg
    from websockets.sync.client import connect

    msg = BackMsg(rerun_script=ClientState(query_string="", page_script_hash=""))
    out: dict[str, float] = {}
    with connect(
        f"ws://127.0.0.1:{port}/_stcore/stream",
        subprotocols=["streamlit"],
        origin=f"http://127.0.0.1:{port}",
        max_size=None,
        open_timeout=timeout,
    ) as ws:
        ws.send(msg.SerializeToString())
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            raw = ws.recv(timeout=max(0.1, deadline - time.monotonic()))
            if isinstance(raw, bytes) and TITLE.encode() in raw and "title_s" not in out:
                out["title_s"] = time.perf_counter() - t0
            fm = ForwardMsg()
            fm.ParseFromString(raw if isinstance(raw, bytes) else raw.encode())
            if fm.WhichOneof("type") == "script_finished":
                out["page_complete_s"] = time.perf_counter() - t0
                return out
    raise TimeoutError("the first page did not finish rendering in time")


def browser_page(port: int, t0: float, timeout: float, page: Any) -> dict[str, float]:
    """Seconds from t0 until a real browser shows the page title, and the dataset summary (page complete)."""
    page.goto(f"http://127.0.0.1:{port}/", timeout=timeout * 1000)
    page.get_by_text(TITLE).first.wait_for(timeout=timeout * 1000)
    out = {"title_s": time.perf_counter() - t0}
    page.get_by_text(PAGE_DONE).first.wait_for(timeout=timeout * 1000)
    return {**out, "page_complete_s": time.perf_counter() - t0}


def have_browser() -> bool:
    """True when playwright and a Chromium binary are installed."""
    try:
        import playwright  # noqa: F401
    except ImportError:
        return False
    return Path("/usr/bin/chromium").exists()


def first_page(home: Path, client: str, timeout: float, page: Any = None) -> dict[str, float]:
    """One server start: seconds to healthy, to the title, to the page complete."""
    port = free_port()
    t0 = time.perf_counter()
    proc = start_server(port, home)
    try:
        wait_health(port, proc, time.monotonic() + timeout)
        out = {"server_healthy_s": time.perf_counter() - t0}
        out.update(
            browser_page(port, t0, timeout, page)
            if client == "browser"
            else websocket_page(port, t0, timeout)
        )
        return out
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def start_to_progress(kind: str, timeout: float) -> dict[str, Any]:
    """Submit a training job as the Start button does; seconds to the first progress and the first batch."""
    from core.base.config import DataConfig, RunConfig, SourceConfig, SplitConfig, TrainConfig, to_dict
    from core.runs import jobs
    from core.runs.progress import ProgressRecord

    cfg = RunConfig(
        name="bench-start",
        source=SourceConfig(kind="sample"),
        data=DataConfig(img_size=64, batch_size=16, split=SplitConfig(method="group")),
        train=TrainConfig(pretrained=False, epochs=1, freeze_epochs=0),
    ).validate()
    store = jobs.JobStore()
    t0 = time.perf_counter()
    job = jobs.submit_and_start(kind, {"config": to_dict(cfg)}, owner="bench", store=store)
    out: dict[str, Any] = {"submit_s": time.perf_counter() - t0}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and "first_batch_s" not in out:
        prog = ProgressRecord.read(job.run_dir)
        if prog.written and "first_progress_s" not in out:
            out["first_progress_s"], out["first_phase"] = time.perf_counter() - t0, prog.phase or None
        if prog.phase == "training" and prog.batch >= 1:
            out["first_batch_s"] = time.perf_counter() - t0
        if not store.get(job.id).active:
            break
        time.sleep(0.02)
    store.cancel(job.id)
    final = jobs.wait(job.id, store=store, timeout=120)
    out["final_status"] = final.status
    wait_gone(final.supervisor_pid, 30)  # it touches the job database once more before it exits
    return out


def wait_gone(pid: int | None, timeout: float) -> None:
    """Wait until a process has exited (zombies count as gone)."""
    from core.runs import jobs

    deadline = time.monotonic() + timeout
    while pid and jobs.proc_token(pid) is not None and time.monotonic() < deadline:
        time.sleep(0.1)


def main() -> None:
    """Measure and print the JSON line."""
    from core.data.sample import ensure_sample
    from core.runs import jobs

    args = parse()
    c.setup(args, torch_needed=False)
    auto = args.client == "auto" and have_browser() and not args.smoke
    client = "browser" if args.client == "browser" or auto else "websocket"
    result: dict[str, Any] = {
        "benchmark": "app",
        "smoke": args.smoke,
        "machine": c.machine(),
        "client": client,
    }
    with c.app_home() as home:
        ensure_sample()  # as `make run` does before starting the app
        result["first_page"] = rounds(home, client, args)
        if not args.skip_job:
            kind = "train"
            if args.smoke:  # the job machinery only: a task that reports a batch at once (no torch import)
                kind = "bench_smoke"
                jobs.register_task(kind, "bench.common:smoke_job_task")
            result["start_to_progress"] = {"job": kind, **start_to_progress(kind, args.timeout)}
    result["notes"] = [
        "times from Popen(streamlit run ...); the sample is generated beforehand, as make run does",
        "websocket client = Streamlit's own browser protocol (no paint); browser = headless Chromium",
        "start: jobs.submit_and_start (the Start button's call) -> supervisor -> job process",
    ]
    c.emit(result)


def rounds(home: Path, client: str, args: Any) -> dict[str, Any]:
    """The first-page measurement, repeated; medians and every round."""
    all_rounds = []
    browser = page = None
    if client == "browser":
        from playwright.sync_api import sync_playwright

        browser = sync_playwright().start()
        page = browser.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox"]).new_page()
    try:
        for i in range(max(1, args.rounds)):
            all_rounds.append(first_page(home, client, args.timeout, page))
            c.log(f"round {i + 1}: {all_rounds[-1]}")
    finally:
        if browser is not None:
            browser.stop()
    keys = all_rounds[0].keys()
    return {**{k: c.median([r[k] for r in all_rounds]) for k in keys}, "rounds": all_rounds}


if __name__ == "__main__":
    main()
