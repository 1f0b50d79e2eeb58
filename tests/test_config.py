"""Config dataclasses: validation and JSON round-trip."""

import json

import pytest

from core.base.config import (
    ConfigError,
    DataConfig,
    RunConfig,
    SplitConfig,
    TrainConfig,
    Window,
    from_dict,
    load_json,
    save_json,
    to_dict,
)


def test_round_trip_nested(tmp_path):
    cfg = RunConfig(name="r1")
    cfg.data.window = Window(center=40, width=400)
    cfg.data.split.k_folds = 5
    cfg.train.lr = 1e-3
    save_json(cfg, tmp_path / "config.json")
    back = load_json(RunConfig, tmp_path / "config.json")
    assert back == cfg
    assert isinstance(back.data.window, Window) and back.data.window.width == 400.0
    assert json.loads((tmp_path / "config.json").read_text())["data"]["split"]["k_folds"] == 5


def test_unknown_field_refused():
    with pytest.raises(ConfigError, match="unknown"):
        from_dict(RunConfig, {"data": {"img_sz": 3}})


@pytest.mark.parametrize(
    "cfg",
    [
        DataConfig(img_size=8),
        DataConfig(channels="cmyk"),
        DataConfig(split=SplitConfig(valid_pct=0.6, test_pct=0.5)),
        DataConfig(split=SplitConfig(k_folds=1)),
        DataConfig(window=Window(0, 0)),
    ],
)
def test_invalid_data_config(cfg):
    with pytest.raises(ConfigError):
        cfg.validate()


def test_invalid_train_config():
    with pytest.raises(ConfigError, match="monitor"):
        TrainConfig(monitor="f1").validate()
    with pytest.raises(ConfigError, match=r"lr must be within 1e-07\.\.10"):
        TrainConfig(lr=-1).validate()


def test_defaults_are_valid_and_xray_safe():
    cfg = RunConfig().validate()
    assert cfg.data.aug.vertical_flip is False
    assert to_dict(cfg)["train"]["arch"] == "resnet18"


def test_a_random_split_without_validation_images_is_refused_before_training():
    from core.base.config import ConfigError, SplitConfig

    for method in ("random", "stratified", "group"):
        with pytest.raises(ConfigError, match="validation fraction of 0"):
            SplitConfig(method=method, valid_pct=0.0).validate()
        SplitConfig(method=method, valid_pct=0.0, k_folds=5).validate()  # the folds give validation images
    SplitConfig(method="folder", valid_pct=0.0).validate()  # the source's own val/ folder
