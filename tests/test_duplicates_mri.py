"""The near-duplicate rule on MRI-like data: neighbouring slices of one head are not duplicates (issue 28 item 8)."""

from __future__ import annotations

from pathlib import Path

from streamlit.testing.v1 import AppTest

from core.data.tables import from_csv
from core.evaluation import checks, plots
from tests.synth import brain_slices

ROOT = Path(__file__).resolve().parents[1]


def test_neighbouring_slices_are_not_near_duplicates_but_re_saves_are(tmp_path):
    ds = from_csv(brain_slices(tmp_path / "mri"), group_col="patient_id")
    feats = checks.image_features(ds.items)
    dups = checks.find_duplicates(ds.items, feats)
    found = {frozenset(p) for p in zip(dups["a"], dups["b"])}
    planted = {frozenset((f"a/s0_z{z:02d}.png", f"b/copy_s0_z{z:02d}.jpg")) for z in range(2)}
    assert found == planted, sorted(map(sorted, found - planted))
    # the old rule (16 x 16 thumbnails correlating 0.99) took neighbouring levels of one head for copies
    loose = checks.find_duplicates(ds.items, feats, min_correlation=0.99)
    assert any("_z" in a and "_z" in b and "copy" not in a + b for a, b in zip(loose["a"], loose["b"]))
    said = checks.pair_reason(dups.iloc[0])
    assert said.startswith("near-duplicate: perceptual hashes differ in") and "labels a / b" in said
    assert "different patients" in said


def test_shortcut_chart_labels_sit_above_the_bars():
    fig = plots.shortcut_features([{"what": "image width", "auc": 0.95}, {"what": "format", "auc": 0.6}])
    labels = [a for a in fig.layout.annotations if a.text in ("chance", "warning")]
    assert len(labels) == 2 and all(a.yanchor == "bottom" and a.y >= 1 for a in labels)


def test_explorer_shows_each_pair_side_by_side_with_the_reason(tmp_path):
    csv = brain_slices(tmp_path / "mri", subjects=2, levels=8)
    at = AppTest.from_file(str(ROOT / "pages/1_dataset.py"), default_timeout=60)
    at.query_params["owner"] = "ab" * 16
    at.run()
    at.selectbox(key="src_choice").set_value("csv").run()
    at.text_input(key="src_csv").input(str(csv)).run()
    at.button(key="chk_run").click().run()
    assert not at.exception, at.exception
    assert next(m.value for m in at.metric if m.label == "Duplicate pairs") == "2"
    reasons = [m.value for m in at.markdown if m.value.startswith("near-duplicate: perceptual hashes")]
    assert len(reasons) == 2 and all("labels a / b" in r for r in reasons)
    captions = [img.caption for i in at.image for img in i.proto.imgs]
    assert any(c.startswith("a/s0_z00.png (a)") for c in captions if c), captions
