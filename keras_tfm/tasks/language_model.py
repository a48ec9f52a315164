"""Using a finished pre-training run: load it, evaluate it, generate."""

import os

from keras_tfm import data
from keras_tfm import generation
from keras_tfm import tokenizers
from keras_tfm.errors import UserError
from keras_tfm.metrics import evaluate_windows
from keras_tfm.training import lm_corpus
from keras_tfm.training import run
from keras_tfm.training.config import TrainConfig
from keras_tfm.training.config import load_run_config


def load_tokenizer(run_dir):
    return tokenizers.load_tokenizer(os.path.join(run_dir, "tokenizer"))


def load_run(run_dir):
    """`(config, tokenizer, model)` of a finished pre-training run.

    Raises:
        UserError: the directory, its config, tokenizer or model is
            missing or damaged, or it is not a pre-training run.
    """
    model = run.load_model(run_dir)
    config = load_run_config(run_dir, TrainConfig)
    tokenizer = load_tokenizer(run_dir)
    return config, tokenizer, model


def run_data(config, tokenizer, run_dir=None):
    """The run's corpus as it trained on it, with `.validation` (and
    `.calibration`, training windows) rebuilt from its data and seed: a
    `MemoryCorpus` or, for a prepared corpus, a `PreparedSource` (refused
    if the corpus changed since the run recorded it)."""
    directory = lm_corpus.prepared_directory(config.data)
    if directory:
        source = lm_corpus.PreparedSource(directory, config.sequence_length)
        if run_dir:
            lm_corpus.check_recorded_corpus(run_dir, source.corpus)
        return source
    texts = [text for _, text in data.load_corpus(config.data)]
    return lm_corpus.MemoryCorpus(config, tokenizer, texts)


def prepared_windows(run_dir, config, tokenizer, directory):
    """The validation windows of a prepared corpus, if it was tokenized
    with the run's tokenizer."""
    from keras_tfm.data.prepared import open_prepared

    corpus = open_prepared(directory, verify=True)
    if corpus.tokenizer().get_config() != tokenizer.get_config():
        raise UserError(
            f"'{directory}' was prepared with another tokenizer than "
            f"'{run_dir}' trained with: prepare it again with the run's "
            "tokenizer settings."
        )
    lm_corpus.check_recorded_corpus(run_dir, corpus)
    return corpus.validation_windows(config.sequence_length)


def text_windows(config, tokenizer, patterns):
    """Windows that predict every token of the files after the first
    once, with up to `sequence_length` tokens of context."""
    texts = [text for _, text in data.load_corpus(patterns)]
    ids, byte_lengths = data.tokenize_stream(tokenizer, texts)
    if len(ids) < 3:
        raise UserError(
            "the text is too short to evaluate: pass at least a few "
            "characters."
        )
    return data.pack_windows(
        ids,
        byte_lengths,
        config.sequence_length,
        tokenizer.unk_id,
        pad_id=tokenizer.pad_id,
        pad_tail=True,
        overlap=True,
    )


def evaluate_run(run_dir, patterns=None, batch_size=32):
    """Evaluates a run on text files (default: its own validation split).

    Every token after the first of each file is predicted once, in windows
    of the model's sequence length.
    """
    if batch_size < 1:
        raise UserError("--batch-size must be a positive integer.")
    directory = lm_corpus.prepared_directory(patterns or [])
    if patterns and not directory:
        data.expand_patterns(patterns)  # a missing file, before loading
    config, tokenizer, model = load_run(run_dir)
    if directory:
        windows = prepared_windows(run_dir, config, tokenizer, directory)
    elif patterns:
        windows = text_windows(config, tokenizer, patterns)
    else:
        windows = run_data(config, tokenizer, run_dir).validation
    return evaluate_windows(
        model,
        windows,
        config.objective,
        tokenizer,
        batch_size=batch_size,
        seed=config.seed,
    )


def check_generation(max_new_tokens, temperature, top_k, top_p):
    if max_new_tokens < 1:
        raise UserError("--max-new-tokens must be at least 1.")
    generation.check_sampling(temperature, top_k, top_p)


def generate_from_run(
    run_dir,
    prompt="",
    max_new_tokens=200,
    temperature=1.0,
    top_k=None,
    top_p=None,
    seed=None,
):
    """Samples text after `prompt` from a causal-LM run with Keras."""
    check_generation(max_new_tokens, temperature, top_k, top_p)
    config, tokenizer, model = load_run(run_dir)
    if config.objective != "causal":
        raise UserError(
            f"'{run_dir}' holds a masked LM, which cannot generate text: "
            "use a run trained with --objective causal."
        )
    return generation.generate(
        model,
        tokenizer,
        prompt,
        max_new_tokens=max_new_tokens,
        temperature=temperature,
        top_k=top_k,
        top_p=top_p,
        seed=seed,
    )
