"""`batch_splits`: which runs split the batch, and that a split run trains."""

import types

import numpy as np
import pytest
import tensorflow as tf

from keras_tfm.errors import ConfigError
from keras_tfm.training import make_config
from keras_tfm.training import train
from keras_tfm.training.strategy import resolve_batch_splits

ONE_DEVICE = tf.distribute.get_strategy()
TWO_REPLICAS = types.SimpleNamespace(num_replicas_in_sync=2)


@pytest.mark.parametrize(
    "overrides, strategy, jit_compile, expected",
    [
        # auto: a single CPU device under XLA splits an even batch in two.
        ({"batch_size": 12}, ONE_DEVICE, True, 2),
        # ... inside each of the accumulated batches.
        ({"batch_size": 12, "grad_accum_steps": 3}, ONE_DEVICE, True, 2),
        ({"batch_size": 7}, ONE_DEVICE, True, 1),
        ({"batch_size": 12}, ONE_DEVICE, False, 1),
        # XLA auto-clustering (graph mode, jit_compile resolves to False).
        ({"batch_size": 12, "jit_compile": "autocluster"}, ONE_DEVICE, False,
         2),
        ({"batch_size": 12, "jit_compile": "autocluster"}, TWO_REPLICAS,
         False, 1),
        ({"batch_size": 12}, TWO_REPLICAS, False, 1),
        # Explicit values are taken as given.
        ({"batch_size": 12, "batch_splits": 1}, ONE_DEVICE, True, 1),
        ({"batch_size": 12, "batch_splits": 3}, ONE_DEVICE, False, 3),
        ({"batch_size": 12, "batch_splits": 3}, TWO_REPLICAS, False, 3),
    ],
)
def test_resolve_batch_splits(overrides, strategy, jit_compile, expected):
    config = make_config("tiny", **overrides)
    assert resolve_batch_splits(config, strategy, jit_compile) == expected


def test_a_split_that_does_not_divide_the_batch_names_the_fix():
    config = make_config("tiny", batch_size=12, batch_splits=5)
    with pytest.raises(ConfigError, match="multiple of batch_splits"):
        resolve_batch_splits(config, ONE_DEVICE, True)
    # Per replica: 12 / 2 = 6 sequences do not split in 4.
    config = make_config("tiny", batch_size=12, batch_splits=4)
    with pytest.raises(ConfigError, match=r"per replica \(6\)"):
        resolve_batch_splits(config, TWO_REPLICAS, False)
    with pytest.raises(ConfigError, match="batch_splits must be"):
        make_config("tiny", batch_splits=-1)


@pytest.mark.slow
def test_split_and_unsplit_runs_train_the_same_model(tmp_path):
    # Halves of a batch summed are the batch: the same weights after a few
    # steps, up to float rounding; metrics.json says how the step ran.
    texts = ["to be or not to be, that is the question. " * 30] * 4

    def run(name, batch_splits):
        config = make_config(
            "tiny", output_dir=str(tmp_path / name), batch_size=8,
            batch_splits=batch_splits, jit_compile="true", max_steps=3,
            eval_every=3, sample_tokens=0, verbose=0,
        )
        return train(config, dataset=texts)

    split, whole = run("split", 0), run("whole", 1)
    assert split["batch_splits"] == 2 and whole["batch_splits"] == 1
    np.testing.assert_allclose(split["val_loss"], whole["val_loss"],
                               atol=1e-5)
    np.testing.assert_allclose(split["train_loss"], whole["train_loss"],
                               atol=1e-5)


def test_a_bad_split_leaves_no_run_directory(tmp_path):
    config = make_config("tiny", output_dir=str(tmp_path / "run"),
                         batch_size=8, batch_splits=3, verbose=0)
    with pytest.raises(ConfigError, match="multiple of batch_splits"):
        train(config, dataset=["to be or not to be, that is the question. "
                               * 30] * 4)
    assert not (tmp_path / "run").exists()
