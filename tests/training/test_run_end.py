"""A run killed (or stopped by SIGTERM) at each phase of its end, then
rerun, finishes with the uninterrupted run's metrics and history.

Each interrupted run is the real command in a subprocess whose one phase
is patched to kill the process (SIGKILL) or to send it SIGTERM at that
moment; the rerun is the unpatched command.
"""

import csv
import json
import os
import subprocess
import sys

import numpy as np
import pytest

pytestmark = pytest.mark.slow

# 12 steps, evaluations at 6 and 12, checkpoints every 2; deterministic
# ops, so a resumed run computes what an uninterrupted one does.
RUN = ["pretrain", "--config", "tiny", "--max-steps", "12", "--eval-every",
       "6", "--checkpoint-every", "2", "--eval-batches", "2",
       "--sample-tokens", "8", "--verbose", "2", "--deterministic"]

# Runs the CLI with one phase patched: `kill` SIGKILLs the process there,
# `term` sends it SIGTERM there and lets it go on.
PATCHED = r'''
import importlib, os, signal, sys
import keras_tfm
callbacks, history, run, train = (
    importlib.import_module(f"keras_tfm.training.{name}")
    for name in ("callbacks", "history", "run", "train"))

phase, action = sys.argv[1], sys.argv[2]
sig = signal.SIGKILL if action == "kill" else signal.SIGTERM

def at(owner, name, when=lambda *a, **k: True, before=None):
    original = getattr(owner, name)
    def patched(*args, **kwargs):
        if when(*args, **kwargs):
            if before:
                before(*args, **kwargs)
            os.kill(os.getpid(), sig)
        return original(*args, **kwargs)
    setattr(owner, name, patched)

if phase == "final_evaluation":
    at(train, "evaluate_windows")
elif phase == "model_write":
    def half_written(self, model, name="model.keras"):
        with open(os.path.join(self.out_dir, ".partial-" + name), "wb") as f:
            f.write(b"PK\x03\x04 half")
    at(run.RunWriter, "save_model", before=half_written)
elif phase == "metrics_write":
    at(run.RunWriter, "finish")
elif phase == "first_row":
    at(history.History, "record")
elif phase in ("mid_interval", "after_an_evaluation"):
    stop = 4 if phase == "mid_interval" else 8
    at(callbacks.StepMonitor, "on_train_batch_end",
       when=lambda self, batch, logs=None:
           callbacks.current_step(self.model) == stop)
from keras_tfm.cli import main
sys.exit(main(sys.argv[3:]))
'''


def command(run_dir, data):
    return [*RUN, "--data", data, "--output-dir", str(run_dir)]


def cli(args):
    return subprocess.run(["keras-tfm", *args], capture_output=True,
                          text=True, timeout=300)


def patched(phase, action, args):
    return subprocess.run([sys.executable, "-c", PATCHED, phase, action,
                           *args], capture_output=True, text=True,
                          timeout=300)


def read_run(run_dir):
    with open(os.path.join(run_dir, "metrics.json")) as f:
        metrics = json.load(f)  # strict JSON: a bare NaN would fail here
    with open(os.path.join(run_dir, "history.csv")) as f:
        rows = list(csv.DictReader(f))
    return metrics, rows


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, shakespeare_path):
    run_dir = tmp_path_factory.mktemp("whole") / "run"
    result = cli(command(run_dir, shakespeare_path))
    assert result.returncode == 0, result.stderr[-3000:]
    return read_run(run_dir)


# The figures a resumed run must reproduce, and how closely: evaluation is
# deterministic (identical); a train loss combines the steps before and
# after the resume in float64 instead of Keras' float32 running mean.
EXACT = ("val_loss", "val_perplexity", "val_bits_per_byte", "val_tokens",
         "steps", "tokens_seen", "sample", "unigram_bits_per_byte")
TRAIN_LOSS_TOLERANCE = 1e-5


def assert_same_run(got, expected):
    (metrics, rows), (want_metrics, want_rows) = got, expected
    for key in EXACT:
        assert metrics[key] == want_metrics[key], key
    np.testing.assert_allclose(metrics["train_loss"],
                               want_metrics["train_loss"],
                               atol=TRAIN_LOSS_TOLERANCE)
    assert metrics["tokens_per_second"] > 0
    assert [r["step"] for r in rows] == [r["step"] for r in want_rows]
    for row, want in zip(rows, want_rows):
        assert row["val_loss"] == want["val_loss"]
        np.testing.assert_allclose(float(row["train_loss"]),
                                   float(want["train_loss"]),
                                   atol=TRAIN_LOSS_TOLERANCE)


@pytest.mark.parametrize("phase", ["final_evaluation", "model_write",
                                   "metrics_write", "first_row",
                                   "mid_interval", "after_an_evaluation"])
def test_killed_at_a_phase_resumes_to_the_same_result(
    phase, tmp_path, shakespeare_path, uninterrupted
):
    run_dir = tmp_path / "run"
    args = command(run_dir, shakespeare_path)
    if phase == "after_an_evaluation":
        # Checkpoints at evaluations only: killed at step 8, the rerun
        # resumes from step 6, whose row is written.
        args += ["--checkpoint-every", "6"]
    killed = patched(phase, "kill", args)
    assert killed.returncode == -9, killed.stderr[-2000:]
    assert not (run_dir / "metrics.json").exists()
    again = cli(args)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "resumed from step" in again.stdout
    assert not (run_dir / ".partial-model.keras").exists()
    assert_same_run(read_run(run_dir), uninterrupted)


@pytest.mark.parametrize("phase, step", [("mid_interval", 4),
                                         ("final_evaluation", 12)])
def test_sigterm_exits_143_and_the_rerun_finishes(
    phase, step, tmp_path, shakespeare_path, uninterrupted
):
    run_dir = tmp_path / "run"
    args = command(run_dir, shakespeare_path)
    stopped = patched(phase, "term", args)
    # 128 + SIGTERM, after the checkpoint, with one line saying so.
    assert stopped.returncode == 143, stopped.stderr[-2000:]
    assert "Traceback" not in stopped.stderr
    lines = [line for line in stopped.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "stopped by SIGTERM" in lines[0], lines
    assert f"step {step}" in lines[0]
    assert not (run_dir / "metrics.json").exists()
    again = cli(args)
    assert again.returncode == 0, again.stderr[-3000:]
    assert_same_run(read_run(run_dir), uninterrupted)


def test_metrics_json_is_strict_json_with_unknowns_explained(tmp_path):
    from keras_tfm.training.run import RunWriter

    writer = RunWriter(str(tmp_path / "run"), ())
    with writer:
        writer.begin(fresh=True)
        writer.finish({"train_loss": float("nan"), "tokens_per_second": None,
                       "val_loss": 1.5})
    text = (tmp_path / "run" / "metrics.json").read_text()
    assert "NaN" not in text
    metrics = json.loads(text)
    assert metrics["train_loss"] is None and metrics["val_loss"] == 1.5
    assert "not finite" in metrics["notes"]["train_loss"]
    assert "no timed training step" in metrics["notes"]["tokens_per_second"]
