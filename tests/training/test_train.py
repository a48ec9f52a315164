import csv
import json
import os

import keras
import numpy as np
import pytest

from keras_tfm.errors import UserError
from keras_tfm.training import make_config
from keras_tfm.training import train
from keras_tfm.training.precision import dtype_policy


def tiny_config(tmp_path, **overrides):
    values = dict(output_dir=str(tmp_path / "run"), verbose=0)
    values.update(overrides)
    return make_config("tiny", **values)


def read_history(run_dir):
    with open(os.path.join(run_dir, "history.csv")) as f:
        return list(csv.DictReader(f))


@pytest.mark.slow
def test_smoke_run_writes_a_complete_run_directory(tmp_path, shakespeare_path):
    config = tiny_config(tmp_path, data=[shakespeare_path], max_steps=4,
                         eval_every=2)
    metrics = train(config)
    run_dir = config.output_dir
    for name in ("config.json", "tokenizer/tokenizer.json", "model.keras",
                 "history.csv", "metrics.json", "sample.txt", "logs"):
        assert os.path.exists(os.path.join(run_dir, name)), name
    assert sorted(os.listdir(os.path.join(run_dir, "checkpoints"))) == [
        "step-00000002.json", "step-00000002.weights.h5",
        "step-00000004.json", "step-00000004.weights.h5",
    ]
    with open(os.path.join(run_dir, "metrics.json")) as f:
        saved = json.load(f)
    for key in ("val_loss", "val_perplexity", "val_bits_per_byte",
                "train_loss", "steps", "tokens_seen", "tokens_per_second"):
        assert np.isfinite(saved[key]), key
    assert saved["steps"] == 4
    assert saved["tokens_seen"] == (
        4 * config.batch_size * config.sequence_length
    )
    assert saved == metrics
    assert [int(r["step"]) for r in read_history(run_dir)] == [2, 4]
    model = keras.models.load_model(os.path.join(run_dir, "model.keras"))
    logits = model(np.zeros((2, 5), "int32"))
    assert logits.shape == (2, 5, 260)


@pytest.mark.slow
def test_training_lowers_validation_loss(tmp_path, shakespeare_path):
    # A few dozen steps on Tiny Shakespeare: validation loss must fall well
    # below its starting point (ln 260 = 5.56 nats for a uniform guess).
    config = tiny_config(
        tmp_path, data=[shakespeare_path], max_steps=60, eval_every=20,
        eval_batches=8, sample_tokens=0,
    )
    metrics = train(config)
    history = read_history(config.output_dir)
    losses = [float(r["val_loss"]) for r in history]
    assert losses[-1] < losses[0] - 0.3
    assert metrics["val_loss"] < 4.0  # uniform: ln 260 = 5.56
    assert metrics["val_bits_per_byte"] < 4.0 / np.log(2)


@pytest.mark.slow
def test_wordpiece_masked_lm_trains(tmp_path, shakespeare_path):
    config = tiny_config(
        tmp_path, data=[shakespeare_path], tokenizer="wordpiece",
        objective="masked", max_steps=30, eval_every=10,
    )
    metrics = train(config)
    history = read_history(config.output_dir)
    assert float(history[-1]["val_loss"]) < float(history[0]["val_loss"])
    assert metrics["sample"] is None
    assert "pseudo" in metrics["val_bits_per_byte_note"]
    assert metrics["vocabulary_size"] <= 300


@pytest.mark.slow
def test_in_memory_dataset(tmp_path):
    texts = ["the quick brown fox jumps over the lazy dog. " * 20] * 5
    metrics = train(tiny_config(tmp_path, max_steps=3, eval_every=3,
                                sample_tokens=4), dataset=texts)
    assert metrics["steps"] == 3


@pytest.mark.slow
def test_refuses_to_mix_with_an_earlier_run(tmp_path):
    texts = ["abcdefghij " * 40] * 3
    config = tiny_config(tmp_path, max_steps=3, eval_every=3, sample_tokens=0)
    train(config, dataset=texts)
    with pytest.raises(UserError, match="already holds a finished run"):
        train(config, dataset=texts)
    train(config, dataset=texts, restart=True)


def test_corpus_shorter_than_one_sequence_leaves_nothing(tmp_path):
    config = tiny_config(tmp_path)
    with pytest.raises(UserError, match="shorter than one training"):
        train(config, dataset=["too short"])
    assert not os.path.exists(config.output_dir)


@pytest.mark.slow
def test_xla_compiled_train_step(tmp_path):
    texts = ["to be or not to be, that is the question. " * 30] * 4
    config = tiny_config(tmp_path, max_steps=3, eval_every=3, sample_tokens=4,
                         jit_compile="true")
    metrics = train(config, dataset=texts)
    assert metrics["jit_compile"] is True
    assert np.isfinite(metrics["val_loss"])


@pytest.mark.slow
def test_autocluster_bfloat16_train_step(tmp_path, capfd):
    # Graph mode and oneDNN matmuls in bfloat16. This process started
    # without auto-clustering's flags: it trains, and says XLA fuses less
    # (test_cli checks the command, which restarts itself with them).
    texts = ["to be or not to be, that is the question. " * 30] * 4
    config = tiny_config(tmp_path, max_steps=3, eval_every=3, sample_tokens=4,
                         jit_compile="autocluster", precision="mixed_bfloat16")
    metrics = train(config, dataset=texts)
    assert metrics["jit_compile"] is False and metrics["autocluster"] is False
    assert np.isfinite(metrics["val_loss"])
    assert "without auto-clustering" in capfd.readouterr().err
    assert keras.config.dtype_policy().name == "float32"


@pytest.mark.slow
def test_untied_embedding_in_graph_mode_with_micro_batches(tmp_path):
    # Outside XLA the untied embedding's gradient is an IndexedSlices,
    # which the micro-batch sum, mean and global-norm clipping must take.
    texts = ["to be or not to be, that is the question. " * 30] * 4
    config = tiny_config(tmp_path, max_steps=3, eval_every=3, sample_tokens=4,
                         jit_compile="false", tie_embeddings=False,
                         grad_accum_steps=2, clipnorm=1.0)
    metrics = train(config, dataset=texts)
    assert metrics["jit_compile"] is False
    assert np.isfinite(metrics["val_loss"]) and np.isfinite(
        metrics["train_loss"])


def test_dtype_policy_is_restored_when_the_block_raises():
    with pytest.raises(RuntimeError):
        with dtype_policy("mixed_bfloat16"):
            layer = keras.layers.Dense(2)
            assert layer.compute_dtype == "bfloat16"
            raise RuntimeError("a failed build")
    assert keras.config.dtype_policy().name == "float32"


def test_short_runs_get_a_short_warmup():
    # The default warmup is min(100, max_steps / 10); an explicit one that
    # does not fit stays an error.
    assert make_config("small", max_steps=20).resolved_warmup_steps() == 2
    assert make_config("small").resolved_warmup_steps() == 100
    assert make_config("small", max_steps=20,
                       warmup_steps=5).resolved_warmup_steps() == 5
    with pytest.raises(UserError, match=r"warmup_steps \(30\) must be below"):
        make_config("small", max_steps=20, warmup_steps=30)


def test_default_run_directory_is_named_after_the_data():
    from keras_tfm.training.train import default_output_dir

    assert default_output_dir(make_config("small")) == os.path.join(
        "runs", "small-causal")
    assert default_output_dir(make_config(
        "small", data=["corpus/shakespeare.txt"], objective="masked",
    )) == os.path.join("runs", "shakespeare-masked")
    assert default_output_dir(make_config(
        "small", data=["books/*.jsonl.gz"])) == os.path.join(
        "runs", "books-causal")
