"""The command line and the setup page turn the same choices into the same RunConfig (core.base.choices)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from core import cli
from core.base import choices
from core.base.config import RunConfig, SourceConfig, Window, from_dict, to_dict
from ui import setup_form as sf
from ui.common import RUN_CONFIG, SOURCE_CONFIG

CSV = "labels.csv"
SOURCE = SourceConfig(kind="csv", csv_path=CSV, group_col="patient_id")


@pytest.fixture(autouse=True)
def weights_available(monkeypatch):
    """ImageNet weights can be had (the setup page then starts pretrained, as the CLI does)."""
    from core.models import pretrained
    from ui import common

    monkeypatch.setattr(
        pretrained, "weights_obtainable", lambda arch, timeout=1.5: (True, "weights are cached.")
    )
    common._weights_status.clear()


def from_cli(*args: str, command: str = "train") -> RunConfig:
    """The RunConfig the CLI would submit for these options on the CSV source."""
    return cli.run_config(
        cli.build_parser().parse_args([command, "--csv", CSV, "--group-col", "patient_id", *args])
    )


def from_ui(changes: dict, base: RunConfig | None = None, source: SourceConfig = SOURCE) -> RunConfig:
    """The RunConfig the setup page builds when the user changes these widgets from the page's defaults."""
    from ui import common

    base = base or common.default_run_config(source)
    state = sf.config_to_state(base) | changes
    return sf.config_from_state(state, base, source)


CASES = {  # name: (CLI options, setup widgets changed)
    "defaults": ([], {}),
    "k-fold": (["--k-folds", "3"], {"su_kfold": True, "su_k": 3}),
    "from scratch": (["--no-pretrained", "--epochs", "7"], {"su_pretrained": False, "su_epochs": 7}),
    "no augmentation": (["--no-augment"], {"su_aug_enabled": False}),
    "augmentation preset fastai": (
        ["--aug-preset", "fastai", "--vflip", "--rotate", "5"],
        {"su_warp": 0.2, "su_vflip": True, "su_rotate": 5.0},
    ),
    "model and schedule": (
        [
            "--arch",
            "resnet34",
            "--img-size",
            "96",
            "--bs",
            "16",
            "--lr",
            "1e-3",
            "--freeze-epochs",
            "2",
            "--patience",
            "2",
            "--monitor",
            "roc_auc",
            "--imbalance",
            "weighted_loss",
        ],
        {
            "su_arch": "resnet34",
            "su_img_size": 96,
            "su_batch_size": 16,
            "su_lr": "1e-3",
            "su_freeze_epochs": 2,
            "su_patience": 2,
            "su_monitor": "roc_auc",
            "su_imbalance": "weighted_loss",
        },
    ),
    "split": (
        ["--split", "random", "--valid-pct", "0.3", "--test-pct", "0.1", "--seed", "7", "--keep-duplicates"],
        {
            "su_split_method": "random",
            "su_valid_pct": 30,
            "su_test_pct": 10,
            "su_seed": 7,
            "su_keep_dups": True,
        },
    ),
    "run name": (["--name", "first try"], {"su_name": "first try"}),
    "ordinal grades in an order": (
        ["--task", "ordinal", "--grade-order", "none,mild,severe"],
        {"su_task_type": "ordinal", "su_grade_order": "none, mild, severe"},
    ),
    "ordinal with the cross-entropy head": (
        ["--task", "ordinal", "--ordinal-head", "ce"],
        {"su_task_type": "ordinal", "su_ordinal_head": "ce"},
    ),
    "multi-label with positive weights": (
        ["--task", "multilabel", "--pos-weight"],
        {"su_task_type": "multilabel", "su_pos_weight": True},
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_cli_and_setup_page_give_the_same_run_config(case):
    args, changes = CASES[case]
    assert to_dict(from_cli(*args)) == to_dict(from_ui(changes))


def test_the_kfold_command_and_the_kfold_switch_agree():
    assert to_dict(from_cli(command="kfold")) == to_dict(from_ui({"su_kfold": True}))
    assert from_cli(command="kfold").data.split.k_folds == choices.KFOLD_DEFAULT


def test_a_settings_file_with_a_dicom_window_gives_the_same_run_config(tmp_path: Path):
    cfg = choices.default_config(
        SourceConfig(kind="dicom", root=str(tmp_path), group_tag="PatientID"), gpu=False
    )
    cfg.data.window, cfg.data.frame, cfg.data.normalize = Window(-600.0, 1500.0), 1, "dataset"
    path = tmp_path / "settings.json"
    path.write_text(json.dumps(to_dict(cfg)))
    state: dict = {}
    assert sf.apply_settings(path.read_bytes(), state) == ""  # the setup page's "Load settings"
    loaded = from_dict(RunConfig, state[RUN_CONFIG])
    ui = sf.config_from_state(state | {"su_epochs": 2}, loaded, state[SOURCE_CONFIG])
    via_cli = cli.run_config(cli.build_parser().parse_args(["train", "--config", str(path), "--epochs", "2"]))
    assert to_dict(via_cli) == to_dict(ui)
    assert via_cli.data.window == Window(-600.0, 1500.0) and via_cli.data.split.method == "group"


def test_device_defaults_are_the_same_at_every_door():
    expected = choices.device_defaults()
    for cfg in (from_cli(), from_ui({})):
        assert (cfg.data.img_size, cfg.train.epochs, cfg.data.batch_size) == (
            expected.img_size,
            expected.epochs,
            expected.batch_size,
        )
    assert (choices.CPU_DEFAULTS.img_size, choices.CPU_DEFAULTS.epochs) == (128, 3)
    assert (choices.GPU_DEFAULTS.img_size, choices.GPU_DEFAULTS.epochs) == (224, 5)


def test_patient_ids_give_a_group_split_at_every_door():
    plain = SourceConfig(kind="folder", root="x")
    assert from_ui({}, source=plain).data.split.method == "stratified"
    assert (
        cli.run_config(cli.build_parser().parse_args(["train", "--root", "x"])).data.split.method
        == "stratified"
    )
    assert from_cli().data.split.method == from_ui({}).data.split.method == "group"


def test_from_scratch_records_no_frozen_epochs():
    assert from_cli("--no-pretrained", "--freeze-epochs", "2").train.freeze_epochs == 0
    assert from_ui({"su_pretrained": False, "su_freeze_epochs": 2}).train.freeze_epochs == 0
    assert choices.default_config(SOURCE, gpu=False, pretrained=False).train.freeze_epochs == 0


def test_help_states_the_device_defaults(capsys):
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert (
        "image size in pixels (default 128 on a CPU, 224 on a GPU; from scratch: planned from the data"
        in text
    )
    assert (
        "default 3 on a CPU, 5 on a GPU" in text and "batch size (default 32 on a CPU, 64 on a GPU;" in text
    )
