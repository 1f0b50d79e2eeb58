"""AppTest tests of hosted mode: no server-path fields, the login gate, uploads, hidden error details."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from streamlit import config as st_config
from streamlit.testing.v1 import AppTest

ROOT = Path(__file__).resolve().parents[1]
DATASET, SETUP, ENTRY = (
    str(ROOT / "pages/1_dataset.py"),
    str(ROOT / "pages/2_setup.py"),
    str(ROOT / "streamlit_app.py"),
)
USER = "user:alice"  # who signed in (hosted ownership follows the identity, never a URL token)


def owner_of(identity: str = USER) -> str:
    """The owner id the app derives for a signed-in identity (this test's installation secret)."""
    from core.web import signin

    return signin.owner_for(identity)


def png(seed: int, size: int = 24) -> bytes:
    """A small noisy PNG."""
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (size, size), dtype=np.uint8)).save(
        buf, "PNG"
    )
    return buf.getvalue()


def class_folders(root: Path, n: int = 3) -> Path:
    """root/<a|b>/*.png"""
    for label in ("a", "b"):
        (root / label).mkdir(parents=True)
        for i in range(n):
            (root / label / f"{label}{i}.png").write_bytes(png(i + (10 if label == "b" else 0)))
    return root


def app(script: str, choice: str | None = None, **secrets: str) -> AppTest:
    """A fresh session of one script (signed in as USER; optional source choice and secrets)."""
    at = AppTest.from_file(script, default_timeout=60)
    at.session_state["auth_identity"] = USER
    if choice:
        at.session_state["src_choice"] = choice  # skip generating the sample where a test does not need it
    for key, value in secrets.items():
        at.secrets[key] = value
    return at


@pytest.fixture(autouse=True)
def _restore_error_details():
    """The hosted entry point sets a process-wide Streamlit option; put it back after each test."""
    before = st_config.get_option("client.showErrorDetails")
    yield
    st_config.set_option("client.showErrorDetails", before)


@pytest.fixture
def hosted(monkeypatch, tmp_path) -> Path:
    """Hosted mode with one configured data root holding a two-class dataset in 'chest/'."""
    root = tmp_path / "lab"
    class_folders(root / "chest")
    monkeypatch.setenv("XRT_HOSTED", "1")
    monkeypatch.setenv("XRT_DATA_ROOTS", str(root))
    monkeypatch.delenv("XRT_PASSWORD", raising=False)
    monkeypatch.delenv("XRT_ALLOW_ANONYMOUS", raising=False)
    return root


def test_hosted_explorer_offers_configured_folders_not_path_fields(hosted):
    at = app(DATASET, "folder").run()
    assert not at.exception
    assert not [t for t in at.text_input if t.key in ("src_root", "src_csv", "src_csv_root")]
    pick = at.selectbox(key="src_root_pick")
    assert str(hosted / "chest") in pick.options
    pick.select(str(hosted / "chest")).run()
    assert not at.exception
    assert {m.label: m.value for m in at.metric}["Classes"] == "2"
    at.selectbox(key="src_choice").select("csv").run()
    assert not at.exception and not [t for t in at.text_input if t.key in ("src_csv", "src_csv_root")]


def test_upload_flow_builds_a_private_dataset(hosted):
    zipped = io.BytesIO()
    with zipfile.ZipFile(zipped, "w") as zf:
        for i in range(3):
            zf.writestr(f"opacity/o{i}.png", png(20 + i))
        zf.writestr("__MACOSX/opacity/._o0.png", b"junk")
    at = app(DATASET, "upload").run()
    assert not at.exception
    at.file_uploader(key="up_files").set_value(
        [
            ("n0.png", png(1), "image/png"),
            ("n1.png", png(2), "image/png"),
            ("n2.png", png(3), "image/png"),
            ("page.png", b"<html>not an image</html>", "image/png"),
            ("set.zip", zipped.getvalue(), "application/zip"),
        ]
    )
    at.text_input(key="up_label").input("normal")
    at.run()
    at.button(key="up_save").click().run()
    assert not at.exception, at.exception
    assert any("Saved" in s.value for s in at.success)
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Usable images"] == "6" and metrics["Classes"] == "2" and metrics["Unusable files"] == "0"
    from core.web import hosting, uploads

    root = uploads.dataset_dir(owner_of(), "upload")
    assert sorted(p.name for p in root.iterdir()) == ["normal", "opacity"]
    with pytest.raises(uploads.UploadError, match="hosted"):
        hosting.check_server_path(root, owner_of("user:bob"))  # another user cannot reach it
    other = app(DATASET, "upload")
    other.session_state["auth_identity"] = "user:bob"
    other.query_params["owner"] = owner_of()  # alice's owner id pasted into a link gives bob nothing
    other.run()
    assert not other.exception and not other.metric  # nothing uploaded in that session


def test_upload_without_class_label_is_refused(hosted):
    at = app(DATASET, "upload").run()
    at.file_uploader(key="up_files").set_value(("x.png", png(1), "image/png")).run()
    at.button(key="up_save").click().run()
    assert not at.exception
    assert any("class" in e.value for e in at.error)


def test_password_gate_blocks_pages_until_the_right_password(monkeypatch):
    monkeypatch.delenv("XRT_PASSWORD", raising=False)
    at = app(ENTRY, "upload", password="open sesame").run()
    assert not at.exception
    assert [t.value for t in at.title] == ["Sign in"] and not at.metric
    at.text_input(key="auth_password").input("wrong")
    at.button[0].click().run()
    assert [t.value for t in at.title] == ["Sign in"]
    assert any("Wrong password" in e.value for e in at.error)
    at.text_input(key="auth_password").input("open sesame")
    at.text_input(key="auth_user").input("Alice ")
    at.button[0].click().run()
    assert not at.exception
    assert any("Dataset explorer" in t.value for t in at.title)
    assert at.session_state["auth_identity"] == "user:alice"  # the typed name (normalised) is who signed in


def test_password_from_environment_and_no_gate_without_one(monkeypatch):
    monkeypatch.setenv("XRT_PASSWORD", "pw")
    at = app(ENTRY, "upload").run()
    assert [t.value for t in at.title] == ["Sign in"]
    monkeypatch.delenv("XRT_PASSWORD")
    at = app(ENTRY, "upload").run()
    assert any("Dataset explorer" in t.value for t in at.title)


def test_hosted_without_sign_in_refuses_to_serve_unless_anonymous_is_allowed(hosted, monkeypatch):
    from core.web import hosting
    from ui import auth

    logged: list[tuple] = []
    monkeypatch.setattr(auth.LOG, "error", lambda *args: logged.append(args))
    at = app(ENTRY, "upload")  # even a session that claims an identity
    at.context = {"url": "http://localhost:8501/train"}  # and a deep link
    at.run()
    assert not at.exception, at.exception
    assert [t.value for t in at.title] == ["Not available"]
    assert [e.value for e in at.error] == [hosting.NO_SIGN_IN]
    assert not at.caption and not at.metric and not at.get("file_uploader")  # no page, no sidebar
    assert len(logged) == 1 and hosting.NO_SIGN_IN in logged[0]
    at.run()
    assert [t.value for t in at.title] == ["Not available"] and len(logged) == 1  # logged once a session
    monkeypatch.setenv("XRT_ALLOW_ANONYMOUS", "1")  # the operator allows anonymous use on purpose
    anonymous = AppTest.from_file(ENTRY, default_timeout=60)
    anonymous.session_state["src_choice"] = "upload"
    anonymous.run()
    assert not anonymous.exception, anonymous.exception
    assert [t.value for t in anonymous.title] == ["Dataset explorer"]
    assert anonymous.session_state["auth_identity"].startswith("anon:")


def test_hosted_entry_point_hides_error_details(hosted):
    at = app(ENTRY, "upload").run()
    assert not at.exception
    assert st_config.get_option("client.showErrorDetails") == "none"


def test_hosted_setup_offers_weights_upload_and_listed_test_folders(hosted):
    from core.base.config import SourceConfig

    (hosted / "empty").mkdir()  # no images: the page skips the (slow) augmentation preview
    at = app(SETUP)
    at.session_state["source_config"] = SourceConfig(kind="folder", root=str(hosted / "empty"))
    at.run()
    assert not at.exception, at.exception
    assert at.text_input(key="su_weights_path").disabled
    assert at.get("file_uploader") and any(f.key == "su_weights_upload" for f in at.get("file_uploader"))
    assert str(hosted / "chest") in at.selectbox(key="su_test_root").options
    assert not [t for t in at.text_input if t.key == "su_test_root"]
    from safetensors.numpy import save

    weights = save({"w": np.zeros(3, np.float32)})
    at.get("file_uploader")[0].set_value(("w.safetensors", weights, "application/octet-stream")).run()
    assert not at.exception
    assert at.text_input(key="su_weights_path").value.endswith("/_weights/w.safetensors")
    assert "weights file" not in str(
        at.session_state["run_config_error"] if "run_config_error" in at.session_state else ""
    )


def test_dicom_window_presets_filter_and_paging():
    at = app(DATASET, "sample_dicom").run()
    assert not at.exception
    assert len(at.get("image")) == 9  # 8 samples + the header preview
    at.selectbox(key="dicom_preset").select("Automatic (1st-99th percentile of each image)").run()
    assert not at.exception and len(at.get("image")) == 9
    at.selectbox(key="dicom_preset").select("Custom centre / width").run()
    at.number_input(key="dicom_width").set_value(800.0).run()
    assert not at.exception
    at.number_input(key="sample_page").set_value(2).run()
    at.text_input(key="sample_filter").input("no-such-file").run()
    assert not at.exception and any("0 image(s)" in c.value for c in at.caption)


def tampered(token: str) -> str:
    """The token with its signature's last character changed: always a different, invalid signature
    (overwriting the last two characters with "00" left the signature valid when it already ended in "00")."""
    return token[:-1] + ("1" if token[-1] == "0" else "0")


def test_hosted_ownership_follows_the_sign_in_not_the_link(hosted, monkeypatch):
    from core.base.config import RunConfig, to_dict
    from core.runs.jobs import JobStore
    from core.web import accounts
    from core.web.signin import make_token
    from ui import auth

    monkeypatch.setenv("XRT_PASSWORD", "pw")
    job = JobStore().submit("train", {"config": to_dict(RunConfig())}, owner=owner_of("user:alice"))

    def sign_in(name: str, deep_link: str = "") -> AppTest:
        at = AppTest.from_file(ENTRY, default_timeout=60)
        at.session_state["src_choice"] = "folder"
        if deep_link:
            at.context = {"url": f"http://localhost:8501/{deep_link}"}
        at.run()
        assert [t.value for t in at.title] == ["Sign in"]
        at.text_input(key="auth_user").input(name)
        at.text_input(key="auth_password").input("pw")
        at.button[0].click().run()
        assert not at.exception, at.exception
        return at

    alice = sign_in("alice", deep_link="train")  # a deep link opens its page after sign-in
    assert [t.value for t in alice.title] == ["Training run"]
    assert list(alice.dataframe[0].value["id"]) == [job.id]
    assert any("signed in as alice" in c.value for c in alice.caption)
    bob = AppTest.from_file(ENTRY, default_timeout=60)
    bob.query_params["owner"] = owner_of("user:alice")  # alice's owner id pasted into bob's link
    bob.session_state["src_choice"] = "folder"
    bob.run()
    bob.text_input(key="auth_user").input("bob")
    bob.text_input(key="auth_password").input("pw")
    bob.button[0].click().run()
    bob.switch_page("pages/3_train.py").run()
    assert not bob.exception
    assert not bob.dataframe and any("No runs yet" in i.value for i in bob.info)  # nothing of alice's
    stamp = accounts.stamp("user:alice", shared_password="pw")  # sessions end when the password changes
    for token, signed in (
        (make_token("user:alice", stamp=stamp), True),
        (make_token("user:alice", ttl_s=-1, stamp=stamp), False),
        (tampered(make_token("user:alice", stamp=stamp)), False),
        (make_token("user:alice", stamp=accounts.stamp("user:alice", shared_password="old")), False),
    ):
        monkeypatch.setattr(auth, "_cookie_value", lambda token=token: token)
        again = AppTest.from_file(ENTRY, default_timeout=60)  # a reload: the cookie is all the browser sends
        again.session_state["src_choice"] = "folder"
        again.context = {"url": "http://localhost:8501/train"}
        again.run()
        assert not again.exception
        titles = [t.value for t in again.title]
        if signed:
            again.switch_page("pages/3_train.py").run()
            assert list(again.dataframe[0].value["id"]) == [job.id]
        assert titles == (["Dataset explorer"] if signed else ["Sign in"]), titles
