"""Callbacks of the pre-training loop: step limit, evaluation log,
checkpoints and throughput."""

import csv
import glob
import math
import os
import time

import keras


class StepLimit(keras.callbacks.Callback):
    """Stops training once the optimizer has taken `max_steps` steps."""

    def __init__(self, max_steps):
        super().__init__()
        self.max_steps = max_steps

    def on_train_batch_end(self, batch, logs=None):
        if int(self.model.optimizer.iterations) >= self.max_steps:
            self.model.stop_training = True


class EvaluationLog(keras.callbacks.Callback):
    """Adds validation bits per byte and perplexity to each evaluation's
    logs and appends one row per evaluation to `history.csv`.

    Keras reports `val_loss` as the mean nats per predicted token over the
    validation batches; with those batches' token and byte counts that is
    converted to bits per byte (`[UNK]` bytes charged 8 bits each).
    """

    COLUMNS = (
        "step",
        "train_loss",
        "val_loss",
        "val_perplexity",
        "val_bits_per_byte",
        "learning_rate",
        "tokens_seen",
        "elapsed_seconds",
    )

    def __init__(self, path, tokens_per_step, val_tokens, val_bytes,
                 val_unknown_bytes):
        super().__init__()
        self.path = path
        self.tokens_per_step = tokens_per_step
        self.val_tokens = val_tokens
        self.val_bytes = val_bytes
        self.val_unknown_bytes = val_unknown_bytes
        self.start = time.time()

    def on_epoch_end(self, epoch, logs=None):
        logs = logs if logs is not None else {}
        step = int(self.model.optimizer.iterations)
        row = {
            "step": step,
            "train_loss": logs.get("loss"),
            "learning_rate": float(self.model.optimizer.learning_rate),
            "tokens_seen": step * self.tokens_per_step,
            "elapsed_seconds": round(time.time() - self.start, 1),
        }
        if "val_loss" in logs:
            val_loss = float(logs["val_loss"])
            bits = val_loss * self.val_tokens / math.log(2)
            bits += 8 * self.val_unknown_bytes
            row["val_loss"] = val_loss
            row["val_perplexity"] = math.exp(min(val_loss, 700.0))
            row["val_bits_per_byte"] = bits / max(1, self.val_bytes)
            logs["val_bits_per_byte"] = row["val_bits_per_byte"]
        new_file = not os.path.exists(self.path)
        with open(self.path, "a", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=self.COLUMNS)
            if new_file:
                writer.writeheader()
            writer.writerow(row)


class Checkpoint(keras.callbacks.Callback):
    """Saves model and optimizer state after every evaluation.

    Each checkpoint is a complete `.keras` file written under a temporary
    name and renamed into place, so a kill at any instant leaves the last
    good checkpoint intact. The newest `keep` checkpoints are kept.
    """

    def __init__(self, directory, keep=2, verbose=True):
        super().__init__()
        self.directory = directory
        self.keep = keep
        self.verbose = verbose

    def on_epoch_end(self, epoch, logs=None):
        step = int(self.model.optimizer.iterations)
        os.makedirs(self.directory, exist_ok=True)
        path = os.path.join(self.directory, f"step-{step:08d}.keras")
        temporary = os.path.join(self.directory, f".partial-{step:08d}.keras")
        self.model.save(temporary)
        os.replace(temporary, path)
        for old in sorted(glob.glob(os.path.join(self.directory, "step-*.keras")))[
            : -self.keep
        ]:
            os.remove(old)
        if self.verbose:
            print(f"checkpoint saved at step {step}", flush=True)


class Throughput(keras.callbacks.Callback):
    """Training time and steps, without the first step (graph tracing and
    XLA compilation) and without validation."""

    def __init__(self):
        super().__init__()
        self.train_seconds = 0.0
        self.timed_steps = 0
        self.first_step_seconds = None

    def on_epoch_begin(self, epoch, logs=None):
        self._last = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        now = time.perf_counter()
        if self.first_step_seconds is None:
            self.first_step_seconds = now - self._last
        else:
            self.train_seconds += now - self._last
            self.timed_steps += 1
        self._last = now
