"""`train(config)`: pre-train a language model and write its run directory.

The run directory:

    config.json        the resolved TrainConfig
    tokenizer/         the tokenizer (tokenizer.json)
    checkpoints/       weights of model and optimizer, with the loop state
    logs/              TensorBoard (train and validation scalars by step)
    corpus.json        the prepared corpus trained on (its manifest hash)
    history.csv        one row per evaluation
    curves.png         train and validation loss, learning rate
    model.keras        the trained model          (written at the end)
    sample.txt         a generated sample          (causal LM)
    metrics.json       final figures; marks the run as finished (last)

The loop itself (intervals, checkpoints, resume, SIGTERM) is
`keras_tfm.training.loop`; this module decides what is trained on what.
"""

import os

import keras
import numpy as np
import tensorflow as tf

from keras_tfm import data
from keras_tfm import files
from keras_tfm import generation
from keras_tfm import models
from keras_tfm import tokenizers
from keras_tfm.errors import ConfigError
from keras_tfm.errors import UserError
from keras_tfm.metrics import bits_per_byte
from keras_tfm.metrics import evaluate_windows
from keras_tfm.training import lm_corpus
from keras_tfm.training import plots
from keras_tfm.training.config import RUNTIME_FIELDS
from keras_tfm.training.config import TrainConfig
from keras_tfm.training.config import save_config
from keras_tfm.training.loop import LoopState
from keras_tfm.training.optimizer import build_optimizer
from keras_tfm.training.precision import dtype_policy
from keras_tfm.training.run import RunWriter
from keras_tfm.training.strategy import autoclustering_active
from keras_tfm.training.strategy import get_strategy
from keras_tfm.training.strategy import is_chief
from keras_tfm.training.strategy import num_workers
from keras_tfm.training.strategy import resolve_batch_splits
from keras_tfm.training.strategy import resolve_jit_compile
from keras_tfm.training.strategy import strategy_name
from keras_tfm.training.strategy import warn_without_autoclustering
from keras_tfm.training.training_model import TrainingModel

# What a pre-training run writes; --restart removes exactly these.
RUN_FILES = (
    "config.json",
    "tokenizer",
    "checkpoints",
    "logs",
    "history.csv",
    "curves.png",
    "corpus.json",
    "model.keras",
    "export",
    "sample.txt",
    "metrics.json",
)

HISTORY_COLUMNS = (
    "step",
    "train_loss",
    "val_loss",
    "val_perplexity",
    "val_bits_per_byte",
    "learning_rate",
    "tokens_seen",
    "elapsed_seconds",
)


def data_name(patterns):
    """A short name for a corpus: a file's stem, a directory's name."""
    if not patterns:
        return None
    first = patterns[0].rstrip("/")
    if len(patterns) == 1 and not any(c in first for c in "*?["):
        name = os.path.basename(first)
        for suffix in (".gz", ".jsonl", ".json", ".txt", ".text"):
            name = name.removesuffix(suffix)
        return name or None
    parent = os.path.basename(os.path.dirname(os.path.abspath(first)))
    return parent or None


def default_output_dir(config):
    """`runs/<data>-<objective>` (the data's name, else the preset's)."""
    name = data_name(config.data) or config.preset
    return os.path.join("runs", f"{name}-{config.objective}")


def find_resume_point(run_dir, config, restart=False, log=print):
    """Where a pre-training run in `run_dir` starts: `None` (step 0) or a
    checkpoint `(step, path, state)` (see `RunWriter.resume_point`)."""
    return RunWriter.resume_point(run_dir, config, restart, "pretrain",
                                  RUNTIME_FIELDS, log)


def load_texts(config, dataset=None):
    """Documents to train on: `dataset` if given, else `config.data`."""
    if dataset is None:
        return [text for _, text in data.load_corpus(config.data)]
    if isinstance(dataset, tf.data.Dataset):
        dataset = [t.decode("utf-8") for t in dataset.as_numpy_iterator()]
    texts = [t for t in dataset if isinstance(t, str) and t.strip()]
    if not texts:
        raise UserError("the dataset passed to train() holds no text.")
    return texts


def build_tokenizer(config, texts):
    if config.tokenizer == "byte":
        return tokenizers.ByteTokenizer()
    return tokenizers.WordPieceTokenizer.train(texts, config.vocabulary_size)


def build_model(config, vocabulary_size, pad_token_id=0):
    """The `CausalLM` or `MaskedLM` a config describes."""
    kwargs = dict(
        vocabulary_size=vocabulary_size,
        num_layers=config.num_layers,
        num_heads=config.num_heads,
        hidden_dim=config.hidden_dim,
        intermediate_dim=config.intermediate_dim,
        max_sequence_length=config.sequence_length,
        dropout=config.dropout,
        position_embedding=config.position_embedding,
        layer_norm_epsilon=config.layer_norm_epsilon,
        normalize_first=config.normalize_first,
        tie_embeddings=config.tie_embeddings,
        use_bias=config.use_bias,
        activation=config.activation,
        attend_within_documents=config.packing == "documents",
    )
    if config.objective == "causal":
        return models.CausalLM(**kwargs)
    return models.MaskedLM(**kwargs, pad_token_id=pad_token_id)


def build_trainer(config, model, strategy, jit_compile, with_metrics=True):
    """`model` in a compiled `TrainingModel`, as pre-training trains it
    (`with_metrics=False`: the loss only, as the benchmark times it)."""
    batch_splits = resolve_batch_splits(config, strategy, jit_compile)
    trainer = TrainingModel(
        model,
        batch_splits=batch_splits,
        grad_accum_steps=config.grad_accum_steps,
        global_clipnorm=config.clipnorm or None,
    )
    loss = keras.losses.SparseCategoricalCrossentropy(
        from_logits=True, reduction="mean_with_sample_weight"
    )
    metric_kwargs = {}
    if with_metrics:
        metric_kwargs = (
            {"metrics": models.default_metrics()}
            if config.objective == "causal"
            else {"weighted_metrics": models.default_metrics()}
        )
    trainer.compile(
        optimizer=build_optimizer(config),
        loss=loss,
        jit_compile=jit_compile,
        **metric_kwargs,
    )
    # Build the optimizer's slots (and loss scale) now: a resume loads into
    # them, and the train step reads them.
    trainer.optimizer.build(trainer.trainable_variables)
    return trainer


def check_batch(config, strategy):
    replicas = strategy.num_replicas_in_sync
    if config.batch_size % replicas:
        raise ConfigError(
            f"batch_size ({config.batch_size}) must be a multiple of the "
            f"{replicas} replicas: change --batch-size."
        )


def train(config, strategy=None, dataset=None, restart=False):
    """Pre-trains a language model as `config` says.

    Rerunning an interrupted run with the same config resumes it from its
    last checkpoint (model, optimizer, step, schedule, data position and
    the loop's running figures) and finishes with the figures an
    uninterrupted run reports.

    Args:
        config: a `TrainConfig`.
        strategy: a `tf.distribute.Strategy`; default: chosen by
            `config.strategy`.
        dataset: optional texts to train on instead of `config.data`: a list
            of strings (documents) or a `tf.data.Dataset` of strings.
        restart: discard any earlier run in the output directory and start
            over.

    Returns:
        The metrics dict written to `metrics.json`.

    Raises:
        UserError: bad input, or a loss that became NaN or Inf
            (`TrainingDiverged`).
        Preempted: SIGTERM stopped the run; rerunning resumes it.
    """
    if not isinstance(config, TrainConfig):
        raise TypeError("train() takes a TrainConfig (see make_config)")
    # The strategy first: MultiWorkerMirroredStrategy must exist before
    # any other TensorFlow op runs.
    strategy = strategy or get_strategy(config.strategy, config.cpu_devices)
    check_batch(config, strategy)
    jit_compile = resolve_jit_compile(config.jit_compile, strategy)
    resolve_batch_splits(config, strategy, jit_compile)  # validates
    chief = is_chief(strategy)
    log = print if chief and config.verbose > 0 else (lambda *a, **k: None)
    run_dir = config.output_dir or default_output_dir(config)
    prepared = None if dataset is not None else (
        lm_corpus.prepared_directory(config.data))
    if prepared:
        # The prepared corpus fixes the tokenizer.
        config = with_prepared_tokenizer(config, prepared)
    elif dataset is None:
        data.expand_patterns(config.data)  # missing files, before anything
    warn_without_autoclustering(config.jit_compile)

    writer = RunWriter(run_dir, RUN_FILES, chief=chief)
    with writer:
        resume = find_resume_point(run_dir, config, restart, log)
        if prepared:
            source = lm_corpus.PreparedSource(prepared, config.sequence_length)
            if resume:
                lm_corpus.check_recorded_corpus(run_dir, source.corpus)
                lm_corpus.check_resumable_stream(run_dir)
            tokenizer = source.tokenizer()
        else:
            texts = load_texts(config, dataset)
            if resume:
                tokenizer = tokenizers.load_tokenizer(
                    os.path.join(run_dir, "tokenizer")
                )
            else:
                tokenizer = build_tokenizer(config, texts)
            source = lm_corpus.MemoryCorpus(config, tokenizer, texts)
        if config.deterministic:
            tf.config.experimental.enable_op_determinism()
        keras.utils.set_random_seed(config.seed)
        with dtype_policy(config.precision), strategy.scope():
            model = build_model(config, tokenizer.vocabulary_size,
                                tokenizer.pad_id)
            trainer = build_trainer(config, model, strategy, jit_compile)
        # Everything is validated: from here on the run directory changes.
        writer.begin(fresh=not resume,
                     resumed_from=resume[0] if resume else None)
        if chief and not resume:
            save_config(config, os.path.join(run_dir, "config.json"))
            tokenizer.save(os.path.join(run_dir, "tokenizer"))
            if source.record:
                files.write_json(
                    os.path.join(run_dir, lm_corpus.CORPUS_FILE),
                    source.record)
        if resume:
            trainer.load_weights(resume[1])
            log(f"resumed from step {resume[0]}")
        state = (
            LoopState.from_dict(resume[0], resume[2]) if resume else LoopState()
        )
        return _run(config, trainer, tokenizer, source, strategy, writer,
                    state, chief, log)


def with_prepared_tokenizer(config, directory):
    """`config` with the tokenizer of the prepared corpus in `directory`,
    which fixes it (the command refuses a conflicting --tokenizer or
    --vocabulary-size before it gets here)."""
    import dataclasses

    from keras_tfm.data.prepared import open_prepared

    record = open_prepared(directory, verify=False).manifest["tokenizer"]
    return dataclasses.replace(
        config, tokenizer=record["type"],
        vocabulary_size=record["vocabulary_size"],
    )


def _periodic_validation(config, validation, tokenizer):
    """The validation batches each periodic evaluation sees, their dataset
    and their token and byte counts.

    `eval_batches` counts optimizer steps' worth of sequences: a run that
    accumulates K batches evaluates K times as many batches of
    `batch_size` (the memory of one batch), so it sees the same windows
    as one that takes the same step in one batch.
    """
    val_batch = min(config.batch_size, len(validation))
    val_batches = min(config.eval_batches * config.grad_accum_steps,
                      len(validation) // val_batch)
    val_ds = data.make_dataset(
        validation,
        val_batch,
        config.objective,
        tokenizer,
        training=False,
        seed=config.seed,
    )
    seen = validation.subset(np.arange(val_batches * val_batch))
    return val_ds, val_batches, seen


def _run(config, trainer, tokenizer, source, strategy, writer, state,
         chief, log):
    model = trainer.model
    sequences_per_step = config.batch_size * config.grad_accum_steps
    tokens_per_step = sequences_per_step * config.sequence_length
    validation = source.validation
    val_ds, val_batches, seen = _periodic_validation(config, validation,
                                                     tokenizer)
    final_holder = {}

    def evaluate(step, final):
        if final:
            figures = evaluate_windows(
                model,
                validation,
                config.objective,
                tokenizer,
                batch_size=config.batch_size,
                seed=config.seed,
            )
            final_holder["figures"] = figures
            return {
                "val_loss": figures["loss"],
                "val_perplexity": figures["perplexity"],
                "val_bits_per_byte": figures["bits_per_byte"],
            }
        logs = trainer.evaluate(
            val_ds, steps=val_batches, return_dict=True, verbose=0
        )
        val_loss = float(np.asarray(logs["loss"]).reshape(-1)[0])
        return {
            "val_loss": val_loss,
            "val_perplexity": float(np.exp(min(val_loss, 700.0))),
            "val_bits_per_byte": bits_per_byte(
                val_loss * seen.tokens[:, 1:].size,
                int(seen.target_bytes.sum()),
                int(seen.target_unknown_bytes.sum()),
            ),
        }

    def train_dataset(step):
        # grad_accum_steps batches of batch_size make one step.
        return source.train_dataset(
            config, tokenizer, step * config.grad_accum_steps,
            num_workers=num_workers(strategy),
        )

    writer.on_record.append(plots.history_hook)
    loop = writer.loop(
        trainer, state, config,
        train_dataset=train_dataset,
        evaluate=evaluate,
        columns=HISTORY_COLUMNS,
        progress_columns=lambda step: {"tokens_seen": step * tokens_per_step},
        log=log,
    )
    with loop:
        loop.run()
        loop.check_sigterm("the final model")
        if "figures" not in final_holder:
            evaluate(config.max_steps, final=True)
        final = final_holder["figures"]
        writer.save_model(model)
        sample = None
        if chief and config.objective == "causal" and config.sample_tokens > 0:
            loop.check_sigterm("the sample")
            sample = write_sample(model, tokenizer, validation, config,
                                  writer.out_dir)
        state = loop.state
        metrics = {
            "val_loss": final["loss"],
            "val_perplexity": final["perplexity"],
            "val_bits_per_byte": final["bits_per_byte"],
            "val_tokens": final["tokens"],
            "val_bytes": final["bytes"],
            "val_unknown_rate": final["unknown_rate"],
            # The mean train loss of the last evaluation interval.
            "train_loss": loop.last_train_loss,
            "steps": config.max_steps,
            "tokens_seen": config.max_steps * tokens_per_step,
            # Training steps only, over every process that worked on the
            # run: without each fit call's first (compiling) step and
            # without validation.
            "tokens_per_second": (
                state.timed_steps * tokens_per_step / state.train_seconds
                if state.train_seconds > 0 else None
            ),
            "first_step_seconds": state.first_step_seconds,
            "train_seconds": loop.elapsed(),
            "resumed_from_step": writer.resumed_from,
            "parameters": model.count_params(),
            "objective": config.objective,
            "tokenizer": config.tokenizer,
            "vocabulary_size": tokenizer.vocabulary_size,
            "replicas": strategy.num_replicas_in_sync,
            "strategy": strategy_name(strategy),
            "precision": config.precision,
            "grad_accum_steps": config.grad_accum_steps,
            # Parts each batch ran as, side by side (config batch_splits).
            "batch_splits": trainer.batch_splits,
            "warmup_steps": config.resolved_warmup_steps(),
            "jit_compile": bool(trainer.jit_compile),
            # True when XLA fused the element-wise ops by auto-clustering.
            "autocluster": (
                config.jit_compile == "autocluster" and autoclustering_active()
            ),
            **source.stats(tokenizer),
            "sample": sample,
            "run_dir": writer.run_dir,
        }
        if config.objective == "masked":
            metrics["val_bits_per_byte_note"] = (
                "pseudo bits per byte: masked-token loss spread over all "
                "tokens; comparable between masked LMs only"
            )
        loop.check_sigterm("metrics.json")
        return writer.finish(metrics)


def write_sample(model, tokenizer, validation, config, run_dir):
    """Generates `config.sample_tokens` tokens and saves them."""
    if config.sample_prompt:
        prompt_ids = tokenizer.encode(config.sample_prompt)
    else:
        # The start of a held-out sequence, so the sample is not memorized.
        prompt_ids = validation.tokens[0, : config.sequence_length // 4]
        prompt_ids = prompt_ids.tolist()
    sampler = generation.make_sampler(
        temperature=0.8, top_k=40, seed=config.seed
    )
    new_ids = generation.generate_ids(
        model, prompt_ids or [tokenizer.eos_id], config.sample_tokens, sampler
    )
    text = tokenizer.decode(prompt_ids + new_ids)
    with files.atomic_write(os.path.join(run_dir, "sample.txt")) as f:
        f.write(text)
    return text

