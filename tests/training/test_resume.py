"""Checkpoints, resume, divergence, precision and accumulation (kills and
SIGTERM at every phase of a run: test_run_end.py)."""

import os

import h5py
import keras
import numpy as np
import pytest

from keras_tfm.errors import UserError
from keras_tfm.training import TrainingDiverged
from keras_tfm.training import checkpoints
from keras_tfm.training import make_config
from keras_tfm.training import train

TEXTS = ["to be or not to be, that is the question. " * 30] * 4

def small_model():
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    model.compile(optimizer="adam", loss="mse")
    return model


def test_damaged_checkpoints_are_detected(tmp_path):
    directory = str(tmp_path)
    model = small_model()
    for step in (1, 2, 3):
        checkpoints.save(model, directory, step, keep=3)
    assert checkpoints.list_steps(directory) == [1, 2, 3]
    # Truncate the newest, flip a byte in the middle one.
    newest = checkpoints.checkpoint_path(directory, 3)
    with open(newest, "r+b") as f:
        f.truncate(100)
    middle = checkpoints.checkpoint_path(directory, 2)
    with open(middle, "r+b") as f:
        f.seek(500)
        byte = f.read(1)
        f.seek(500)
        f.write(bytes([byte[0] ^ 0xFF]))
    messages = []
    assert checkpoints.latest_good(directory, messages.append)[:2] == (
        1, checkpoints.checkpoint_path(directory, 1)
    )
    assert "step 3" in messages[0] and "truncated" in messages[0]
    assert "step 2" in messages[1] and "corrupted" in messages[1]
    os.remove(checkpoints.manifest_path(directory, 1))
    with pytest.raises(UserError, match="no intact checkpoint"):
        checkpoints.latest_good(directory, messages.append)


@pytest.mark.slow
def test_resume_skips_a_damaged_checkpoint(tmp_path, capsys):
    config = make_config("tiny", output_dir=str(tmp_path / "run"), max_steps=6,
                         eval_every=3, checkpoint_every=2, sample_tokens=0,
                         verbose=1)
    train(config, dataset=TEXTS)
    run_dir = tmp_path / "run"
    # Make it an unfinished run whose newest checkpoint is damaged.
    os.remove(run_dir / "metrics.json")
    os.remove(run_dir / "model.keras")
    with open(checkpoints.checkpoint_path(str(run_dir / "checkpoints"), 6),
              "ab") as f:
        f.write(b"garbage")
    capsys.readouterr()
    metrics = train(config, dataset=TEXTS)
    out = capsys.readouterr().out
    assert "checkpoint at step 6 is unusable" in out
    assert "resumed from step 4" in out
    assert metrics["steps"] == 6 and metrics["resumed_from_step"] == 4


@pytest.mark.slow
def test_resume_refuses_a_changed_config(tmp_path):
    config = make_config("tiny", output_dir=str(tmp_path / "run"), max_steps=4,
                         eval_every=2, sample_tokens=0, verbose=0)
    train(config, dataset=TEXTS)
    os.remove(tmp_path / "run" / "metrics.json")
    changed = make_config("tiny", output_dir=str(tmp_path / "run"),
                          max_steps=4, eval_every=2, hidden_dim=64, verbose=0)
    with pytest.raises(UserError, match="different hidden_dim"):
        train(changed, dataset=TEXTS)
    # --restart starts over deliberately.
    metrics = train(changed, dataset=TEXTS, restart=True)
    assert metrics["resumed_from_step"] is None


@pytest.mark.slow
def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path):
    config = make_config("tiny", output_dir=str(tmp_path / "run"),
                         learning_rate=1e30, clipnorm=0.0, max_steps=10,
                         eval_every=5, checkpoint_every=1, verbose=0)
    with pytest.raises(TrainingDiverged, match=r"loss became nan at step \d"):
        train(config, dataset=TEXTS)
    directory = str(tmp_path / "run" / "checkpoints")
    good = checkpoints.latest_good(directory)
    assert good is not None
    with h5py.File(good[1]) as f:
        arrays = []
        f.visititems(lambda name, item: arrays.append(item[()])
                     if isinstance(item, h5py.Dataset) else None)
    assert arrays and all(np.isfinite(a).all() for a in arrays)
    assert not (tmp_path / "run" / "metrics.json").exists()


@pytest.mark.slow
@pytest.mark.parametrize("precision", ["mixed_bfloat16", "mixed_float16"])
def test_mixed_precision_learns(tmp_path, precision):
    config = make_config("tiny", output_dir=str(tmp_path / "run"),
                         precision=precision, max_steps=12, eval_every=4,
                         sample_tokens=4, verbose=0)
    metrics = train(config, dataset=TEXTS)
    with open(tmp_path / "run" / "history.csv") as f:
        losses = [float(line.split(",")[2]) for line in f.readlines()[1:]]
    assert losses[-1] < losses[0]
    assert metrics["precision"] == precision
    assert keras.config.dtype_policy().name == "float32"  # restored


@pytest.mark.slow
def test_accumulating_k_batches_matches_one_batch_k_times_larger(tmp_path):
    def run(name, batch_size, grad_accum_steps):
        config = make_config(
            "tiny", output_dir=str(tmp_path / name), batch_size=batch_size,
            grad_accum_steps=grad_accum_steps, max_steps=4, eval_every=2,
            sample_tokens=0, verbose=0,
        )
        metrics = train(config, dataset=TEXTS)
        model = keras.models.load_model(str(tmp_path / name / "model.keras"))
        return metrics, model.get_weights()

    accumulated, weights_a = run("accumulated", 4, 3)
    whole, weights_b = run("whole", 12, 1)
    assert accumulated["tokens_seen"] == whole["tokens_seen"]
    np.testing.assert_allclose(accumulated["val_loss"], whole["val_loss"],
                               atol=1e-5)
    for a, b in zip(weights_a, weights_b):
        np.testing.assert_allclose(a, b, atol=1e-5)


def test_a_run_streamed_in_an_older_order_is_not_resumed(tmp_path):
    # corpus.json records the prepared stream's order version; a run begun
    # under another (or before versions were recorded: 1) would resume
    # onto other windows than an uninterrupted run saw.
    import json

    from keras_tfm.data.prepared import STREAM_VERSION
    from keras_tfm.training import lm_corpus

    record = {"directory": str(tmp_path), "manifest_sha256": "0" * 64}
    (tmp_path / "corpus.json").write_text(json.dumps(record))
    with pytest.raises(UserError, match=r"version 1, this one \d.*--restart"):
        lm_corpus.check_resumable_stream(str(tmp_path))
    record["stream_version"] = STREAM_VERSION
    (tmp_path / "corpus.json").write_text(json.dumps(record))
    lm_corpus.check_resumable_stream(str(tmp_path))
    lm_corpus.check_resumable_stream(str(tmp_path / "no-run"))
