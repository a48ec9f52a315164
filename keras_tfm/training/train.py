"""`train(config)`: pre-train a language model and write its run directory.

The run directory:

    config.json        the resolved TrainConfig
    tokenizer/         the tokenizer (tokenizer.json)
    checkpoints/       model + optimizer after each evaluation (.keras)
    logs/              TensorBoard
    history.csv        one row per evaluation
    model.keras        the trained model          (written at the end)
    sample.txt         a generated sample          (causal LM)
    metrics.json       final figures; marks the run as finished (last)
"""

import json
import math
import os
import shutil
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
from keras_tfm.training import callbacks as run_callbacks
from keras_tfm.training.config import save_config
from keras_tfm.training.strategy import get_strategy
from keras_tfm.training.strategy import resolve_jit_compile

# What a run writes; `--overwrite` removes exactly these, nothing else.
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


def default_output_dir(config):
    return os.path.join("runs", f"{config.preset}-{config.objective}")


def prepare_run_dir(run_dir, overwrite=False):
    """Creates the run directory; refuses to mix with an earlier run."""
    earlier = [
        name for name in RUN_FILES if os.path.exists(os.path.join(run_dir, name))
    ]
    if earlier and not overwrite:
        raise UserError(
            f"'{run_dir}' already holds a run ({', '.join(earlier)}): choose "
            "another --output-dir, or pass --overwrite to replace it."
        )
    for name in earlier:
        path = os.path.join(run_dir, name)
        if os.path.isdir(path):
            shutil.rmtree(path)
        else:
            os.remove(path)
    os.makedirs(run_dir, exist_ok=True)


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


def build_model(config, vocabulary_size):
    """The `CausalLM` or `MaskedLM` a config describes."""
    model_class = models.CausalLM if config.objective == "causal" else models.MaskedLM
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
    """AdamW with linear warmup, cosine decay and global-norm clipping."""
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
        global_clipnorm=config.clipnorm or None,
    )
    # Decay matrices only: biases and layer-norm scales/offsets are exempt.
    optimizer.exclude_from_weight_decay(var_names=["bias", "gamma", "beta"])
    return optimizer


def write_json(path, values):
    temporary = path + ".tmp"
    with open(temporary, "w", encoding="utf-8") as f:
        json.dump(values, f, indent=2)
    os.replace(temporary, path)


def save_model(model, path):
    """Saves `.keras` under a temporary name first: never half a file."""
    temporary = os.path.join(os.path.dirname(path), ".partial-model.keras")
    model.save(temporary)
    os.replace(temporary, path)


def train(config, strategy=None, dataset=None, overwrite=False):
    """Pre-trains a language model as `config` says.

    Args:
        config: a `TrainConfig`.
        strategy: a `tf.distribute.Strategy`; default: chosen by
            `config.strategy`.
        dataset: optional texts to train on instead of `config.data`: a list
            of strings (documents) or a `tf.data.Dataset` of strings.
        overwrite: replace an earlier run in the output directory.

    Returns:
        The metrics dict that is also written to `metrics.json`.
    """
    run_dir = config.output_dir or default_output_dir(config)
    keras.utils.set_random_seed(config.seed)

    texts = load_texts(config, dataset)
    tokenizer = build_tokenizer(config, texts)
    lm_data = data.prepare_lm_data(
        tokenizer,
        texts,
        config.sequence_length,
        config.validation_fraction,
        config.seed,
    )

    strategy = strategy or get_strategy(config.strategy)
    replicas = strategy.num_replicas_in_sync
    if config.batch_size % replicas:
        raise ConfigError(
            f"batch_size ({config.batch_size}) must be a multiple of the "
            f"{replicas} replicas: change --batch-size."
        )
    prepare_run_dir(run_dir, overwrite)
    save_config(config, os.path.join(run_dir, "config.json"))
    tokenizer.save(os.path.join(run_dir, "tokenizer"))

    # The global batch is split across replicas by tf.distribute.
    train_ds = data.make_dataset(
        lm_data.train,
        config.batch_size,
        config.objective,
        tokenizer,
        training=True,
        seed=config.seed,
    )
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
    jit_compile = resolve_jit_compile(config.jit_compile, strategy)
    with strategy.scope():
        model = build_model(config, tokenizer.vocabulary_size)
        model.compile(optimizer=build_optimizer(config), jit_compile=jit_compile)

    # Periodic validation sees the first `val_batches` batches.
    seen = lm_data.validation.subset(np.arange(val_batches * val_batch))
    throughput = run_callbacks.Throughput()
    callback_list = [
        run_callbacks.StepLimit(config.max_steps),
        throughput,
        run_callbacks.EvaluationLog(
            os.path.join(run_dir, "history.csv"),
            tokens_per_step=config.batch_size * config.sequence_length,
            val_tokens=seen.tokens[:, 1:].size,
            val_bytes=int(seen.target_bytes.sum()),
            val_unknown_bytes=int(seen.target_unknown_bytes.sum()),
        ),
        run_callbacks.Checkpoint(
            os.path.join(run_dir, "checkpoints"), verbose=config.verbose > 0
        ),
        keras.callbacks.TensorBoard(
            os.path.join(run_dir, "logs"), update_freq="epoch", profile_batch=0
        ),
    ]
    start = time.time()
    fit_history = model.fit(
        train_ds,
        steps_per_epoch=config.eval_every,
        epochs=math.ceil(config.max_steps / config.eval_every),
        validation_data=val_ds,
        validation_steps=val_batches,
        shuffle=False,  # the dataset shuffles itself
        callbacks=callback_list,
        verbose=config.verbose,
    )
    train_seconds = time.time() - start
    steps = int(model.optimizer.iterations)
    train_loss = float(fit_history.history["loss"][-1])
    if not math.isfinite(train_loss):
        raise UserError(
            f"training diverged (loss {train_loss}) by step {steps}: lower "
            "--learning-rate or raise --warmup-steps."
        )

    final = evaluate_windows(
        model,
        lm_data.validation,
        config.objective,
        tokenizer,
        batch_size=config.batch_size,
        seed=config.seed,
    )
    save_model(model, os.path.join(run_dir, "model.keras"))
    sample = None
    if config.objective == "causal" and config.sample_tokens > 0:
        sample = write_sample(model, tokenizer, lm_data, config, run_dir)

    tokens_per_step = config.batch_size * config.sequence_length
    metrics = {
        "val_loss": final["loss"],
        "val_perplexity": final["perplexity"],
        "val_bits_per_byte": final["bits_per_byte"],
        "val_tokens": final["tokens"],
        "val_bytes": final["bytes"],
        "val_unknown_rate": final["unknown_rate"],
        "unigram_bits_per_byte": lm_data.stats["unigram_bits_per_byte"],
        "train_loss": train_loss,
        "steps": steps,
        "tokens_seen": steps * tokens_per_step,
        # Training steps only: without the first (compiling) step and
        # without validation.
        "tokens_per_second": (
            throughput.timed_steps * tokens_per_step
            / max(throughput.train_seconds, 1e-9)
        ),
        "first_step_seconds": throughput.first_step_seconds,
        "train_seconds": train_seconds,
        "parameters": model.count_params(),
        "objective": config.objective,
        "tokenizer": config.tokenizer,
        "vocabulary_size": tokenizer.vocabulary_size,
        "replicas": replicas,
        "jit_compile": jit_compile,
        "corpus_tokens": lm_data.stats["corpus_tokens"],
        "corpus_bytes": lm_data.stats["corpus_bytes"],
        "train_sequences": lm_data.stats["train_sequences"],
        "validation_sequences": lm_data.stats["validation_sequences"],
        "sample": sample,
        "run_dir": run_dir,
    }
    if config.objective == "masked":
        metrics["val_bits_per_byte_note"] = (
            "pseudo bits per byte: masked-token loss spread over all tokens; "
            "comparable between masked LMs only"
        )
    # Written last: its presence marks a finished run.
    write_json(os.path.join(run_dir, "metrics.json"), metrics)
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
