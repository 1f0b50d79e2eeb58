"""Uploads and hosted-mode path checks: content checks, zip-slip, zip bombs, owner isolation."""

from __future__ import annotations

import io
import stat
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pydicom.data import get_testdata_file

from core.data.folders import scan_folder
from core.web import hosting, uploads
from core.web.uploads import UploadError, UploadLimits, extract_zip, save_uploads, upload_dir

ALICE, BOB = "alice-0001", "bob-000002"
MB = 1_000_000


def png(seed: int = 0, size: int = 24) -> bytes:
    """A small noisy PNG."""
    arr = np.random.default_rng(seed).integers(0, 255, (size, size), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def make_zip(
    members: dict[str, bytes], links: dict[str, str] | None = None, method: int = zipfile.ZIP_DEFLATED
) -> bytes:
    """A zip built in memory (member name -> bytes; links: name -> symlink target)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", method) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
        for name, target in (links or {}).items():
            info = zipfile.ZipInfo(name)
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            zf.writestr(info, target)
    return buf.getvalue()


def stored_files(root: Path) -> list[str]:
    """Relative posix paths of every file under root."""
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


@pytest.fixture
def hosted(monkeypatch, tmp_path):
    """Hosted mode with one configured data root holding a class-folder dataset."""
    root = tmp_path / "lab_data"
    (root / "chest" / "a").mkdir(parents=True)
    (root / "chest" / "a" / "x.png").write_bytes(png())
    monkeypatch.setenv("XRT_HOSTED", "1")
    monkeypatch.setenv("XRT_DATA_ROOTS", str(root))
    return root


def test_loose_files_go_under_the_class_label_and_html_png_is_refused():
    files = [
        ("a.png", png(1)),
        ("b.PNG", png(2)),
        ("page.png", b"<!doctype html><html>hi</html>"),
        (".DS_Store", b"junk"),
        ("../../evil.png", png(3)),
    ]
    root, problems = save_uploads(ALICE, files, 10 * MB, 100, label="normal")
    assert stored_files(root) == ["normal/a.png", "normal/b.PNG", "normal/evil.png"]
    assert [p["path"] for p in problems] == ["page.png"] and "HTML" in problems[0]["reason"]
    assert root.parent == upload_dir(ALICE)


def test_loose_files_need_a_label_and_dicom_is_kept_by_content():
    with pytest.raises(UploadError, match="class"):
        save_uploads(ALICE, [("a.png", png())], 10 * MB, 100)
    dcm = Path(get_testdata_file("CT_small.dcm")).read_bytes()
    root, problems = save_uploads(
        ALICE, [("1.2.840.113", dcm), ("fake.dcm", png())], 10 * MB, 100, label="ct"
    )
    assert stored_files(root) == ["ct/1.2.840.113.dcm"]
    assert "DICOM" in problems[0]["reason"] and problems[0]["path"] == "fake.dcm"


def test_zip_folders_become_classes_hidden_skipped_csv_kept():
    data = make_zip(
        {
            "xray/normal/a.png": png(1),
            "xray/normal/b.png": png(2),
            "xray/opacity/c.png": png(3),
            "__MACOSX/xray/normal/._a.png": b"junk",
            "xray/normal/.hidden.png": png(4),
            "xray/opacity/Thumbs.db": b"junk",
            "xray/inner/nested.zip": make_zip({"n.png": png(5)}),
        }
    )
    root, problems = save_uploads(ALICE, [("data.zip", data)], 10 * MB, 100)
    assert stored_files(root) == ["normal/a.png", "normal/b.png", "opacity/c.png"]
    assert [p["reason"] for p in problems] == ["archives inside the zip are not opened; skipped"]
    ds = scan_folder(root)
    assert ds.class_counts() == {"normal": 2, "opacity": 1} and ds.problems.empty
    csv_zip = make_zip({"labels.csv": b"path,label\nimg/a.png,x\n", "img/a.png": png()})
    root2 = extract_zip(ALICE, csv_zip, UploadLimits(), dataset="tab")
    assert stored_files(root2) == ["img/a.png", "labels.csv"]


def test_zip_slip_absolute_and_symlink_members_never_leave_the_folder(tmp_path):
    data = make_zip(
        {
            "../../escape.png": png(1),
            "/abs/root.png": png(2),
            "C:/win/c.png": png(3),
            "ok/good.png": png(4),
            "ok/..\\..\\back.png": png(5),
        },
        links={"ok/link.png": "/etc/passwd"},
    )
    root, problems = save_uploads(ALICE, [("evil.zip", data)], 10 * MB, 100)
    assert stored_files(root) == ["ok/good.png"]
    reasons = {p["path"]: p["reason"] for p in problems}
    assert "symbolic link" in reasons["ok/link.png"] and "unsafe" in reasons["../../escape.png"]
    home = uploads.paths.app_home()
    assert not list(home.parent.glob("escape.png")) and not (tmp_path / "escape.png").exists()
    assert all(p.resolve().is_relative_to(upload_dir(ALICE)) for p in home.rglob("*.png"))


def test_zip_bombs_are_refused_before_extraction():
    bomb = make_zip({"cls/big.png": b"\0" * 20 * MB})  # ~20 kB compressed, ratio ~1000
    assert len(bomb) < MB
    with pytest.raises(UploadError, match="zip bomb"):
        save_uploads(ALICE, [("bomb.zip", bomb)], 10 * MB, 100)
    many = make_zip({f"cls/{i}.png": b"x" for i in range(30)})
    with pytest.raises(UploadError, match="30 files"):
        save_uploads(ALICE, [("many.zip", many)], 10 * MB, 20)
    big = make_zip(
        {f"cls/{i}.bin": np.random.default_rng(i).bytes(600_000) for i in range(8)}, method=zipfile.ZIP_STORED
    )
    limits = UploadLimits(max_total_bytes=10 * MB, max_unpacked_bytes=4 * MB, max_file_bytes=4 * MB)
    with pytest.raises(UploadError, match="unpacks to"):
        extract_zip(ALICE, big, limits)
    assert uploads.list_datasets(ALICE) == []  # a refused upload leaves nothing behind


def test_upload_size_and_count_limits_and_owner_ids():
    with pytest.raises(UploadError, match="MB"):
        save_uploads(ALICE, [("a.png", b"x" * 2 * MB)], MB, 100, label="c")
    with pytest.raises(UploadError, match="at most 2"):
        save_uploads(ALICE, [(f"{i}.png", png(i)) for i in range(3)], MB, 2, label="c")
    for bad in ("short", "../../etc", "a" * 65, "with space1"):
        with pytest.raises(UploadError):
            upload_dir(bad)


def test_owner_quota(monkeypatch):
    limits = UploadLimits(max_owner_bytes=3000)
    with pytest.raises(UploadError, match="per session"):
        extract_zip(ALICE, make_zip({"c/a.png": png(1, 64), "c/b.png": png(2, 64)}), limits)


def test_weights_upload_is_checked_without_unpickling():
    with pytest.raises(UploadError, match="safetensors"):
        uploads.save_weights(ALICE, "model.pkl", b"\x80\x04", MB)
    with pytest.raises(UploadError, match="LFS"):
        uploads.save_weights(ALICE, "w.pth", b"version https://git-lfs.github.com/spec/v1\n", MB)
    from safetensors.numpy import save

    path = uploads.save_weights(ALICE, "../my weights.safetensors", save({"w": np.zeros(3, np.float32)}), MB)
    assert path == upload_dir(ALICE) / "_weights" / "my weights.safetensors" and path.is_file()


def test_local_mode_accepts_any_existing_path(tmp_path, monkeypatch):
    monkeypatch.delenv("XRT_HOSTED", raising=False)
    assert hosting.check_server_path(tmp_path) == tmp_path.resolve()
    with pytest.raises(UploadError, match="not found"):
        hosting.check_server_path(tmp_path / "missing")


def test_hosted_mode_allows_only_data_roots_sample_and_own_uploads(hosted, tmp_path):
    assert hosting.hosted()
    assert hosting.check_server_path(hosted / "chest", ALICE) == (hosted / "chest").resolve()
    for bad in ("/etc", tmp_path, hosted / ".." / "elsewhere", "~"):
        with pytest.raises(UploadError, match="disabled in hosted mode"):
            hosting.check_server_path(bad, ALICE)
    with pytest.raises(UploadError, match="disabled in hosted mode"):
        hosting.check_server_path(hosted / "missing" / "..", "")  # no owner: nothing is allowed
    mine, _ = save_uploads(ALICE, [("a.png", png())], MB, 10, label="c")
    assert hosting.check_server_path(mine, ALICE) == mine.resolve()
    assert hosting.allowed_folders(ALICE) == [hosted.resolve(), (hosted / "chest").resolve(), mine]


def test_one_owner_cannot_reach_another_owners_uploads(hosted, monkeypatch):
    mine, _ = save_uploads(ALICE, [("a.png", png())], MB, 10, label="c")
    with pytest.raises(UploadError, match="disabled in hosted mode"):
        hosting.check_server_path(mine, BOB)
    with pytest.raises(UploadError, match="disabled in hosted mode"):
        hosting.check_server_path(upload_dir(BOB) / ".." / ALICE, BOB)
    monkeypatch.setenv("XRT_DATA_ROOTS", str(uploads.paths.app_home()))  # a careless root above all uploads
    with pytest.raises(UploadError, match="disabled in hosted mode"):
        hosting.check_server_path(mine, BOB)
    assert mine not in hosting.allowed_folders(BOB)


def test_check_source_and_env_limits(hosted, monkeypatch):
    from core.base.config import SourceConfig

    hosting.check_source(SourceConfig(kind="folder", root=str(hosted / "chest")), ALICE)
    with pytest.raises(UploadError):
        hosting.check_source(SourceConfig(kind="csv", csv_path="/etc/passwd"), ALICE)
    monkeypatch.setenv("XRT_MAX_UPLOAD_MB", "5")
    monkeypatch.setenv("XRT_MAX_FILES", "bad")
    limits = hosting.upload_limits()
    assert limits.max_total_bytes == 5 * MB and limits.max_files == 5000
