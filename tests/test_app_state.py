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


def test_settings_source_and_lr_finder_survive_a_reload(monkeypatch):
    from core import jobs
    from core.jobs import JobStore

    submitted: list[str] = []

    def fake(kind, params, run_dir=None, owner="", store=None, executor=None):
        job = (store or JobStore()).submit(kind, params, owner=owner)
        submitted.append(job.id)
        return job

    monkeypatch.setattr(jobs, "submit_and_start", fake)
    at = app().run()  # the Dataset explorer: choose the sample's folder form
    at.selectbox(key="src_choice").select("sample").run()
    at.switch_page("pages/2_setup.py").run()
    at.toggle(key="su_pretrained").set_value(False).run()
    at.number_input(key="su_epochs").set_value(7).run()
    at.number_input(key="su_img_size").set_value(96).run()
    at.button(key="su_lr_find").click().run()
    assert not at.exception and len(submitted) == 1
    reloaded = app()  # a browser refresh: a new session, nothing in session state
    reloaded.switch_page("pages/2_setup.py").run()
    assert not reloaded.exception
    assert reloaded.number_input(key="su_epochs").value == 7 and reloaded.number_input(key="su_img_size").value == 96
    assert reloaded.toggle(key="su_pretrained").value is False
    assert "class folders" in reloaded.info[0].value  # the chosen source, not the default CSV sample
    assert reloaded.session_state["lr_job_id"] == submitted[0]
    again = app().run()  # reload on the explorer: it shows the chosen source too
    assert again.selectbox(key="src_choice").value == "sample"
    again.switch_page("pages/3_train.py").run()
    caption = " ".join(c.value for c in again.caption)
    assert "from scratch" in caption and "96 px" in caption and "+ 7 epochs" in caption
