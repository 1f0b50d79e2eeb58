"""Defaults that fit the data: the user's split folders, the 'did not learn' warning, the LR finder's flat-curve rule."""

from __future__ import annotations

from pathlib import Path

import pytest

from core import cli
from core.data.sources import load_source
from core.data.splits import assign_splits
from tests.test_sources import two_classes


def cli_config(*args: str):
    """The RunConfig the CLI's train command would run."""
    return cli.run_config(cli.build_parser().parse_args(["train", *args]))


@pytest.mark.parametrize("val_name", ["val", "valid", "Val"])
def test_split_folders_are_the_default_split(tmp_path: Path, val_name: str):
    two_classes(tmp_path / "train", n=4)
    two_classes(tmp_path / val_name, n=2)
    two_classes(tmp_path / "test", n=1)
    cfg = cli_config("--root", str(tmp_path), "--no-pretrained")
    assert cfg.data.split.method == "folder"
    items = assign_splits(load_source(cfg.source).items, cfg.data.split)
    from_folder = items["relpath"].str.split("/").str[0].str.lower().replace({"val": "valid"})
    assert (items["split"] == from_folder).all()
    assert items["split"].value_counts().to_dict() == {"train": 8, "valid": 4, "test": 2}


def test_without_a_val_folder_or_when_chosen_the_split_is_stratified(tmp_path: Path):
    two_classes(tmp_path / "train", n=5)
    two_classes(tmp_path / "test", n=1)
    assert cli_config("--root", str(tmp_path)).data.split.method == "stratified"
    (tmp_path / "val").mkdir()
    two_classes(tmp_path / "val", n=2)
    assert cli_config("--root", str(tmp_path), "--split", "stratified").data.split.method == "stratified"
    assert cli_config("--root", str(tmp_path / "train")).data.split.method == "stratified"  # class folders
