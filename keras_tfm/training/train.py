"""`train(config)`: pre-train a language model and write its run directory.

The run directory:

    config.json        the resolved TrainConfig
    tokenizer/         the tokenizer (tokenizer.json)
    checkpoints/       model + optimizer every checkpoint_every steps
    logs/              TensorBoard (train and validation scalars by step)
    history.csv        one row per evaluation
    model.keras        the trained model          (written at the end)
    sample.txt         a generated sample          (causal LM)
    metrics.json       final figures; marks the run as finished (last)

Training runs as compiled `model.fit` calls, one per evaluation interval,
on a data stream that starts at the current step; so a run resumed from a
checkpoint continues the same stream at the same step, and the learning
rate schedule (a function of the optimizer's step) continues too.
"""

import contextlib
import os
import shutil
import signal
import sys
import tempfile
import time

import keras
import numpy as np
import tensorflow as tf

from keras_tfm import corpus
from keras_tfm import data
from keras_tfm import generation
from keras_tfm import models
from keras_tfm import tokenizers
from keras_tfm.errors import ConfigError
from keras_tfm.errors import UserError
from keras_tfm.evaluation import evaluate_windows
from keras_tfm.training import checkpoints
from keras_tfm.training.callbacks import StepMonitor
from keras_tfm.training.callbacks import Throughput
from keras_tfm.training.callbacks import current_step
from keras_tfm.training.config import differences
from keras_tfm.training.config import load_run_config
from keras_tfm.training.config import save_config
from keras_tfm.training.history import History
from keras_tfm.training.strategy import autoclustering_active
from keras_tfm.training.strategy import get_strategy
from keras_tfm.training.strategy import is_chief
from keras_tfm.training.strategy import resolve_batch_splits
from keras_tfm.training.strategy import resolve_jit_compile
from keras_tfm.training.strategy import strategy_name

# What a run writes; --restart removes exactly these, nothing else.
RUN_FILES = (
    "config.json",
    "tokenizer",
    "checkpoints",
    "logs",
    "history.csv",
    "model.keras",
    "sample.txt",
    "metrics.json",
)


class TrainingDiverged(UserError):
    """The loss became NaN or Inf."""


def default_output_dir(config):
    return os.path.join("runs", f"{config.preset}-{config.objective}")


def clear_run(run_dir):
    for name in RUN_FILES:
        path = os.path.join(run_dir, name)
        if os.path.isdir(path):
            shutil.rmtree(path)
        elif os.path.exists(path):
            os.remove(path)


def find_resume_point(run_dir, config, restart=False, log=print):
    """Where a run in `run_dir` starts: `None` (step 0) or a checkpoint.

    A finished run is refused unless `restart`; an unfinished one resumes
    from its newest intact checkpoint, if its config matches.
    """
    if restart or not os.path.exists(os.path.join(run_dir, "config.json")):
        return None
    if os.path.exists(os.path.join(run_dir, "metrics.json")):
        raise UserError(
            f"'{run_dir}' already holds a finished run: choose another "
            "--output-dir, or pass --restart to replace it."
        )
    try:
        saved = load_run_config(run_dir)
    except ConfigError as e:
        raise UserError(
            f"'{run_dir}' holds a run whose config.json cannot be read "
            f"({e}): pass --restart to start over."
        ) from None
    changed = differences(saved, config)
    if changed:
        raise UserError(
            f"'{run_dir}' holds an unfinished run with a different "
            f"{', '.join(changed)}: rerun with its settings to resume, or "
            "pass --restart to start over."
        )
    return checkpoints.latest_good(os.path.join(run_dir, "checkpoints"), log)


def load_texts(config, dataset=None):
    """Documents to train on: `dataset` if given, else `config.data`."""
    if dataset is None:
        return [text for _, text in corpus.load_corpus(config.data)]
    if isinstance(dataset, tf.data.Dataset):
        dataset = [t.decode("utf-8") for t in dataset.as_numpy_iterator()]
    texts = [t for t in dataset if t.strip()]
    if not texts:
        raise UserError("the dataset passed to train() holds no text.")
    return texts


def build_tokenizer(config, texts):
    if config.tokenizer == "byte":
        return tokenizers.ByteTokenizer()
    return tokenizers.WordPieceTokenizer.train(texts, config.vocabulary_size)


@contextlib.contextmanager
def dtype_policy(precision):
    """Keras' global dtype policy set to `precision` inside the block only.

    Layers take the global policy when they are created, so a model built
    inside computes in `precision`; the caller's policy is back afterwards.
    """
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(precision)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


def build_model(config, vocabulary_size):
    """The `CausalLM` or `MaskedLM` a config describes."""
    model_class = (
        models.CausalLM if config.objective == "causal" else models.MaskedLM
    )
    return model_class(
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
    )


def build_optimizer(config):
    """AdamW with linear warmup and cosine decay.

    Gradient clipping is the model's (`global_clipnorm`), which clips the
    all-reduced gradient rather than each replica's share.

    The schedule is a function of the optimizer's step, which counts
    global steps (one per global batch), whatever the number of replicas.
    """
    schedule = keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=0.0,
        warmup_target=config.learning_rate,
        warmup_steps=config.warmup_steps,
        decay_steps=config.max_steps - config.warmup_steps,
        alpha=config.min_learning_rate_ratio,
    )
    optimizer = keras.optimizers.AdamW(
        learning_rate=schedule,
        weight_decay=config.weight_decay,
        beta_1=config.beta_1,
        beta_2=config.beta_2,
        epsilon=1e-8,
    )
    # Decay matrices only: biases and layer-norm scales/offsets are exempt.
    optimizer.exclude_from_weight_decay(var_names=["bias", "gamma", "beta"])
    return optimizer


def save_model(model, path):
    """Saves `.keras` under a temporary name first: never half a file."""
    temporary = os.path.join(os.path.dirname(path), ".partial-model.keras")
    model.save(temporary)
    os.replace(temporary, path)


def train(config, strategy=None, dataset=None, overwrite=False, restart=False):
    """Pre-trains a language model as `config` says.

    Rerunning an interrupted run with the same config resumes it from its
    last checkpoint (model, optimizer, step, schedule and data position)
    and finishes at the same step count.

    Args:
        config: a `TrainConfig`.
        strategy: a `tf.distribute.Strategy`; default: chosen by
            `config.strategy`.
        dataset: optional texts to train on instead of `config.data`: a list
            of strings (documents) or a `tf.data.Dataset` of strings.
        overwrite, restart: discard any earlier run in the output directory
            and start over (the two are synonyms).

    Returns:
        The metrics dict written to `metrics.json`, or, for a run stopped by
        SIGTERM, `{"preempted": True, "steps": ...}`.

    Raises:
        UserError: bad input, or a loss that became NaN or Inf
            (`TrainingDiverged`).
    """
    # The strategy first: MultiWorkerMirroredStrategy must exist before
    # any other TensorFlow op runs.
    strategy = strategy or get_strategy(config.strategy, config.cpu_devices)
    chief = is_chief(strategy)
    log = print if chief and config.verbose > 0 else (lambda *a, **k: None)
    if config.jit_compile == "autocluster" and not autoclustering_active():
        # Not an error: the run trains, with XLA fusing less.
        print(
            "keras-tfm: jit_compile 'autocluster' needs TF_XLA_FLAGS set "
            "before TensorFlow starts (keras_tfm.training."
            "autoclustering_environment() says how); this process runs "
            "without auto-clustering.",
            file=sys.stderr,
        )
    if config.deterministic:
        tf.config.experimental.enable_op_determinism()
    keras.utils.set_random_seed(config.seed)

    run_dir = config.output_dir or default_output_dir(config)
    restart = restart or overwrite
    resume = find_resume_point(run_dir, config, restart, log)
    start_step = resume[0] if resume else 0

    texts = load_texts(config, dataset)
    if resume:
        tokenizer = tokenizers.load_tokenizer(os.path.join(run_dir, "tokenizer"))
    else:
        tokenizer = build_tokenizer(config, texts)
    lm_data = data.prepare_lm_data(
        tokenizer,
        texts,
        config.sequence_length,
        config.validation_fraction,
        config.seed,
    )
    replicas = strategy.num_replicas_in_sync
    if config.batch_size % replicas:
        raise ConfigError(
            f"batch_size ({config.batch_size}) must be a multiple of the "
            f"{replicas} replicas: change --batch-size."
        )
    jit_compile = resolve_jit_compile(config.jit_compile, strategy)
    micro_batches, _ = resolve_batch_splits(config, strategy, jit_compile)

    # Only the chief writes the run directory; other workers write their
    # (identical) checkpoints and model to a scratch directory, deleted at
    # the end, since saving can need every worker.
    scratch = None if chief else tempfile.mkdtemp(prefix="keras-tfm-worker-")
    out_dir = run_dir if chief else scratch
    if chief:
        if not resume:
            clear_run(run_dir)
        os.makedirs(run_dir, exist_ok=True)
        save_config(config, os.path.join(run_dir, "config.json"))
        tokenizer.save(os.path.join(run_dir, "tokenizer"))

    try:
        with dtype_policy(config.precision):
            with strategy.scope():
                model = build_model(config, tokenizer.vocabulary_size)
                model.micro_batches = micro_batches
                model.global_clipnorm = config.clipnorm or None
                model.compile(
                    optimizer=build_optimizer(config), jit_compile=jit_compile
                )
                # Build the optimizer's slots (and loss scale) now: a resume
                # loads into them, and the train step reads them.
                model.optimizer.build(model.trainable_variables)
                if resume:
                    model.load_weights(resume[1])
            if resume:
                log(f"resumed from step {start_step}")
            result = _fit(
                model, config, tokenizer, lm_data, strategy, out_dir, chief,
                start_step, log,
            )
    finally:
        if scratch:
            shutil.rmtree(scratch, ignore_errors=True)
    return result


def _fit(model, config, tokenizer, lm_data, strategy, out_dir, chief,
         start_step, log):
    sequences_per_step = config.batch_size * config.grad_accum_steps
    tokens_per_step = sequences_per_step * config.sequence_length
    val_batch = min(config.batch_size, len(lm_data.validation))
    val_batches = min(config.eval_batches, len(lm_data.validation) // val_batch)
    val_ds = data.make_dataset(
        lm_data.validation,
        val_batch,
        config.objective,
        tokenizer,
        training=False,
        seed=config.seed,
    )
    # Periodic validation sees the first `val_batches` batches.
    seen = lm_data.validation.subset(np.arange(val_batches * val_batch))
    history = History(
        out_dir if chief else None,
        val_tokens=seen.tokens[:, 1:].size,
        val_bytes=int(seen.target_bytes.sum()),
        val_unknown_bytes=int(seen.target_unknown_bytes.sum()),
        start_step=start_step,
    )
    monitor = StepMonitor(
        os.path.join(out_dir, "checkpoints"),
        config.checkpoint_every or config.eval_every,
        verbose=chief and config.verbose > 0,
    )
    throughput = Throughput()
    previous_handler = monitor.install_sigterm_handler()
    start = time.time()
    step, train_loss = start_step, float("nan")
    try:
        while step < config.max_steps:
            # Run to the next evaluation (a multiple of eval_every).
            target = min(
                (step // config.eval_every + 1) * config.eval_every,
                config.max_steps,
            )
            train_ds = data.make_dataset(
                lm_data.train,
                sequences_per_step,
                config.objective,
                tokenizer,
                training=True,
                seed=config.seed,
                start_step=step,
            )
            if config.verbose > 0 and chief:
                log(f"steps {step + 1}-{target} of {config.max_steps}")
            fit_history = model.fit(
                train_ds,
                steps_per_epoch=target - step,
                epochs=1,
                callbacks=[monitor, throughput],
                verbose=config.verbose if chief else 0,
                shuffle=False,  # the stream is shuffled, by step
            )
            train_loss = float(fit_history.history["loss"][-1])
            step = current_step(model)
            if monitor.diverged_at is not None:
                good = checkpoints.latest_good(
                    os.path.join(out_dir, "checkpoints"), log
                )
                kept = f"step {good[0]}" if good else "none yet"
                raise TrainingDiverged(
                    f"the loss became {train_loss} at step "
                    f"{monitor.diverged_at}; the last good checkpoint "
                    f"({kept}) is kept: lower --learning-rate or raise "
                    "--warmup-steps, and pass --restart."
                )
            if monitor.preempted:
                log(
                    f"stopped by SIGTERM at step {step}; rerun the same "
                    "command to resume."
                )
                return {"preempted": True, "steps": step}
            logs = model.evaluate(
                val_ds, steps=val_batches, return_dict=True, verbose=0
            )
            if monitor.last_checkpoint != step:
                # Every evaluation is a checkpoint too.
                monitor.save(step)
            history.record(
                step,
                train_loss,
                float(logs["loss"]),
                float(keras.ops.convert_to_numpy(model.optimizer.learning_rate)),
                step * tokens_per_step,
                time.time() - start,
                log,
            )
    finally:
        signal.signal(signal.SIGTERM, previous_handler)
        history.close()
    train_seconds = time.time() - start

    final = evaluate_windows(
        model,
        lm_data.validation,
        config.objective,
        tokenizer,
        batch_size=config.batch_size,
        seed=config.seed,
    )
    save_model(model, os.path.join(out_dir, "model.keras"))
    sample = None
    if chief and config.objective == "causal" and config.sample_tokens > 0:
        sample = write_sample(model, tokenizer, lm_data, config, out_dir)

    metrics = {
        "val_loss": final["loss"],
        "val_perplexity": final["perplexity"],
        "val_bits_per_byte": final["bits_per_byte"],
        "val_tokens": final["tokens"],
        "val_bytes": final["bytes"],
        "val_unknown_rate": final["unknown_rate"],
        "unigram_bits_per_byte": lm_data.stats["unigram_bits_per_byte"],
        "train_loss": train_loss,
        "steps": step,
        "tokens_seen": step * tokens_per_step,
        # Training steps of this process only: without each fit call's
        # first (compiling) step and without validation.
        "tokens_per_second": (
            throughput.timed_steps * tokens_per_step
            / max(throughput.train_seconds, 1e-9)
        ),
        "first_step_seconds": throughput.first_step_seconds,
        "train_seconds": train_seconds,
        "resumed_from_step": start_step or None,
        "parameters": model.count_params(),
        "objective": config.objective,
        "tokenizer": config.tokenizer,
        "vocabulary_size": tokenizer.vocabulary_size,
        "replicas": strategy.num_replicas_in_sync,
        "strategy": strategy_name(strategy),
        "precision": config.precision,
        "grad_accum_steps": config.grad_accum_steps,
        # Parts each micro-batch ran as, side by side (config batch_splits).
        "batch_splits": model.micro_batches // config.grad_accum_steps,
        "jit_compile": bool(model.jit_compile),
        # True when XLA fused the element-wise ops by auto-clustering.
        "autocluster": (
            config.jit_compile == "autocluster" and autoclustering_active()
        ),
        "corpus_tokens": lm_data.stats["corpus_tokens"],
        "corpus_bytes": lm_data.stats["corpus_bytes"],
        "train_sequences": lm_data.stats["train_sequences"],
        "validation_sequences": lm_data.stats["validation_sequences"],
        "sample": sample,
        "run_dir": config.output_dir or default_output_dir(config),
    }
    if config.objective == "masked":
        metrics["val_bits_per_byte_note"] = (
            "pseudo bits per byte: masked-token loss spread over all tokens; "
            "comparable between masked LMs only"
        )
    if chief:
        # Written last: its presence marks a finished run.
        checkpoints.write_json_atomically(
            os.path.join(out_dir, "metrics.json"), metrics
        )
    return metrics


def write_sample(model, tokenizer, lm_data, config, run_dir):
    """Generates `config.sample_tokens` tokens and saves them."""
    if config.sample_prompt:
        prompt_ids = tokenizer.encode(config.sample_prompt)
    else:
        # The start of a held-out sequence, so the sample is not memorized.
        prompt_ids = lm_data.validation.tokens[0, : config.sequence_length // 4]
        prompt_ids = prompt_ids.tolist()
    sampler = generation.make_sampler(
        temperature=0.8, top_k=40, seed=config.seed
    )
    new_ids = generation.generate_ids(
        model, prompt_ids or [tokenizer.eos_id], config.sample_tokens, sampler
    )
    text = tokenizer.decode(prompt_ids + new_ids)
    with open(os.path.join(run_dir, "sample.txt"), "w", encoding="utf-8") as f:
        f.write(text)
    return text
