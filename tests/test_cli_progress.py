"""Progress of long CLI commands: one helper (core.base.steps -> cli.StepLine) on stderr, JSON kept on stdout."""

import io
import json
import time

import pytest

from core import cli
from core.base import steps
from core.data.sample import ensure_sample


class Clock:
    """A clock the test moves."""

    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


def test_counted_reports_zero_first_then_each_item():
    seen = []
    assert list(steps.counted("abc", 3, lambda *a: seen.append(a), "files")) == ["a", "b", "c"]
    assert seen == [("files", 0, 3), ("files", 1, 3), ("files", 2, 3), ("files", 3, 3)]
    assert list(steps.counted([1], 1, None, "files")) == [1]  # no watcher: nothing to tell


def test_plain_line_every_few_seconds_with_time_left():
    out, clock = io.StringIO(), Clock()
    line = cli.StepLine("scan", every=5.0, stream=out, tty=False, clock=clock)
    for done in range(0, 5001, 100):  # 100 files per second
        clock.t = done / 100
        line("files", done, 5000)
    lines = out.getvalue().splitlines()
    assert 9 <= len(lines) <= 11  # 50 s: one line every 5 s, and the last
    assert lines[0] == "scan: 500/5000 files, 45 s left"
    assert lines[-1] == "scan: 5000/5000 files"


def test_a_new_kind_of_step_starts_a_fresh_count():
    out, clock = io.StringIO(), Clock()
    line = cli.StepLine("check", stream=out, tty=False, clock=clock)
    line("files", 10, 10)
    line("images", 0, 10)
    clock.t = 1.0
    line("images", 10, 10)
    assert out.getvalue().splitlines() == ["check: 10/10 files", "check: 10/10 images"]


def test_terminal_gets_a_tqdm_bar():
    pytest.importorskip("tqdm")
    out = io.StringIO()
    line = cli.StepLine("predict", stream=out, tty=True)
    for done in range(0, 11):
        line("files", done, 10)
    line.close()
    assert "predict" in out.getvalue() and "10/10" in out.getvalue()


def test_scan_prints_progress_on_stderr_and_json_on_stdout(tmp_path, capsys):
    root = ensure_sample(tmp_path / "s", n_patients=4)
    assert cli.main(["scan", "--root", str(root / "folder")]) == 0
    captured = capsys.readouterr()
    out = json.loads(captured.out)
    n = out["n_items"] + out["n_problems"]
    assert f"scan: {n}/{n} files" in captured.err.splitlines()


def test_sweep_waits_with_a_line_per_change(monkeypatch, capsys):
    states = [
        {"status": "queued", "counts": {"queued": 2}},
        {"status": "running", "counts": {"running": 1, "queued": 1}},
        {"status": "running", "counts": {"running": 1, "queued": 1}},  # no change: no line
        {"status": "done", "counts": {"cancelled": 1, "queued": 0, "done": 0}},
    ]
    from core.base.config import to_dict
    from core.train import experiments

    spec = to_dict(experiments.SweepSpec(axes=["epochs=1,2"]))
    records = iter({**s, "trials": [{}, {}], "spec": spec, "created": time.time()} for s in states)
    monkeypatch.setattr("core.train.experiments.refresh", lambda exp_id, store: next(records))
    cli._wait_sweep("E1", store=None, every=0.0)
    lines = capsys.readouterr().err.splitlines()
    assert lines == [
        "sweep E1: 0/2 trials done, 0 running, 2 queued",
        "sweep E1: 0/2 trials done, 1 running, 1 queued",
        "sweep E1: 0/2 trials done, 0 running, 0 queued, 1 stopped or failed",
    ]


def test_sweep_line_names_the_best_trial_so_far(monkeypatch):
    import pandas as pd

    from core.train import experiments

    table = pd.DataFrame(
        {"trial": [1, 2], "status": ["done", "done"], "balanced_accuracy": [0.7, 0.85], "job": ["a", "b"]}
    )
    from core.base.config import to_dict

    monkeypatch.setattr(experiments, "trial_table", lambda record, store, n_boot=1000: table)
    spec = experiments.SweepSpec(axes=["lr=1e-4:1e-1:log"], mode="tpe", trials=4)
    record = {
        "counts": {"done": 2, "running": 1, "pruned": 1},
        "status": "running",
        "trials": [{}, {}, {}, {}],
        "spec": to_dict(spec),
        "created": time.time() - 90,  # 3 of 4 trials ended in 90 s: about 30 s left
    }
    assert cli.sweep_line("E1", record, None) == (
        "sweep E1: 2/4 trials done, 1 running, 0 queued, 1 pruned, about 30 s left; "
        "best so far: trial 2, valid balanced_accuracy 0.850"
    )


def test_training_lines_off_a_terminal_come_per_epoch_or_every_few_seconds(tmp_path, monkeypatch):
    clock = Clock()
    monkeypatch.setattr(cli.time, "monotonic", clock)
    watch = cli._TerminalProgress(tmp_path, tty=False, every=10.0)
    assert watch._due(("training", None, 0))
    assert not watch._due(("training", None, 0))  # same epoch, too soon
    clock.t = 11.0
    assert watch._due(("training", None, 0))  # same epoch, but 10 s went by
    assert watch._due(("training", None, 1))  # a new epoch at once
