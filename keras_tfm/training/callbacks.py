"""Callbacks of the pre-training loop."""

import math
import signal
import time

import keras

from keras_tfm.training import checkpoints


def current_step(model):
    """The optimizer's step as an int (also for distributed variables)."""
    return int(keras.ops.convert_to_numpy(model.optimizer.iterations))


class StepMonitor(keras.callbacks.Callback):
    """Per-step duties: NaN guard, periodic checkpoints, SIGTERM.

    - A NaN or Inf loss stops training at once, before any checkpoint of
      the broken state is written (`self.diverged_at` names the step).
    - Every `checkpoint_every` steps a checkpoint is written (or, on a
      non-chief worker, into its scratch directory).
    - On SIGTERM, as cloud schedulers send before preempting, the current
      step is checkpointed and training stops (`self.preempted`).
    """

    def __init__(self, checkpoint_dir, checkpoint_every, verbose=True):
        super().__init__()
        self.checkpoint_dir = checkpoint_dir
        self.checkpoint_every = checkpoint_every
        self.verbose = verbose
        self.diverged_at = None
        self.preempted = False
        self.last_checkpoint = None
        self._sigterm = False

    def install_sigterm_handler(self):
        """Returns the previous handler, to restore after training."""

        def handler(signum, frame):
            self._sigterm = True

        return signal.signal(signal.SIGTERM, handler)

    def save(self, step):
        checkpoints.save(self.model, self.checkpoint_dir, step)
        self.last_checkpoint = step
        if self.verbose:
            # A newline first: Keras' progress bar may hold the line.
            print(f"\ncheckpoint saved at step {step}", flush=True)

    def on_train_batch_end(self, batch, logs=None):
        step = current_step(self.model)
        loss = float((logs or {}).get("loss", 0.0))
        if not math.isfinite(loss):
            self.diverged_at = step
            self.model.stop_training = True
            return
        if self._sigterm:
            self.save(step)
            self.preempted = True
            self.model.stop_training = True
        elif self.checkpoint_every and step % self.checkpoint_every == 0:
            self.save(step)


class Throughput(keras.callbacks.Callback):
    """Training time and steps, between consecutive step ends: without
    each `fit` call's first step (tracing and XLA compilation happen there)
    and without validation, which runs between `fit` calls."""

    def __init__(self):
        super().__init__()
        self.train_seconds = 0.0
        self.timed_steps = 0
        self.first_step_seconds = None

    def on_train_begin(self, logs=None):
        self._begin = time.perf_counter()
        self._last = None

    def on_train_batch_end(self, batch, logs=None):
        now = time.perf_counter()
        if self._last is None:
            if self.first_step_seconds is None:
                self.first_step_seconds = now - self._begin
        else:
            self.train_seconds += now - self._last
            self.timed_steps += 1
        self._last = now
