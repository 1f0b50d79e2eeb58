"""Every benchmark script still runs: bench/*.py --smoke prints exactly one JSON line with its result keys."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
NEEDS_SHARED = {
    "bench_train",
    "bench_kfold",
    "bench_ingest",
    "bench_predict",
    "bench_parity",
    "bench_sweep",
    "bench_defaults",
    "bench_overhead",
    "bench_defend",
    "bench_tasks",
}
EXPECTED: dict[str, list[tuple[str, ...]]] = {
    "bench_train": [
        ("cases", "small", "ratio_app_vs_plain"),
        ("cases", "large", "ratio_app_vs_plain"),
        ("cases", "small", "app", "accuracy"),
        ("cases", "large", "loader_only"),
    ],
    "bench_kfold": [
        ("datasets", "large", "speedup_app_vs_plain"),
        ("datasets", "large", "app", "seconds"),
        ("datasets", "large", "separate_runs", "speedup_app_vs_plain"),
    ],
    "bench_ingest": [
        ("cases", "images_validated", "runs"),
        ("cases", "dicom_dx_1024", "memory_bounded"),
        ("memory_bounded",),
    ],
    "bench_predict": [("batch", "ratio_app_vs_raw"), ("single", "total_ms"), ("model_load_s",)],
    "bench_app": [
        ("first_page", "server_healthy_s"),
        ("first_page", "page_complete_s"),
        ("start_to_progress", "first_progress_s"),
        ("start_to_progress", "first_batch_s"),
    ],
    "bench_gpu": [("machine", "device")],
    "fault_inject": [
        ("tried",),
        ("refused",),
        ("crashed",),
        ("peak_rss_mb",),
        ("memory_probe", "hostile_rgba_9400_png", "peak_growth_mb"),
    ],
    "bench_checks": [("ratio_warm_vs_scan",), ("warm", "shortcut_s"), ("cold", "features_s")],
    "bench_defend": [("summary", "coverage_0.90", "mean"), ("per_seed",), ("summary", "ece_before")],
    "bench_tasks": [
        ("ordinal", "corn_median", "qwk", "mean"),
        ("ordinal", "ce_median", "mae", "mean"),
        ("ordinal", "ce_expected", "off_by_one", "mean"),
        ("ordinal", "per_seed"),
        ("multilabel", "vs_plain", "time_ratio_plain_over_app"),
    ],
    "bench_parity": [
        ("vs_plain", "app", "time_ratio_plain_over_app"),
        ("sides", "app", "accuracy", "mean"),
        ("sides", "plain", "roc_auc", "sd"),
    ],
    "bench_defaults": [
        ("vs_plain", "auc_diff"),
        ("sides", "app", "runs"),
        ("training", "ratio"),
        ("predict", "1_threads", "ratio"),
    ],
}
EXPECTED["bench_overhead"] = [
    ("throughput_after_epoch_1", "vs_raw_fused"),
    ("epoch_s", "app"),
    ("plan", "batch_size"),
]
EXPECTED["bench_sweep"] = [
    ("modes", "tpe", "best_valid", "mean"),
    ("modes", "grid", "epochs", "mean"),
    ("modes", "random", "best_test", "values"),
]
EXTRA_ARGS = {
    "bench_kfold": ["--datasets", "large"],
    "bench_parity": ["--datasets", "pneumonia", "--seeds", "2"],
    "bench_defaults": ["--datasets", "pneumonia"],
}
TIMEOUT_S = 240

pytestmark = pytest.mark.slow


def _scripts() -> list[str]:
    """Scripts that can run here (the ones reading ../shared/data need it)."""
    return [s for s in EXPECTED if SHARED.is_dir() or s not in NEEDS_SHARED]


@pytest.fixture(scope="module")
def outputs(tmp_path_factory) -> dict[str, subprocess.CompletedProcess]:
    """Run every script's --smoke mode at once (one torch thread each) and collect their output."""
    env = {
        **os.environ,
        "XRT_BENCH_THREADS": "1",
        "XRT_BENCH_DATA": str(tmp_path_factory.mktemp("bench-data")),
        "PYTHONWARNINGS": "ignore",
    }
    procs = {
        name: subprocess.Popen(
            [sys.executable, str(ROOT / "bench" / f"{name}.py"), "--smoke", *EXTRA_ARGS.get(name, [])],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name in _scripts()
    }
    deadline, results = time.monotonic() + TIMEOUT_S, {}
    for name, proc in procs.items():
        try:
            out, err = proc.communicate(timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
        results[name] = subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
    return results


def _get(data: dict, path: tuple[str, ...]):
    """A nested value, or KeyError naming the missing path."""
    for key in path:
        data = data[key]
    return data


@pytest.mark.parametrize("name", list(EXPECTED))
def test_smoke_prints_one_json_line(outputs, name):
    if name not in outputs:
        pytest.skip("../shared/data is not present")
    res = outputs[name]
    assert res.returncode == 0, res.stderr[-3000:]
    lines = [ln for ln in res.stdout.splitlines() if ln.strip()]
    assert len(lines) == 1, res.stdout[-2000:]
    data = json.loads(lines[0])
    assert data["benchmark"] == name.removeprefix("bench_") and data["smoke"] is True
    if data.get("skipped"):
        assert name == "bench_gpu" and data["skipped"] == "no CUDA device"
        return
    for path in EXPECTED[name]:
        _get(data, path)
