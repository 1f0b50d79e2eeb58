"""Dataset explorer widgets: the source form, uploads, class counts, samples, DICOM window / level and headers."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import streamlit as st

from core.base import fmt
from core.base.config import SourceConfig, Window
from core.data import balance, imaging, sample
from core.data.folders import walk_files
from core.data.items import UNLABELLED, Dataset, SourceError
from core.data.labels import trainable_reasons
from core.evaluation import plots
from core.web import hosting, uploads
from ui import auth, common
from ui import working_settings as ws

SOURCES = {  # the first is the default: the sample with patient ids, so splits are by patient from the start
    "sample_csv": "Built-in SYNTHETIC sample (CSV + patient ids)",
    "sample": "Built-in SYNTHETIC sample (folders)",
    "sample_dicom": "Built-in SYNTHETIC sample (DICOM)",
    "folder": "A folder on this computer (one sub-folder per class)",
    "csv": "A CSV of file names and labels",
    "dicom": "A folder of DICOM files",
    "upload": "Upload images or a zip (kept for this browser)",
}
HOSTED_SOURCES = {
    "folder": "A configured data folder or your uploads (one sub-folder per class)",
    "csv": "A CSV in a configured data folder or your uploads",
    "dicom": "A folder of DICOM files (configured data folders or your uploads)",
}
CUSTOM = "Custom centre / width"
WINDOWS: dict[str, Window | None] = {  # for X-rays (DX / CR): per-image choices; a fixed window is "Custom"
    "From the file (its own window or VOI LUT)": None,
    "Automatic (1st-99th percentile of each image)": Window(mode="auto"),
    "Full range (each image's min-max)": Window(mode="full"),
    CUSTOM: None,
}
DICOM_LABELS = {"folders": "Class folders", "csv": "A CSV table (file -> label)", "tag": "A DICOM header tag"}
PER_PAGE = 8
THUMB = 160


# ---------------------------------------------------------------- source choice


def _source_labels() -> dict[str, str]:
    """The labels of the source choices (hosted mode names its folders differently; uploads belong to who signed in)."""
    if not hosting.hosted():
        return SOURCES
    return {**SOURCES, **HOSTED_SOURCES, "upload": f"Upload images or a zip (private to {_uploader()})"}


def _uploader() -> str:
    """Whom uploads belong to, in words: the signed-in user's name, else 'this browser'."""
    return auth.shown_identity() or "this browser"


def _csv_columns(cfg: SourceConfig) -> SourceConfig:
    """Column-name inputs for a CSV source (names, not paths: fine in every mode)."""
    c1, c2, c3, c4 = st.columns(4)
    for key, default in (
        ("src_pathcol", "path"),
        ("src_labelcol", "label"),
        ("src_groupcol", ""),
        ("src_splitcol", ""),
    ):
        st.session_state.setdefault(
            key, default
        )  # defaults via state: kept settings may have set them already
    cfg.path_col = c1.text_input("Path column", key="src_pathcol")
    cfg.label_col = c2.text_input("Label column", key="src_labelcol")
    cfg.group_col = c3.text_input("Patient column (optional)", key="src_groupcol")
    cfg.split_col = c4.text_input("Split column (optional)", key="src_splitcol")
    return _multilabel_inputs(cfg)


UNCERTAIN_LABELS = {
    "ignore": "left out (loss and metrics)",
    "positive": "counted as present",
    "negative": "counted as absent",
}


@st.cache_data(max_entries=16, show_spinner=False)
def _suggestion(csv_path: str, version: tuple, label_col: str, exclude: tuple[str, ...]) -> dict:
    """The task type a table suggests (core.data.labels.suggest_task); {} when it cannot be read."""
    from core.data.labels import suggest_task
    from core.data.tables import read_table

    try:
        return suggest_task(read_table(csv_path), label_col, exclude)
    except (OSError, ValueError):
        return {}


def _multilabel_inputs(cfg: SourceConfig) -> SourceConfig:
    """Several findings per image: a delimited label column or one 1/0/blank/-1 column per finding."""
    hint = _suggestion(
        cfg.csv_path, common.file_version(cfg.csv_path), cfg.label_col, (cfg.path_col, cfg.group_col)
    )
    for key, default in (
        ("src_delim", ""),
        ("src_findcols", ""),
        ("src_uncertain", "ignore"),
        ("src_nofinding", "No Finding"),
    ):
        st.session_state.setdefault(key, default)
    with st.expander("Several findings per image (multi-label)", expanded=hint.get("task") == "multilabel"):
        if hint.get("task") == "multilabel":
            found = (
                f"delimiter '{hint['delimiter']}'"
                if hint["delimiter"]
                else "columns " + ", ".join(hint["finding_cols"])
            )
            st.caption(f"This table looks multi-label ({found}).")
        c1, c2, c3, c4 = st.columns(4)
        cfg.label_delimiter = c1.text_input("Findings split on (e.g. | or ;)", key="src_delim").strip()
        cols = c2.text_input("Or one column per finding (comma-separated)", key="src_findcols")
        cfg.finding_cols = [c.strip() for c in cols.split(",") if c.strip()]
        cfg.uncertain = c3.selectbox(
            "-1 (uncertain) is", list(UNCERTAIN_LABELS), key="src_uncertain", format_func=UNCERTAIN_LABELS.get
        )
        cfg.no_finding = c4.text_input("Label meaning no finding", key="src_nofinding")
    return cfg


def _sample_source(choice: str) -> SourceConfig:
    """The built-in synthetic sample in the chosen form."""
    st.caption("Synthetic X-ray-like pictures generated by the app: for trying it out, not real patients.")
    if choice == "sample_csv":
        return common.sample_source()
    return sample.source(common.sample_root(), "dicom" if choice == "sample_dicom" else "folder")


def _local_source(choice: str) -> SourceConfig | None:
    """Free-text server paths (local mode only: the person at the keyboard owns the machine)."""
    if choice == "csv":
        csv_path = st.text_input("CSV file", key="src_csv")
        root = st.text_input("Image root (default: the CSV's folder)", key="src_csv_root")
        cfg = _csv_columns(SourceConfig(kind="csv", csv_path=csv_path, root=root))
        return cfg if csv_path else None
    root = st.text_input("Folder", key="src_root")
    if choice == "dicom":
        return _dicom_source(root) if root else None
    return SourceConfig(kind=choice, root=root) if root else None


def _place(path: str, owner: str) -> str:
    """How a hosted user sees a server path: 'My uploads / x' for theirs, else the configured path."""
    mine = uploads.upload_dir(owner)
    p = Path(path)
    return f"My uploads / {p.relative_to(mine).as_posix()}" if p.is_relative_to(mine) else path


def _hosted_source(choice: str) -> SourceConfig | None:
    """Hosted mode: pick among configured data roots and this session's uploads (no free-text paths)."""
    owner = common.owner_id()
    if choice == "csv":
        options = [str(p) for p in hosting.allowed_csvs(owner)]
        if not options:
            st.info("No CSV files in the configured data folders or in your uploads.")
            return None
        csv_path = _pick("CSV file", options, owner, "src_csv_pick")
        return _csv_columns(SourceConfig(kind="csv", csv_path=csv_path)) if csv_path else None
    options = [str(p) for p in hosting.allowed_folders(owner)]
    if not options:
        st.info(
            "No data folders are configured on this server and you have not uploaded anything yet: "
            "choose 'Upload images or a zip', or the built-in sample."
        )
        return None
    root = _pick("Folder", options, owner, "src_root_pick")
    if not root:
        return None
    return _dicom_source(root) if choice == "dicom" else SourceConfig(kind=choice, root=root)


def _pick(label: str, options: list[str], owner: str, key: str) -> str | None:
    """A choice among server paths; none chosen yet when there are several (nothing is scanned until then)."""
    return st.selectbox(
        label,
        options,
        index=0 if len(options) == 1 else None,
        placeholder=f"Choose one of {len(options)}",
        format_func=lambda p: _place(p, owner),
        key=key,
    )


def _dicom_source(root: str) -> SourceConfig | None:
    """A DICOM folder's labels: class folders, a CSV (file name or path -> label) or a header tag; None until given."""
    how = st.radio(
        "Labels from", list(DICOM_LABELS), format_func=DICOM_LABELS.get, horizontal=True, key="src_dcm_labels"
    )
    cfg = SourceConfig(kind="dicom", root=root)
    if how == "csv":
        cfg.csv_path = common.csv_picker(
            "Label table (CSV: file names or paths relative to the DICOM folder)", "src_dcm_csv"
        )
        c1, c2 = st.columns(2)
        for key, default in (("src_dcm_pathcol", "path"), ("src_dcm_labelcol", "label")):
            st.session_state.setdefault(key, default)
        cfg.path_col = c1.text_input("File name / path column", key="src_dcm_pathcol").strip()
        cfg.label_col = c2.text_input("Label column", key="src_dcm_labelcol").strip()
        if not cfg.csv_path:
            return None
    elif how == "tag":
        st.session_state.setdefault("src_ltag", "BodyPartExamined")
        cfg.label_tag = st.text_input(
            "Label from the DICOM tag (keyword, e.g. BodyPartExamined, ViewPosition)", key="src_ltag"
        ).strip()
    cfg.group_tag = st.text_input("Group by DICOM tag (e.g. PatientID)", key="src_gtag").strip()
    return cfg


KEPT_KEYS = (
    "src_csv",
    "src_csv_root",
    "src_root",
    "src_pathcol",
    "src_labelcol",
    "src_groupcol",
    "src_splitcol",
    "src_delim",
    "src_findcols",
    "src_uncertain",
    "src_nofinding",
    "src_gtag",
    "src_dcm_labels",
    "src_dcm_csv",
    "src_dcm_pathcol",
    "src_dcm_labelcol",
    "src_ltag",
)


def source_form() -> SourceConfig | None:
    """Widgets that describe the source; returns a SourceConfig or None until complete."""
    for key in KEPT_KEYS:  # typed values survive switching the source kind away and back
        if key in st.session_state:
            st.session_state[key] = st.session_state[key]
    labels = _source_labels()
    choice = st.selectbox("Data source", list(SOURCES), format_func=labels.__getitem__, key="src_choice")
    if choice.startswith("sample"):
        return _sample_source(choice)
    if choice == "upload":
        return upload_source()
    return _hosted_source(choice) if hosting.hosted() else _local_source(choice)


# ---------------------------------------------------------------- uploads


def handle_upload(owner: str, files: list, label: str, name: str) -> tuple[Path | None, list[dict], str]:
    """Save uploaded files (UploadedFile-like: name, size, getvalue) for owner; (root, problems, error)."""
    limits = hosting.upload_limits()
    total = sum(int(getattr(f, "size", 0) or 0) for f in files)
    if total > limits.max_total_bytes:  # checked before reading anything into the app
        return (
            None,
            [],
            f"the upload is {fmt.megabytes(total)}; at most {fmt.megabytes(limits.max_total_bytes)}",
        )
    try:
        root, problems = uploads.save_uploads(
            owner,
            [(f.name, f.getvalue()) for f in files],
            limits.max_total_bytes,
            limits.max_files,
            label=label,
            dataset=name,
        )
    except uploads.UploadError as err:
        return None, [], str(err)
    common.forget_datasets()  # scans of an upload dataset are stale once files were added
    return root, problems, ""


def _upload_widgets(owner: str) -> None:
    """The uploader, class label, dataset name and save button; shows what was refused."""
    limits = hosting.upload_limits()
    st.caption(
        f"PNG, JPEG, TIFF, BMP or DICOM files, or a .zip with one folder per class (a CSV inside is "
        f"kept). At most {fmt.megabytes(limits.max_total_bytes)} and {limits.max_files} files per "
        f"upload. Every file is checked by its content; only {_uploader()} can see these uploads."
    )
    files = st.file_uploader("Images or a zip", accept_multiple_files=True, key="up_files")
    c1, c2 = st.columns(2)
    label = c1.text_input("Class of the loose images (zips take classes from their folders)", key="up_label")
    name = c2.text_input("Dataset name", "upload", key="up_name")
    if st.button("Add to my uploads", key="up_save", disabled=not files):
        root, problems, error = handle_upload(owner, files or [], label, name)
        if error:
            st.error(f"Upload refused: {error}")
        else:
            st.success(
                f"Saved to your dataset '{root.name}'."
                + (f" {len(problems)} file(s) refused:" if problems else "")
            )
            st.session_state["up_dataset"] = root.name
        if problems:
            st.dataframe(pd.DataFrame(problems), hide_index=True, width="stretch")


def _delete_uploads() -> None:
    """Button callback: remove every upload of this session."""
    uploads.delete_uploads(common.owner_id())
    st.session_state.pop("up_dataset", None)
    common.forget_datasets()


def upload_source() -> SourceConfig | None:
    """Upload images or a zip into this session's private folder; explore one of its upload datasets."""
    owner = common.owner_id()
    _upload_widgets(owner)
    names = [p.name for p in uploads.list_datasets(owner)]
    if not names:
        return None
    if st.session_state.get("up_dataset") not in names:
        st.session_state["up_dataset"] = names[0]
    c1, c2 = st.columns([3, 1])
    root = uploads.dataset_dir(owner, c1.selectbox("Uploaded dataset", names, key="up_dataset"))
    c2.button("Delete all my uploads", key="up_delete", on_click=_delete_uploads)
    tables = sorted(p.relative_to(root).as_posix() for p in walk_files(root) if p.suffix.lower() == ".csv")
    labels_from = (
        st.selectbox("Labels from", ["class folders", *tables], key="up_labels")
        if tables
        else "class folders"
    )
    if labels_from == "class folders":
        return SourceConfig(kind="folder", root=str(root))
    return _csv_columns(SourceConfig(kind="csv", csv_path=str(root / labels_from)))


# ---------------------------------------------------------------- DICOM window / level


@st.cache_data(max_entries=2000, show_spinner=False)
def windowed(path: str, center: float, width: float, mode: str, size: int = THUMB):
    """A DICOM preview with a user window (numpy array), cached per file and window."""
    import numpy as np

    img = imaging.read_image(path, window=Window(center, width, mode))
    img.thumbnail((size, size))
    return np.asarray(img)


def window_state(window: Window | None) -> dict[str, object]:
    """Widget values (by key) that show a window."""
    label = next((k for k, v in WINDOWS.items() if v == window), CUSTOM)
    if label != CUSTOM:
        return {"dicom_preset": label}
    assert window is not None  # None is the first choice
    return {"dicom_preset": CUSTOM, "dicom_center": float(window.center), "dicom_width": float(window.width)}


def window_control() -> Window | None:
    """The DICOM window for previews and training (seeded from the working settings); None = the file's own."""
    for key, value in window_state(ws.window()).items():
        st.session_state.setdefault(key, value)
    c1, c2, c3 = st.columns([2, 1, 1])
    preset = c1.selectbox(
        "DICOM window (previews and training)",
        list(WINDOWS),
        key="dicom_preset",
        help="Radiographs (DX / CR) have no fixed units: the file's own window or the automatic one usually "
        "work best. A custom centre/width is in the image's units after rescale (Hounsfield units for CT).",
    )
    window = WINDOWS[preset]
    if preset == CUSTOM:
        center = c2.number_input("Centre (level)", -5000.0, 70000.0, 40.0, key="dicom_center")
        width = c3.number_input("Width", 1.0, 140000.0, 400.0, key="dicom_width")
        window = Window(float(center), float(width))
    ws.carry_window(window)
    st.caption(
        f"Training decodes the DICOMs with this window too ({common.window_text(window)}); it is kept with the "
        "settings and the trained model, so prediction uses it as well."
    )
    return window


def preview(row: pd.Series, window: Window | None, size: int = THUMB):
    """A cached preview of one item: the user window for DICOMs when one is chosen."""
    if row["kind"] == "dicom" and window is not None:
        return windowed(row["path"], window.center, window.width, window.mode, size)
    return common.thumbnail(row["path"], size)


# ---------------------------------------------------------------- the scanned dataset


def _problems_table(ds: Dataset) -> pd.DataFrame:
    """The problems table; hosted mode shows paths relative to the data folder (no server layout)."""
    if not hosting.hosted():
        return ds.problems
    root = Path(ds.root)
    shown = [
        Path(p).relative_to(root).as_posix() if Path(p).is_relative_to(root) else Path(p).name
        for p in ds.problems["path"]
    ]
    return ds.problems.assign(path=shown)


def load(cfg: SourceConfig) -> Dataset | None:
    """The scanned dataset, or None after showing why it cannot be read."""
    try:
        hosting.check_source(cfg, common.owner_id())
        return common.load_dataset(cfg)
    except (SourceError, uploads.UploadError) as err:
        st.error(str(err))
        return None


def summary(ds: Dataset, task: str = "single") -> None:
    """Headline counts, why training would be refused (findings counted for a multi-label source), unlabelled files."""
    s = ds.summary()
    c = st.columns(4)
    c[0].metric("Usable images", s["n_items"])
    c[1].metric("Classes", len(ds.classes))
    c[2].metric("Unusable files", s["n_problems"])
    c[3].metric("Patients", s.get("n_groups", 0))
    for reason in trainable_reasons(ds, task):
        st.warning(f"Training would be refused: {reason}")
    if ds.unread:
        st.info(ds.sample_note())
    unlabelled(ds)


def overview(ds: Dataset) -> None:
    """Images per class, the image size distribution, patients per class."""
    left, right = st.columns(2)
    left.plotly_chart(plots.class_counts(ds.class_counts()), width="stretch")
    note = balance.imbalance_note(ds.class_counts())
    if note:
        left.info(note)
    read = ds.read_items  # a sample when the table is longer than XRT_PROBE_MAX
    sizes = read[["width", "height"]].drop_duplicates()
    what = "sampled images" if ds.unread else "all images"
    if len(sizes) == 1:  # one dot says less than one sentence
        right.metric(
            f"Image size ({what})", f"{int(sizes['width'].iloc[0])} x {int(sizes['height'].iloc[0])} px"
        )
    else:
        right.plotly_chart(plots.image_sizes(read), width="stretch")
    if (ds.items["group"] != "").any():
        per = ds.items[ds.items["group"] != ""].groupby("label")["group"].nunique()
        st.caption("Patients per class: " + ", ".join(f"{k}: {v}" for k, v in per.items()))


def has_dicom(ds: Dataset) -> bool:
    """True when the dataset holds DICOM files (window / level and the header panel apply)."""
    return bool((ds.items["kind"] == "dicom").any())


def unlabelled(ds: Dataset) -> None:
    """A preview of files that decode but have no label, and how to give them one."""
    rows = ds.problems[ds.problems["reason"] == UNLABELLED] if not ds.problems.empty else ds.problems
    if rows.empty:
        return
    st.subheader(f"Readable files without a label ({len(rows)})")
    st.caption(
        "These files decode fine but sit outside any class folder. For a flat folder of DICOMs choose "
        "'Labels from' a CSV table or a DICOM header tag above; otherwise sort them into class folders."
    )
    cols = st.columns(PER_PAGE)
    for col, path in zip(cols, rows["path"].head(PER_PAGE)):
        try:
            col.image(common.thumbnail(path, THUMB), caption=Path(path).name, width="stretch")
        except imaging.ImageError as err:  # the file changed since the scan
            col.caption(f"{Path(path).name}: {err}")


def problems(ds: Dataset) -> None:
    """Every file that cannot be used, with its reason."""
    if not ds.problems.empty:
        st.subheader(f"Files that cannot be used ({len(ds.problems)})")
        st.dataframe(_problems_table(ds), width="stretch", hide_index=True)


def samples(ds: Dataset, window: Window | None = None) -> None:
    """A grid of sample images per class, filtered by file name, with paging."""
    st.subheader("Samples")
    c1, c2, c3 = st.columns([2, 2, 1])
    label = c1.selectbox("Class", ds.classes, key="sample_class")
    text = c2.text_input("Filter by file name", "", key="sample_filter").strip().lower()
    part = ds.items[ds.items["label"] == label]
    if text:
        part = part[part["relpath"].str.lower().str.contains(text, regex=False)]
    pages = max(1, (len(part) + PER_PAGE - 1) // PER_PAGE)
    if st.session_state.get("sample_page", 1) > pages:
        st.session_state["sample_page"] = 1
    page = c3.number_input(f"Page (of {pages})", 1, pages, key="sample_page") - 1
    st.caption(f"{len(part)} image(s) in '{label}'" + (f" matching '{text}'" if text else ""))
    cols = st.columns(PER_PAGE)
    for col, (_, row) in zip(cols, part.iloc[page * PER_PAGE : (page + 1) * PER_PAGE].iterrows()):
        try:
            col.image(preview(row, window), caption=Path(row["relpath"]).name, width="stretch")
        except imaging.ImageError as err:  # the file changed since the scan
            col.caption(f"{Path(row['relpath']).name}: {err}")


def dicom_panel(ds: Dataset, window: Window | None = None) -> None:
    """Allow-listed header of one DICOM file (patient identifiers are never shown) and its preview."""
    st.subheader("DICOM header (identifiers hidden)")
    dcm = ds.items[ds.items["kind"] == "dicom"]
    rel = st.selectbox("File", dcm["relpath"].tolist(), key="dicom_file")
    row = dcm[dcm["relpath"] == rel].iloc[0]
    header = common.dicom_header(row["path"])
    left, right = st.columns([2, 1])
    left.table({"tag": list(header), "value": list(header.values())})
    try:
        right.image(preview(row, window, 384), caption="Preview with the chosen window", width="stretch")
    except imaging.ImageError as err:
        right.caption(f"No preview: {err}")
