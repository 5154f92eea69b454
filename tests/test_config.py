import copy
from pathlib import Path

import pytest
import yaml

from lotto import config as C

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = [ROOT / "config.yaml", *sorted((ROOT / "workflow" / "configs").glob("*.yaml"))]


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_shipped_configs_are_valid(path):
    # cifar10-resnet20-cpu.yaml and zoo-tiny.yaml read a user's local copy of the data (absent here):
    # everything but the existence of data.path is checked
    cfg = C.validate(C.read_config_file(path), check_paths=False)
    assert cfg["training"]["batch_size"] >= 1
    assert any(f in cfg for f in C.families())


def base():
    return yaml.safe_load((ROOT / "config.yaml").read_text())


def set_key(cfg, dotted, value):
    *parents, last = dotted.split(".")
    node = cfg
    for p in parents:
        node = node[p]
    node[last] = value
    return cfg


@pytest.mark.parametrize(
    "key, value, expected",
    [
        ("training.bogus", 1, "unknown config key 'training.bogus'"),
        ("bogus_top", 1, "unknown config key 'bogus_top'"),
        ("training.lr", "fast", "config key 'training.lr'"),
        ("training.batch_size", 12.5, "config key 'training.batch_size'"),
        ("composability.sparsities", [0.5, 1.2], "config key 'composability.sparsities[1]'"),
        ("composability.sparsities", [0.0], "config key 'composability.sparsities[0]'"),
        ("composability.ks", [1, 2], "config key 'composability.ks[0]'"),
        ("model.name", "resnet9000", "config key 'model.name'"),
        ("data.dataset", "imagenet22k", "config key 'data.dataset'"),
        ("composability.sparsities", [0.12345], "config key 'composability.sparsities[0]'"),
        ("composability.ks", [3, 4], "config key 'composability.ks'"),
    ],
)
def test_invalid_configs_name_the_key(key, value, expected):
    cfg = set_key(base(), key, value)
    with pytest.raises(C.ConfigError) as err:
        C.validate(cfg)
    assert expected in str(err.value)


def test_missing_section_named():
    cfg = base()
    del cfg["model"]
    with pytest.raises(C.ConfigError, match="missing config key 'model'"):
        C.validate(cfg)


def test_defaults_filled_and_input_untouched():
    cfg = base()
    cfg["training"].pop("nesterov", None)
    before = copy.deepcopy(cfg)
    out = C.validate(cfg)
    assert out["training"]["nesterov"] is False and out["resources"]["train_threads"] >= 1
    assert cfg == before


def test_partial_sections_and_inline_json():
    out = C.load('{"training": {"lr": 0.05}}', partial=True)
    assert out["training"]["lr"] == 0.05 and out["training"]["batch_size"] == 128
    with pytest.raises(C.ConfigError, match="not valid JSON"):
        C.load("{oops", partial=True)
    with pytest.raises(C.ConfigError, match="config file not found"):
        C.load("/nonexistent/config.yaml")


def test_a_config_without_any_experiment_family_is_rejected():
    cfg = base()
    del cfg["composability"]
    with pytest.raises(C.ConfigError, match="names no experiment.*'composability'"):
        C.validate(cfg)
    # the per-stage configs handed to CLI calls carry only the sections a stage uses
    assert C.validate({"model": cfg["model"]}, partial=True)["model"]["name"] == "resnet20"
