"""The settings schema: one declaration per setting gives the CLI option, the setup widget state and the sweep axis."""

from __future__ import annotations

import json

import pytest

from core import cli
from core.base import choices, schema
from core.base.config import ConfigError, RunConfig, SourceConfig, to_dict
from core.train import experiments as ex
from tests.synth import blob_dataset
from ui import setup_form as sf

SOURCE = SourceConfig(kind="csv", csv_path="labels.csv", group_col="patient_id")


def parsed(*args: str, command: str = "train") -> RunConfig:
    """The RunConfig the CLI builds for these options."""
    return cli.run_config(cli.build_parser().parse_args([command, "--csv", "labels.csv", *args]))


def test_every_flag_states_its_default_and_every_widget_a_state_key():
    flagged = [s for s in choices.SETTINGS.values() if s.meta.flag]
    assert len({s.meta.flag for s in flagged}) == len(flagged), "a flag is declared twice"
    for s in flagged:
        assert "default" in s.help_text() and "{" not in s.help_text(), s.name
    keys = [s.state_key for s in choices.SETTINGS.values() if s.meta.widget]
    assert len(keys) == len(set(keys)) and "su_vflip" in keys and "su_keep_dups" in keys


def test_device_defaults_come_from_the_declarations():
    assert {s.name for s in choices.DEVICE_SETTINGS} == {"img_size", "epochs", "batch_size"}
    assert choices.default_config(SOURCE, gpu=True).data.img_size == choices.GPU_DEFAULTS.img_size == 224
    assert choices.default_config(SOURCE, gpu=False).train.epochs == choices.CPU_DEFAULTS.epochs == 3


def test_unknown_names_and_values_are_refused_with_the_valid_ones():
    with pytest.raises(ConfigError, match="known: .*rotate"):
        choices.build_config({"rotat": 5.0}, source=SOURCE, gpu=False)
    with pytest.raises(ConfigError, match="resnet18, resnet34"):
        choices.build_config({"arch": "vgg99"}, source=SOURCE, gpu=False)
    cfg = choices.default_config(SOURCE, gpu=False)
    cfg.train.arch = (
        "vgg99"  # a settings file from elsewhere: the setup page refuses it, never shows resnet18
    )
    with pytest.raises(ConfigError, match="arch must be one of resnet18"):
        sf.config_to_state(cfg)
    with pytest.raises(ConfigError, match="must be within 0..0.3"):
        choices.build_config({"label_smoothing": 0.5}, source=SOURCE, gpu=False)


def test_a_setting_walks_to_its_path_and_back():
    s = choices.SETTINGS["rotate"]
    cfg = RunConfig()
    schema.put(cfg, s.path, 33.0)
    assert s.path == "data.aug.rotate" and schema.get(cfg, s.path) == cfg.data.aug.rotate == 33.0
    assert choices.SETTINGS["seed"].meta.also == ("data.split.seed",)


# ---------------------------------------------------------------- label smoothing, declared once


def test_label_smoothing_flag_reaches_the_run_config_and_config_json():
    assert parsed().train.label_smoothing == 0.0
    cfg = parsed("--label-smoothing", "0.1")
    assert cfg.train.label_smoothing == 0.1 and to_dict(cfg)["train"]["label_smoothing"] == 0.1
    assert (
        parsed("--label-smoothing", "0.1", "--imbalance", "weighted_loss").train.imbalance == "weighted_loss"
    )


def test_label_smoothing_help_states_its_default(capsys):
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert (
        "--label-smoothing" in text
        and "label smoothing for the cross-entropy loss (0 = off; default 0)" in text
    )


def test_label_smoothing_is_a_sweep_axis():
    axis = ex.parse_axis("label_smoothing=0,0.1")
    assert axis.name == "label_smoothing" and axis.grid() == [0.0, 0.1]
    assert (
        ex.apply_settings(
            choices.default_config(SOURCE, gpu=False), {"label_smoothing": 0.1}
        ).train.label_smoothing
        == 0.1
    )
    with pytest.raises(ConfigError):
        ex.apply_settings(choices.default_config(SOURCE, gpu=False), {"label_smoothing": 0.9})


def test_label_smoothing_maps_to_and_from_the_setup_form():
    base = choices.default_config(SOURCE, gpu=False)
    state = sf.config_to_state(base)
    assert state["su_label_smoothing"] == 0.0
    cfg = sf.config_from_state(state | {"su_label_smoothing": 0.2}, base, SOURCE)
    assert cfg.train.label_smoothing == 0.2
    assert to_dict(cfg) == to_dict(parsed("--label-smoothing", "0.2", "--group-col", "patient_id"))


@pytest.mark.parametrize("imbalance", ["none", "weighted_loss"])
def test_a_learner_with_label_smoothing_has_the_smoothing_loss(tmp_path, imbalance):
    import torch
    from fastai.losses import LabelSmoothingCrossEntropy

    from core.data.loaders import build_dataloaders
    from core.data.sources import load_source
    from core.data.splits import assign_splits
    from core.train.learner import make_learner

    root = blob_dataset(tmp_path, n_per_class=6)
    cfg = RunConfig(
        source=SourceConfig(kind="csv", csv_path=str(root / "labels.csv"), group_col="patient_id")
    )
    cfg.data.img_size, cfg.data.batch_size, cfg.data.aug.enabled = 32, 4, False
    cfg.train.pretrained, cfg.train.imbalance, cfg.train.label_smoothing = False, imbalance, 0.1
    items = assign_splits(load_source(cfg.source).items, cfg.data.split)
    dls = build_dataloaders(items, cfg.data, device=torch.device("cpu"))
    learn = make_learner(dls, cfg, train_labels=dls.train_ds.items["label"])
    inner = learn.loss_func.func
    assert isinstance(inner, LabelSmoothingCrossEntropy) and inner.eps == 0.1
    assert (inner.weight is not None) == (imbalance == "weighted_loss")


def test_the_setup_page_draws_the_label_smoothing_widget():
    from streamlit.testing.v1 import AppTest

    from core.base.config import from_dict
    from tests.test_app_pages import OWNER, SETUP

    at = AppTest.from_file(SETUP, default_timeout=60)
    at.query_params["owner"] = OWNER
    at.run()
    at.slider(key="su_label_smoothing").set_value(0.1).run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert from_dict(RunConfig, at.session_state["run_config"]).train.label_smoothing == 0.1


def test_a_settings_file_with_an_unknown_architecture_is_refused_with_the_choices():
    cfg = choices.default_config(SOURCE, gpu=False)
    data = to_dict(cfg)
    data["train"]["arch"] = "vgg99"
    state: dict = {}
    reason = sf.apply_settings(json.dumps(data).encode(), state)
    assert "resnet18, resnet34" in reason and "vgg99" in reason and not state
