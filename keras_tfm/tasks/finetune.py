"""`finetune(config)`: the run every fine-tuning task shares.

A task (classification, translation, summarization) says what it trains on
and how it is scored; this module does the rest, exactly as pre-training
does it: the strategy, a `TrainingModel`, the run directory with its lock,
checkpoints, resume and SIGTERM (`keras_tfm.training.run` and `loop`).

A task is an object with:

    name, history_columns, run_files
    check_inputs(config)                  every input path and format,
                                          before anything is created
    load_data(config, tokenizer, run_dir) train and validation data
    build_model(config, tokenizer, data, init_model)
    compile_kwargs(config)                loss and metrics for the trainer
    train_dataset(config, tokenizer, data, start_batch)
    evaluate(model, trainer, config, tokenizer, data, final) -> figures
    final_metrics(figures, data)          task keys of metrics.json
    save_files(run_dir, data)             e.g. the label names
    trainable_model(model, config)        the model to train (e.g. with
                                          the backbone frozen)

The run directory holds config.json (a `FinetuneConfig`, `task` set),
tokenizer/, checkpoints/, logs/, history.csv, curves.png, model.keras and
metrics.json (written last).
"""

import dataclasses
import os

import keras
import tensorflow as tf

from keras_tfm import tokenizers
from keras_tfm.errors import ConfigError
from keras_tfm.errors import UserError
from keras_tfm.tasks.config import ARCHITECTURE_FIELDS
from keras_tfm.tasks.config import FinetuneConfig
from keras_tfm.training import plots
from keras_tfm.training import run as run_module
from keras_tfm.training.config import RUNTIME_FIELDS
from keras_tfm.training.config import TrainConfig
from keras_tfm.training.config import load_run_config
from keras_tfm.training.config import save_config
from keras_tfm.training.loop import LoopState
from keras_tfm.training.optimizer import build_optimizer
from keras_tfm.training.precision import dtype_policy
from keras_tfm.training.run import run_kind
from keras_tfm.training.strategy import get_strategy
from keras_tfm.training.strategy import is_chief
from keras_tfm.training.strategy import resolve_batch_splits
from keras_tfm.training.strategy import resolve_jit_compile
from keras_tfm.training.strategy import strategy_name
from keras_tfm.training.strategy import warn_without_autoclustering
from keras_tfm.training.train import check_batch
from keras_tfm.training.training_model import TrainingModel

COMMON_RUN_FILES = (
    "config.json",
    "tokenizer",
    "checkpoints",
    "logs",
    "history.csv",
    "curves.png",
    "model.keras",
    "metrics.json",
    "export",
)

# Decoding settings may change between a run and its resume.
FINETUNE_RUNTIME_FIELDS = RUNTIME_FIELDS + ("beam_size", "length_penalty")


def is_pretraining_run(run_dir):
    """Whether `run_dir` holds a pre-training run's config and model."""
    return (
        os.path.isfile(os.path.join(run_dir, "config.json"))
        and os.path.isfile(os.path.join(run_dir, "model.keras"))
        and run_kind(run_dir) == "pretrain"
    )


def load_finetune_config(run_dir):
    return load_run_config(run_dir, FinetuneConfig)


def init_config(init_dir):
    """The pre-training config of an `--init` run, or a one-line error."""
    if not os.path.isdir(init_dir):
        raise UserError(
            f"--init '{init_dir}' is not a directory: pass the output "
            "directory of a finished `keras-tfm pretrain` run."
        )
    if not os.path.isfile(os.path.join(init_dir, "config.json")):
        raise UserError(
            f"--init '{init_dir}' is not a keras-tfm run (no config.json): "
            "pass the output directory of a `keras-tfm pretrain` run."
        )
    if run_kind(init_dir) != "pretrain":
        raise UserError(
            f"--init '{init_dir}' is a fine-tuning run, not a pre-training "
            "run: pass the output directory of `keras-tfm pretrain`."
        )
    if not os.path.isfile(os.path.join(init_dir, "model.keras")):
        raise UserError(
            f"--init '{init_dir}' has not finished (no model.keras): let "
            "its pre-training finish (rerun it to resume) first."
        )
    return load_run_config(init_dir, TrainConfig)


def with_init_architecture(config, explicit=()):
    """`config` with the architecture (and tokenizer) of its `--init` run.

    Args:
        explicit: the field names the user set; one that contradicts the
            init run is an error (the weights fix the architecture).
    """
    if not config.init:
        return config
    pretrained = init_config(config.init)
    # Dropout is not in the weights: fine-tuning sets its own.
    values = {name: getattr(pretrained, name) for name in ARCHITECTURE_FIELDS
              if name != "dropout"}
    for name in explicit:
        if name in values and getattr(config, name) != values[name]:
            raise ConfigError(
                f"--{name.replace('_', '-')} {getattr(config, name)} "
                f"contradicts the --init run's {values[name]}: drop the flag "
                "(the pre-trained weights fix the architecture)."
            )
    values["tokenizer"] = pretrained.tokenizer
    values["vocabulary_size"] = pretrained.vocabulary_size
    return dataclasses.replace(config, **values)


def load_init_model(init_dir):
    return run_module.load_model(init_dir)


def find_resume_point(run_dir, config, restart, log):
    return run_module.RunWriter.resume_point(
        run_dir, config, restart, config.task, FINETUNE_RUNTIME_FIELDS, log)


def default_output_dir(config):
    from keras_tfm.training.train import data_name

    name = data_name(config.data[:1]) or config.task
    start = "init" if config.init else "scratch"
    return os.path.join("runs", f"{name}-{config.task}-{start}")


def finetune(config, task, strategy=None, restart=False):
    """Fine-tunes as `config` says; returns the metrics of metrics.json.

    Raises:
        UserError: bad input (nothing is written), or a diverged loss.
        Preempted: SIGTERM stopped the run; rerunning resumes it.
    """
    strategy = strategy or get_strategy(config.strategy, config.cpu_devices)
    check_batch(config, strategy)
    jit_compile = resolve_jit_compile(config.jit_compile, strategy)
    batch_splits = resolve_batch_splits(config, strategy, jit_compile)
    chief = is_chief(strategy)
    log = print if chief and config.verbose > 0 else (lambda *a, **k: None)
    run_dir = config.output_dir or default_output_dir(config)
    task.check_inputs(config)
    if config.init:
        init_config(config.init)
    warn_without_autoclustering(config.jit_compile)

    writer = run_module.RunWriter(run_dir, COMMON_RUN_FILES + task.run_files,
                                  chief=chief)
    with writer:
        resume = find_resume_point(run_dir, config, restart, log)
        init_model = None
        if resume:
            tokenizer = tokenizers.load_tokenizer(
                os.path.join(run_dir, "tokenizer"))
        elif config.init:
            tokenizer = tokenizers.load_tokenizer(
                os.path.join(config.init, "tokenizer"))
            init_model = load_init_model(config.init)
        else:
            tokenizer = task.build_tokenizer(config)
        data = task.load_data(config, tokenizer, run_dir if resume else None)
        steps = config.steps_for(data.train_examples)
        effective = dataclasses.replace(config, epochs=0, max_steps=steps)
        if effective.resolved_warmup_steps() >= steps:
            raise ConfigError(
                f"warmup_steps ({config.warmup_steps}) must be below the "
                f"run's {steps} steps: lower --warmup-steps."
            )
        if config.deterministic:
            tf.config.experimental.enable_op_determinism()
        keras.utils.set_random_seed(config.seed)
        with dtype_policy(config.precision), strategy.scope():
            model = task.build_model(config, tokenizer, data, init_model)
            trained = task.trainable_model(model, config)
            trainer = TrainingModel(
                trained,
                batch_splits=batch_splits,
                grad_accum_steps=config.grad_accum_steps,
                global_clipnorm=config.clipnorm or None,
            )
            trainer.compile(optimizer=build_optimizer(effective),
                            jit_compile=jit_compile,
                            **task.compile_kwargs(config))
            trainer.optimizer.build(trainer.trainable_variables)
        writer.begin(fresh=not resume,
                     resumed_from=resume[0] if resume else None)
        if chief and not resume:
            save_config(config, os.path.join(run_dir, "config.json"))
            tokenizer.save(os.path.join(run_dir, "tokenizer"))
            task.save_files(run_dir, data)
        if resume:
            trainer.load_weights(resume[1])
            log(f"resumed from step {resume[0]}")
        state = (
            LoopState.from_dict(resume[0], resume[2]) if resume
            else LoopState()
        )
        examples_per_step = config.batch_size * config.grad_accum_steps
        holder = {}

        def evaluate(step, final):
            figures = task.evaluate(model, trainer, config, tokenizer, data,
                                    final)
            if final:
                holder["final"] = figures
            return figures

        writer.on_record.append(plots.history_hook)
        loop = writer.loop(
            trainer, state, effective,
            train_dataset=lambda step: task.train_dataset(
                config, tokenizer, data, step * config.grad_accum_steps),
            evaluate=evaluate,
            columns=task.history_columns,
            progress_columns=lambda step: {
                "examples_seen": step * examples_per_step},
            log=log,
        )
        with loop:
            loop.run()
            loop.check_sigterm("the final model")
            if "final" not in holder:
                evaluate(steps, final=True)
            writer.save_model(model)
            state = loop.state
            metrics = {
                **task.final_metrics(holder["final"], data),
                "task": config.task,
                "init": config.init or None,
                "train_loss": loop.last_train_loss,
                "steps": steps,
                "epochs": steps * examples_per_step / max(1,
                                                          data.train_examples),
                "train_examples": data.train_examples,
                "validation_examples": data.validation_examples,
                "train_seconds": loop.elapsed(),
                "examples_per_second": (
                    state.timed_steps * examples_per_step
                    / state.train_seconds if state.train_seconds > 0
                    else None
                ),
                "first_step_seconds": state.first_step_seconds,
                "resumed_from_step": writer.resumed_from,
                "parameters": model.count_params(),
                "trainable_parameters": sum(
                    int(tf.size(v)) for v in trained.trainable_variables),
                "tokenizer": config.tokenizer,
                "vocabulary_size": tokenizer.vocabulary_size,
                "replicas": strategy.num_replicas_in_sync,
                "strategy": strategy_name(strategy),
                "precision": config.precision,
                "batch_splits": trainer.batch_splits,
                "jit_compile": bool(trainer.jit_compile),
                "run_dir": run_dir,
            }
            loop.check_sigterm("metrics.json")
            return writer.finish(metrics)
