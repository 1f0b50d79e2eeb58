"""The command line: scan prints JSON, bad input exits non-zero with a clear message."""

import json
import subprocess
import sys
from pathlib import Path

from core.cli import main
from core.sample import ensure_sample

ROOT = Path(__file__).resolve().parents[1]


def test_scan_sample_csv(tmp_path, capsys):
    root = ensure_sample(tmp_path / "s", n_patients=8)
    assert main(["scan", "--csv", str(root / "labels.csv"), "--group-col", "patient_id",
                 "--problems-out", str(tmp_path / "p.csv")]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["n_problems"] == 0 and out["n_classes"] == 2 and out["n_groups"] == 8
    assert (tmp_path / "p.csv").exists()


def test_scan_reports_bad_files(tmp_path, capsys):
    root = ensure_sample(tmp_path / "s", n_patients=4)
    (root / "folder" / "clear" / "broken.png").write_bytes(b"<html>not an image</html>")
    assert main(["scan", "--root", str(root / "folder")]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["n_problems"] == 1 and "broken.png" in out["problems"][0]["path"]


def test_bad_input_exits_non_zero_without_traceback(tmp_path):
    res = subprocess.run([sys.executable, "-m", "core", "scan", "--root", str(tmp_path / "missing")],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert res.returncode == 1
    assert res.stderr.startswith("error:") and "Traceback" not in res.stderr


def test_train_refuses_bad_config(tmp_path, capsys):
    root = ensure_sample(tmp_path / "s", n_patients=4)
    assert main(["train", "--csv", str(root / "labels.csv"), "--valid-pct", "1.5"]) == 1
    assert "valid_pct" in capsys.readouterr().err
