"""AppTest tests of the app's state across pages and reloads: one setup verdict, kept settings, file names."""

from __future__ import annotations

from pathlib import Path

from streamlit.testing.v1 import AppTest

ROOT = Path(__file__).resolve().parents[1]
ENTRY, SETUP, TRAIN = str(ROOT / "streamlit_app.py"), str(ROOT / "pages/2_setup.py"), str(ROOT / "pages/3_train.py")


def app(script: str = ENTRY) -> AppTest:
    """A fresh session (a new browser tab, or a reload) of a script."""
    return AppTest.from_file(script, default_timeout=60)


def test_setup_gives_one_verdict_and_run_page_disables_start():
    at = app()
    at.switch_page("pages/2_setup.py").run()
    at.selectbox(key="su_split_method").select("column").run()
    at.text_input(key="su_split_col").input("no_such_column").run()
    assert not at.exception
    assert not at.success, [s.value for s in at.success]  # no green "valid" beside a red "cannot be read"
    verdicts = [e.value for e in at.error if e.value.startswith("These settings cannot work")]
    assert len(verdicts) == 1 and "no_such_column" in verdicts[0]
    assert at.button(key="su_lr_find").disabled
    at.switch_page("pages/3_train.py").run()
    assert not at.exception
    assert at.button(key="tr_start").disabled
    assert any("no_such_column" in e.value for e in at.error)
    at.switch_page("pages/2_setup.py").run()
    at.selectbox(key="su_split_method").select("group").run()
    assert at.success and not [e for e in at.error if e.value.startswith("These settings")]
    at.switch_page("pages/3_train.py").run()
    assert not at.button(key="tr_start").disabled
