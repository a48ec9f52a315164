"""`RunWriter`: the life of a run directory, for every kind of run.

    with RunWriter(run_dir, RUN_FILES, chief) as writer:   # lock
        ... validate inputs, build the model ...            # nothing written
        writer.begin(fresh=not resume)                       # now it changes
        loop = writer.loop(...)                           # checkpoints, history
        with loop:
            loop.run()
            writer.save_model(model)
            writer.finish(metrics)                          # metrics.json, last

A failure before `begin` leaves the directory as it was (a directory
created for the run is removed again). Only the chief of a multi-worker job
writes the run directory; the others write their (identical) checkpoints
and model to a scratch directory that is deleted at the end, since saving
can need every worker.
"""

import math
import os
import shutil
import tempfile

from keras_tfm import directories as run_directory
from keras_tfm import files
from keras_tfm.errors import UserError
from keras_tfm.training import checkpoints
from keras_tfm.training.history import History
from keras_tfm.training.loop import Loop


class RunWriter:
    """Lock, resume point, checkpoints, history and final files of a run.

    Args:
        run_dir: the run directory.
        run_files: the names a run writes; a fresh start removes these (and
            nothing else) from an earlier run in the same directory.
        chief: whether this process writes the run directory.
    """

    def __init__(self, run_dir, run_files, chief=True):
        self.run_dir = run_dir
        self.run_files = run_files
        self.chief = chief
        self.out_dir = run_dir
        self.resumed_from = None
        self._created = None
        self._lock = None
        self._scratch = None
        self._begun = False
        self.on_record = []

    def __enter__(self):
        if self.chief:
            self._created = run_directory.make_directory(self.run_dir)
            self._lock = run_directory.DirectoryLock(
                os.path.join(self.run_dir, run_directory.LOCK_FILE)
            )
            try:
                self._lock.acquire()
            except BaseException:
                run_directory.remove_if_only_lock(self._created)
                raise
        else:
            self._scratch = tempfile.mkdtemp(prefix="keras-tfm-worker-")
            self.out_dir = self._scratch
        return self

    def __exit__(self, exc_type, exc, traceback):
        if self._lock is not None:
            self._lock.release()
        if not self._begun:
            run_directory.remove_if_only_lock(self._created)
        if self._scratch:
            shutil.rmtree(self._scratch, ignore_errors=True)

    @staticmethod
    def resume_point(run_dir, config, restart, kind, runtime_fields,
                     log=print):
        """Where a run of `config` in `run_dir` starts: `None` (step 0) or
        the newest intact checkpoint `(step, path, state)`.

        A finished run is refused unless `restart`; an unfinished one
        resumes if it is of the same `kind` ("pretrain" or the task) and
        its config differs in `runtime_fields` at most.
        """
        from keras_tfm.training.config import differences
        from keras_tfm.training.config import load_run_config

        if restart or not os.path.exists(
            os.path.join(run_dir, "config.json")
        ):
            return None
        if os.path.exists(os.path.join(run_dir, "metrics.json")):
            raise UserError(
                f"'{run_dir}' already holds a finished run: choose another "
                "--output-dir, or pass --restart to replace it."
            )
        saved_kind = run_kind(run_dir)
        if saved_kind != kind:
            raise UserError(
                f"'{run_dir}' holds a {saved_kind} run, not a {kind} one: "
                "choose another --output-dir, or pass --restart to replace "
                "it."
            )
        saved = load_run_config(run_dir, type(config))
        changed = differences(saved, config, runtime_fields)
        if changed:
            raise UserError(
                f"'{run_dir}' holds an unfinished run with a different "
                f"{', '.join(changed)}: rerun with its settings to resume, "
                "or pass --restart to start over."
            )
        return RunWriter.latest_checkpoint(run_dir, log)

    @staticmethod
    def latest_checkpoint(run_dir, log=print):
        """The newest intact checkpoint `(step, path, state)` or `None`."""
        return checkpoints.latest_good(
            os.path.join(run_dir, "checkpoints"), log
        )

    def begin(self, fresh, resumed_from=None):
        """Marks the start of writing; a fresh run clears an earlier one."""
        self._begun = True
        self.resumed_from = resumed_from
        if self.chief and fresh:
            run_directory.remove_run_files(self.run_dir, self.run_files)

    def loop(self, trainer, state, config, train_dataset, evaluate, columns,
             progress_columns=None, log=print):
        """The `Loop` that trains `trainer` and records into this run."""
        history = History(
            self.run_dir, columns, keep_through_step=state.step,
            writable=self.chief,
        )
        for hook in self.on_record:
            history.on_record.append(hook)
        checkpoint_dir = os.path.join(self.out_dir, "checkpoints")
        return Loop(
            trainer,
            state,
            max_steps=config.max_steps,
            eval_every=config.eval_every,
            checkpoint_every=config.checkpoint_every,
            grad_accum_steps=config.grad_accum_steps,
            train_dataset=train_dataset,
            evaluate=evaluate,
            history=history,
            save_checkpoint=lambda step, values: checkpoints.save(
                trainer, checkpoint_dir, step, values
            ),
            verbose=config.verbose if self.chief else 0,
            log=log,
            progress_columns=progress_columns,
        )

    def save_model(self, model, name="model.keras"):
        """Saves `.keras` under a temporary name first: never half a file."""
        path = os.path.join(self.out_dir, name)
        temporary = os.path.join(self.out_dir, f".partial-{name}")
        model.save(temporary)
        files.fsync_file(temporary)
        os.replace(temporary, path)
        return path

    def finish(self, metrics):
        """Writes `metrics.json`, which marks the run as finished."""
        if self.chief:
            files.write_json(os.path.join(self.run_dir, "metrics.json"),
                             with_nulls_explained(metrics))
        return metrics


def run_kind(run_dir):
    """`"pretrain"` or the fine-tuning task of the run in `run_dir`, from
    its config.json (a one-line `UserError` if that is damaged)."""
    from keras_tfm.training.config import read_run_config_values

    return read_run_config_values(run_dir).get("task", "pretrain")


def with_nulls_explained(metrics):
    """`metrics` with a `notes` entry for every figure that is unknown
    (None or not finite), which JSON writes as null."""
    notes = dict(metrics.get("notes") or {})
    for key, value in metrics.items():
        if isinstance(value, float) and not math.isfinite(value):
            notes.setdefault(key, "not finite; written as null")
        elif value is None and key in EXPLAINED_NULLS:
            notes.setdefault(key, EXPLAINED_NULLS[key])
    if notes:
        return {**metrics, "notes": notes}
    return metrics


EXPLAINED_NULLS = {
    "tokens_per_second": "no timed training step: every step of the run "
    "was a fit call's first (compiling) step",
    "first_step_seconds": "no step was trained in any process of this run",
    "train_loss": "no training step ran",
}


def load_model(run_dir, name="model.keras", command="pretrain"):
    """The trained model of a finished run, or a one-line `UserError`
    saying why not (unfinished, damaged, or refused by Keras' safe mode).
    """
    import zipfile

    import keras

    if not os.path.isdir(run_dir):
        raise UserError(
            f"no run directory '{run_dir}': pass the --output-dir of a "
            "keras-tfm run."
        )
    path = os.path.join(run_dir, name)
    if not os.path.isfile(path):
        if os.path.exists(os.path.join(run_dir, "config.json")):
            raise UserError(
                f"no model in '{run_dir}': the run has not finished "
                f"({name} is missing); rerun the same `keras-tfm {command} "
                f"... --output-dir {run_dir}` to resume it."
            )
        raise UserError(
            f"no model in '{run_dir}' ({name} is missing): pass the "
            "--output-dir of a finished keras-tfm run."
        )
    if not zipfile.is_zipfile(path):
        raise UserError(
            f"'{path}' is damaged (not a complete .keras archive; was the "
            "run killed while copying it?): restore it, or retrain the run "
            "with --restart."
        )
    try:
        return keras.models.load_model(path, compile=False)
    except Exception as e:  # Keras raises many types for a bad archive
        message = str(e).splitlines()[0] if str(e) else type(e).__name__
        if "safe_mode" in str(e) or "lambda" in str(e).lower():
            raise UserError(
                f"'{path}' holds code (a Lambda layer or function) that "
                "Keras' safe mode refuses to load: keras-tfm models have "
                "none, so this file was not written by keras-tfm; retrain "
                "the run, or load it yourself with keras.models.load_model("
                "..., safe_mode=False) if you trust it."
            ) from None
        raise UserError(
            f"'{path}' is damaged ({type(e).__name__}: {message}): restore "
            "it, or retrain the run with --restart."
        ) from None


def check_run_directory(run_dir):
    """A one-line error unless `run_dir` is a keras-tfm run directory."""
    if not os.path.isdir(run_dir):
        raise UserError(
            f"no run directory '{run_dir}': pass the --output-dir of a "
            "keras-tfm run."
        )
    if not os.path.isfile(os.path.join(run_dir, "config.json")):
        raise UserError(
            f"'{run_dir}' is not a keras-tfm run (no config.json): pass the "
            "--output-dir of a keras-tfm run."
        )
