import json

import pytest

from keras_tfm.errors import ConfigError
from keras_tfm.errors import UserError
from keras_tfm.training.config import TrainConfig
from keras_tfm.training.config import load_run_config
from keras_tfm.training.config import make_config
from keras_tfm.training.config import preset_names
from keras_tfm.training.config import save_config


def test_presets():
    assert {"tiny", "small"} <= set(preset_names())
    assert make_config("small") == TrainConfig(preset="small")
    tiny = make_config("tiny")
    assert tiny.hidden_dim < TrainConfig().hidden_dim


def test_config_is_frozen():
    with pytest.raises(Exception):
        TrainConfig().seed = 3


def test_overrides_win_over_the_file(tmp_path):
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"num_layers": 3, "seed": 1}))
    config = make_config(str(path), seed=5)
    assert (config.num_layers, config.seed, config.preset) == (3, 5, "c")


def test_round_trip_through_run_dir(tmp_path):
    config = make_config("tiny", data=["a.txt"], seed=9)
    save_config(config, str(tmp_path / "config.json"))
    assert load_run_config(str(tmp_path)) == config


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"hidden_dim": 30, "num_heads": 4}, "divisible by num_heads"),
        ({"num_layerz": 2}, "unknown config key 'num_layerz'"),
        ({"objective": "seq2seq"}, "objective must be one of"),
        ({"batch_size": 0}, "batch_size must be a positive integer"),
        ({"hidden_dim": "wide"}, "hidden_dim must be"),
        ({"warmup_steps": 5000}, "warmup_steps"),
        ({"activation": "bogus"}, "unknown activation 'bogus'"),
        ({"clipnorm": -1.0}, "clipnorm must be >= 0"),
        ({"learning_rate": 0.0}, "learning_rate must be a positive"),
        ({"beta_2": 1.0}, r"beta_2 must be in \[0, 1\)"),
        ({"verbose": 3}, "verbose must be one of"),
        ({"data": "a.txt", "packing": "zip"}, "packing must be one of"),
    ],
)
def test_bad_values_name_the_problem(overrides, message):
    with pytest.raises(ConfigError, match=message):
        make_config(**overrides)


def test_unknown_preset_and_bad_json(tmp_path):
    with pytest.raises(UserError, match="no config file or preset"):
        make_config("huge")
    path = tmp_path / "bad.json"
    path.write_text("{not json")
    with pytest.raises(UserError, match="not valid JSON"):
        make_config(str(path))


def test_a_damaged_run_config_is_a_user_error(tmp_path):
    config = make_config("tiny")
    save_config(config, str(tmp_path / "config.json"))
    text = (tmp_path / "config.json").read_text()
    (tmp_path / "config.json").write_text(text[: len(text) // 2])
    with pytest.raises(UserError, match="not valid JSON.*damaged"):
        load_run_config(str(tmp_path))


def test_every_field_has_help():
    import dataclasses

    for field in dataclasses.fields(TrainConfig):
        assert field.metadata.get("help"), field.name
