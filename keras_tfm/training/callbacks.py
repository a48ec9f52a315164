"""The per-step duties of the training loop, as one Keras callback."""

import math
import signal
import time

import keras
import numpy as np
import tensorflow as tf


def current_step(model):
    """The optimizer's step as an int (also for distributed variables)."""
    return int(keras.ops.convert_to_numpy(model.optimizer.iterations))


def scalar(value):
    """A log value (a scalar, or shape (1,) under multi-worker) as float."""
    return float(np.asarray(value).reshape(-1)[0])


class SigtermFlag:
    """Records a SIGTERM instead of dying of it, while installed.

    Cloud schedulers send SIGTERM before preempting a machine; the loop
    checks the flag at step boundaries, checkpoints and stops.
    """

    def __init__(self):
        self.received = False
        self._previous = None

    def __enter__(self):
        def handler(signum, frame):
            self.received = True

        self._previous = signal.signal(signal.SIGTERM, handler)
        return self

    def __exit__(self, *exc):
        signal.signal(signal.SIGTERM, self._previous)


def _sigterm_on_any_worker(received):
    """Whether any worker of a multi-worker job received SIGTERM.

    Every worker must stop at the same step (the others would wait in the
    next step's all-reduce forever), so the workers agree on each step's
    decision with one small all-reduce of their flags.
    """
    strategy = tf.distribute.get_strategy()
    flags = strategy.run(lambda: tf.constant(1.0 if received else 0.0))
    return float(strategy.reduce("SUM", flags, axis=None)) > 0


class StepMonitor(keras.callbacks.Callback):
    """Per optimizer step: NaN guard, timing, checkpoints, SIGTERM.

    Keras calls back after every call of the train function; with gradient
    accumulation several calls make one optimizer step, so the duties below
    run when the optimizer's step advances.

    - A NaN or Inf loss stops training at once, before any checkpoint of
      the broken state is written (`self.diverged_at` names the step).
    - Training time counts between consecutive step ends, so each `fit`
      call's first step (tracing and XLA compilation) is left out and
      timed on its own (`state.first_step_seconds`, the run's first), and
      so is the time between epochs (the loop's evaluations).
    - Every `checkpoint_every` steps, `save(step)` writes a checkpoint; on
      SIGTERM the current step is saved and training stops
      (`self.preempted`); under MultiWorkerMirroredStrategy when any worker
      received it, so that all stop at the same step.

    Args:
        state: the loop's `LoopState`, updated in place.
        save: `save(step)`: writes a checkpoint of the current state.
        checkpoint_every: int, 0 for none.
        sigterm: a `SigtermFlag`.
    """

    def __init__(self, state, save, checkpoint_every, sigterm):
        super().__init__()
        self.state = state
        self.save = save
        self.checkpoint_every = checkpoint_every
        self.sigterm = sigterm
        self.diverged_at = None
        self.preempted = False

    def on_train_begin(self, logs=None):
        self.last_step = current_step(self.model)
        self.start_interval()
        self._begin = time.perf_counter()
        self._last_end = None

    def on_epoch_begin(self, epoch, logs=None):
        # One epoch per evaluation interval: the evaluation and checkpoint
        # between two epochs are not training time.
        if self._last_end is not None:
            self._last_end = time.perf_counter()

    def start_interval(self):
        """Starts counting an evaluation interval's steps and mean loss
        (Keras resets its loss mean at every epoch, one per interval)."""
        self.fit_start_step = self.last_step
        # Mean train loss over this interval's steps so far.
        self.fit_loss = 0.0

    def _sigterm_anywhere(self):
        strategy = self.model.distribute_strategy
        if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
            with strategy.scope():
                return _sigterm_on_any_worker(self.sigterm.received)
        return self.sigterm.received

    @property
    def fit_steps(self):
        return self.last_step - self.fit_start_step

    def interval_loss_sum(self):
        """Sum of the train losses since the last evaluation row."""
        return self.state.interval_loss_sum + self.fit_loss * self.fit_steps

    def on_train_batch_end(self, batch, logs=None):
        loss = scalar((logs or {}).get("loss", 0.0))
        if not math.isfinite(loss):
            self.diverged_at = current_step(self.model)
            self.diverged_loss = loss
            self.model.stop_training = True
            return
        step = current_step(self.model)
        if step == self.last_step:
            return  # an accumulating call: the optimizer step is not done
        now = time.perf_counter()
        if self._last_end is None:
            if self.state.first_step_seconds is None:
                self.state.first_step_seconds = now - self._begin
        else:
            self.state.train_seconds += now - self._last_end
            self.state.timed_steps += step - self.last_step
        self._last_end = now
        self.last_step = step
        self.fit_loss = loss
        if self._sigterm_anywhere():
            self.save(step)
            self.preempted = True
            self.model.stop_training = True
        elif self.checkpoint_every and step % self.checkpoint_every == 0:
            self.save(step)
