"""The training loop every keras-tfm run shares: compiled `fit` calls from
one evaluation to the next, checkpoints, history, kills and SIGTERM.

Training runs as `model.fit` calls of one epoch per evaluation interval
(one call for every whole interval ahead; a resumed partial interval and
a shorter last one get their own), each on a data stream that starts at
the current step, so a run resumed from a checkpoint
continues the same stream at the same step, and the learning-rate schedule
(a function of the optimizer's step) continues too. The loop's own state
(the running train loss of the unfinished interval, timings) is saved
with each checkpoint, so a resumed run's history and figures are those of
an uninterrupted one:

- a kill between a checkpoint and that step's evaluation: the resumed run
  evaluates that step first, with the train loss saved at the checkpoint;
- a kill (or SIGTERM) mid-interval: the interval's train loss averages all
  its steps, before and after the resume;
- a kill after the last checkpoint: the resumed run skips training and
  finishes the final evaluation, the model and the metrics.
"""

import dataclasses
import time

import keras

from keras_tfm.errors import UserError
from keras_tfm.training.callbacks import SigtermFlag
from keras_tfm.training.callbacks import StepMonitor
from keras_tfm.training.callbacks import current_step


class TrainingDiverged(UserError):
    """The loss became NaN or Inf."""


class Preempted(Exception):
    """The run stopped on SIGTERM, in a state a rerun resumes from."""

    def __init__(self, step, message):
        super().__init__(message)
        self.step = step


# The exit status of a run stopped by SIGTERM: 128 + 15, the shell's
# convention for a process ended by that signal.
PREEMPTED_EXIT_CODE = 143


@dataclasses.dataclass
class LoopState:
    """What a checkpoint records besides the weights.

    Attributes:
        interval_loss_sum: sum of the per-step train losses since the last
            evaluation row (each step's loss: its batch's mean).
        interval_steps: the steps in that sum.
        train_seconds: time in timed training steps, over the whole run.
        timed_steps: those steps.
        first_step_seconds: the run's first step (tracing and compilation).
        elapsed_seconds: wall time spent in the run so far, over every
            process that worked on it.
    """

    step: int = 0
    interval_loss_sum: float = 0.0
    interval_steps: int = 0
    train_seconds: float = 0.0
    timed_steps: int = 0
    first_step_seconds: float = None
    elapsed_seconds: float = 0.0

    @classmethod
    def from_dict(cls, step, values):
        known = {f.name for f in dataclasses.fields(cls)}
        state = cls(**{k: v for k, v in values.items() if k in known})
        state.step = step
        return state

    def interval_loss(self):
        if not self.interval_steps:
            return float("nan")
        return self.interval_loss_sum / self.interval_steps


class Loop:
    """Runs `trainer` to `max_steps`, evaluating and checkpointing.

    Args:
        trainer: a compiled `TrainingModel`.
        state: a `LoopState` (step 0, or restored from a checkpoint).
        max_steps, eval_every, checkpoint_every: in optimizer steps;
            `checkpoint_every` 0 means at every evaluation.
        grad_accum_steps: train-function calls per optimizer step.
        train_dataset: `train_dataset(step)`: the stream of batches from
            optimizer step `step` on (`grad_accum_steps` batches a step).
        evaluate: `evaluate(step, final)`: validation figures as a dict
            (history columns); `final` at `max_steps`, where the figures
            become the run's.
        history: a `History`.
        save_checkpoint: `save_checkpoint(step, state_dict)`.
        verbose: Keras' progress bar setting.
        log: prints a line (a no-op on workers other than the chief).
        progress_columns: `progress_columns(step)`: extra history columns
            (e.g. `tokens_seen`).
    """

    def __init__(self, trainer, state, max_steps, eval_every,
                 checkpoint_every, grad_accum_steps, train_dataset,
                 evaluate, history, save_checkpoint, verbose=1, log=print,
                 progress_columns=None):
        self.trainer = trainer
        self.state = state
        self.max_steps = max_steps
        self.eval_every = eval_every
        self.checkpoint_every = checkpoint_every or eval_every
        self.grad_accum_steps = grad_accum_steps
        self.train_dataset = train_dataset
        self.evaluate = evaluate
        self.history = history
        self.save_checkpoint = save_checkpoint
        self.verbose = verbose
        self.log = log
        self.progress_columns = progress_columns or (lambda step: {})
        self.sigterm = SigtermFlag()
        self.final_figures = None
        self._start = None
        self._last_checkpoint = state.step if state.step else None

    def is_eval_step(self, step):
        return step == self.max_steps or step % self.eval_every == 0

    def elapsed(self):
        return self._carried_elapsed + time.time() - self._start

    def _checkpoint(self, step, interval_loss_sum=None, interval_steps=None):
        state = dataclasses.replace(
            self.state,
            step=step,
            elapsed_seconds=self.elapsed(),
        )
        if interval_loss_sum is not None:
            state.interval_loss_sum = interval_loss_sum
            state.interval_steps = interval_steps
        self.save_checkpoint(step, dataclasses.asdict(state))
        self._last_checkpoint = step
        self.log(f"\ncheckpoint saved at step {step}", flush=True)

    def _record(self, step):
        figures = self.evaluate(step, final=step == self.max_steps)
        learning_rate = float(
            keras.ops.convert_to_numpy(self.trainer.optimizer.learning_rate)
        )
        row = {
            "step": step,
            "train_loss": self.state.interval_loss(),
            **{k: v for k, v in figures.items() if k in self.history.columns},
            "learning_rate": learning_rate,
            **self.progress_columns(step),
            "elapsed_seconds": round(self.elapsed(), 1),
        }
        self.history.record(row, self.log)
        self.last_train_loss = row["train_loss"]
        self.state.interval_loss_sum, self.state.interval_steps = 0.0, 0
        if step == self.max_steps:
            self.final_figures = figures
        return figures

    def run(self):
        """Trains to `max_steps`; returns the final figures. Call inside
        `with loop:`, which records SIGTERM instead of dying of it.

        Raises:
            TrainingDiverged: the loss became NaN or Inf.
            Preempted: SIGTERM; the current step is checkpointed.
        """
        self._start = time.time()
        self._carried_elapsed = self.state.elapsed_seconds
        self.last_train_loss = None
        if self.history.last_row() is not None:
            self.last_train_loss = float(self.history.last_row()["train_loss"])
        step = self.state.step
        if step and self.is_eval_step(step):
            if self.history.has_row(step):
                # The checkpoint at an evaluation step is written before
                # the row; the row is there, so its interval is closed.
                self.state.interval_loss_sum = 0.0
                self.state.interval_steps = 0
            else:
                # Killed between the checkpoint and the row: evaluate
                # that step now, with the train loss saved then.
                self._record(step)
        while step < self.max_steps:
            step = self._train_intervals(step)
        if self.final_figures is None:
            # Resumed after the last row was written (killed while the
            # model or metrics were): the final figures again.
            self.final_figures = self.evaluate(self.max_steps, final=True)
        return self.final_figures

    def __enter__(self):
        """Installs the SIGTERM flag for the run and its final phases."""
        self.sigterm.__enter__()
        return self

    def __exit__(self, *exc):
        self.sigterm.__exit__(*exc)

    def _train_intervals(self, step):
        """Trains from `step` to the next evaluation, or through every
        whole evaluation interval ahead in one `fit` call (one epoch an
        interval), so the data stream is opened once for all of them: a
        stream that starts mid-way must skip to its position, and a prepared
        corpus skips by reading."""
        target = min(
            (step // self.eval_every + 1) * self.eval_every, self.max_steps
        )
        intervals = 1
        whole = (self.max_steps - step) // self.eval_every
        if step % self.eval_every == 0 and whole > 1:
            intervals = whole
            target = step + intervals * self.eval_every
        monitor = StepMonitor(
            self.state,
            lambda s: self._checkpoint(
                s, monitor.interval_loss_sum(),
                self.state.interval_steps + monitor.fit_steps,
            ),
            self.checkpoint_every,
            self.sigterm,
        )
        loop = self

        class IntervalEnd(keras.callbacks.Callback):
            def on_epoch_begin(self, epoch, logs=None):
                first = min(step + epoch * loop.eval_every, target)
                if loop.verbose and intervals > 1:
                    loop.log(f"steps {first + 1}-"
                             f"{min(first + loop.eval_every, target)} of "
                             f"{loop.max_steps}")

            def on_epoch_end(self, epoch, logs=None):
                loop._finish_interval(monitor)

        if self.verbose and intervals == 1:
            self.log(f"steps {step + 1}-{target} of {self.max_steps}")
        self.trainer.fit(
            self.train_dataset(step),
            steps_per_epoch=(target - step) // intervals
            * self.grad_accum_steps,
            epochs=intervals,
            callbacks=[monitor, IntervalEnd()],
            verbose=self.verbose,
            shuffle=False,  # the stream is shuffled, by step
        )
        return current_step(self.trainer)

    def _finish_interval(self, monitor):
        """After an interval's last step: the divergence and SIGTERM
        checks, the checkpoint, the evaluation and its row."""
        step = current_step(self.trainer)
        self.state.step = step
        self.state.interval_loss_sum = monitor.interval_loss_sum()
        self.state.interval_steps += monitor.fit_steps
        monitor.start_interval()
        if monitor.diverged_at is not None:
            kept = (
                f"step {self._last_checkpoint}" if self._last_checkpoint
                else "none yet"
            )
            raise TrainingDiverged(
                f"the loss became {monitor.diverged_loss} at step "
                f"{monitor.diverged_at}; the last good checkpoint ({kept}) is "
                "kept: lower --learning-rate or raise --warmup-steps, and "
                "pass --restart."
            )
        if monitor.preempted:
            raise Preempted(
                step,
                f"stopped by SIGTERM at step {step} (checkpoint saved); "
                "rerun the same command to resume.",
            )
        if self._last_checkpoint != step:
            # Every evaluation is a checkpoint too, written before the
            # evaluation so that a kill during it loses nothing.
            self._checkpoint(step)
        self._record(step)

    def check_sigterm(self, phase):
        """Raises `Preempted` if SIGTERM arrived; the run resumes from its
        last checkpoint (at `max_steps`) and finishes `phase` then."""
        if self.sigterm.received:
            raise Preempted(
                self.max_steps,
                f"stopped by SIGTERM after training, before {phase} "
                f"(checkpoint at step {self.max_steps} kept); rerun the same "
                "command to finish.",
            )
