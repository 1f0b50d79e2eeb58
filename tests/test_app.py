"""App tests with streamlit.testing.v1.AppTest: every page renders in a fresh session."""

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [
    "pages/1_dataset.py",
    "pages/2_setup.py",
    "pages/3_train.py",
    "pages/4_evaluate.py",
    "pages/5_predict.py",
    "pages/6_experiments.py",
]


def test_entry_point_routes_and_renders_default_page():
    at = AppTest.from_file(str(ROOT / "streamlit_app.py"), default_timeout=120).run()
    assert not at.exception
    assert any("Dataset explorer" in t.value for t in at.title)
    from core.base.version import label

    assert label() in [c.value for c in at.sidebar.caption]  # "xray-trainer 0.1.0"


@pytest.mark.parametrize("page", PAGES)
def test_page_renders(page):
    at = AppTest.from_file(str(ROOT / page), default_timeout=120).run()
    assert not at.exception, at.exception
    assert len(at.title) == 1


def test_explorer_shows_sample_counts_and_no_problems():
    at = AppTest.from_file(str(ROOT / "pages/1_dataset.py"), default_timeout=120).run()
    assert not at.exception
    metrics = {m.label: m.value for m in at.metric}
    assert int(metrics["Usable images"]) >= 200
    assert metrics["Classes"] == "2" and metrics["Unusable files"] == "0"


def test_explorer_dicom_sample_hides_patient_identity():
    at = AppTest.from_file(str(ROOT / "pages/1_dataset.py"), default_timeout=120).run()
    at.selectbox(key="src_choice").select("sample_dicom").run()
    assert not at.exception
    text = " ".join(str(t.value) for t in at.table) + " ".join(str(m) for m in at.markdown)
    assert "Modality" in text or "Rows" in text
    assert "SYN-" not in text and "Synthetic^" not in text


def test_explorer_reports_missing_folder():
    at = AppTest.from_file(str(ROOT / "pages/1_dataset.py"), default_timeout=60).run()
    at.selectbox(key="src_choice").select("folder").run()
    at.text_input(key="src_root").input("/definitely/not/here").run()
    assert not at.exception
    assert at.error and "not" in at.error[0].value.lower()


def test_experiments_page_offers_a_sweep_and_says_there_are_none_yet():
    at = AppTest.from_file(str(ROOT / "pages/6_experiments.py"), default_timeout=120).run()
    assert not at.exception, at.exception
    assert [t.value for t in at.title] == ["Experiments"] and [h.value for h in at.subheader] == [
        "Experiments"
    ]
    assert at.expander[0].label == "Start a sweep"
    assert at.multiselect(key="ex_settings").value  # the default swept setting, values suggested below it
    captions = " ".join(c.value for c in at.caption)
    assert "Every trial starts from" in captions and "trial(s), each an ordinary training run" in captions
    assert not at.button(key="ex_start").disabled  # a valid plan: Start sweep is offered
    assert any("No experiments yet" in i.value for i in at.info)
    assert "closing or refreshing this page does not stop them" in captions
