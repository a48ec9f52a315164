"""Using a finished run directory: load it, evaluate it, generate from it."""

import os

from keras_tfm.errors import UserError


def load_run(run_dir):
    """`(config, tokenizer, model)` of a run directory.

    Raises:
        UserError: the directory, its config, tokenizer or model is missing.
    """
    import keras

    from keras_tfm import tokenizers
    from keras_tfm.training.config import load_run_config

    if not os.path.isdir(run_dir):
        raise UserError(
            f"no run directory '{run_dir}': pass the --output-dir of a "
            "`keras-tfm pretrain` run."
        )
    model_path = os.path.join(run_dir, "model.keras")
    if not os.path.isfile(model_path):
        raise UserError(
            f"no model in '{run_dir}' (model.keras is missing; the run did "
            "not finish): run `keras-tfm pretrain --output-dir "
            f"{run_dir} --overwrite` to train one."
        )
    config = load_run_config(run_dir)
    tokenizer = tokenizers.load_tokenizer(os.path.join(run_dir, "tokenizer"))
    model = keras.models.load_model(model_path, compile=False)
    return config, tokenizer, model


def evaluate_run(run_dir, patterns=None, batch_size=32):
    """Evaluates a run on text files (default: its own validation split).

    Every token after the first of each file is predicted once, in disjoint
    windows of the model's sequence length.
    """
    from keras_tfm import corpus
    from keras_tfm import data
    from keras_tfm.evaluation import evaluate_windows

    config, tokenizer, model = load_run(run_dir)
    if patterns:
        texts = [text for _, text in corpus.load_corpus(patterns)]
        ids, byte_lengths = data.tokenize_stream(tokenizer, texts)
        if len(ids) < 3:
            raise UserError(
                "the text is too short to evaluate: pass at least a few "
                "characters."
            )
        windows = data.pack_windows(
            ids,
            byte_lengths,
            config.sequence_length,
            tokenizer.unk_id,
            pad_tail=True,
            overlap=True,
        )
    else:
        windows = run_data(config, tokenizer).validation
    return evaluate_windows(
        model,
        windows,
        config.objective,
        tokenizer,
        batch_size=batch_size,
        seed=config.seed,
    )


def run_data(config, tokenizer):
    """The run's train and validation windows, rebuilt from its corpus and
    seed (`keras_tfm.data.LMData`)."""
    from keras_tfm import corpus
    from keras_tfm import data

    texts = [text for _, text in corpus.load_corpus(config.data)]
    return data.prepare_lm_data(
        tokenizer,
        texts,
        config.sequence_length,
        config.validation_fraction,
        config.seed,
    )



def generate_from_run(
    run_dir,
    prompt="",
    max_new_tokens=200,
    temperature=1.0,
    top_k=None,
    top_p=None,
    seed=None,
    backend="keras",
    tflite_file=None,
):
    """Samples text after `prompt` from a causal-LM run.

    `backend="tflite"` runs the exported prefill/decode TFLite file
    (`keras-tfm export`) with the LiteRT interpreter instead of Keras.
    """
    from keras_tfm import generation

    if backend == "tflite":
        return _generate_tflite(
            run_dir, prompt, max_new_tokens, temperature, top_k, top_p, seed,
            tflite_file,
        )
    config, tokenizer, model = load_run(run_dir)
    if config.objective != "causal":
        raise UserError(
            f"'{run_dir}' holds a masked LM, which cannot generate text: "
            "use a run trained with --objective causal."
        )
    if max_new_tokens < 1:
        raise UserError("--max-new-tokens must be at least 1.")
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


def _generate_tflite(run_dir, prompt, max_new_tokens, temperature, top_k,
                     top_p, seed, tflite_file):
    from keras_tfm import generation
    from keras_tfm import tokenizers
    from keras_tfm.export import DECODER_NAME
    from keras_tfm.export import decoder
    from keras_tfm.export import tflite
    from keras_tfm.training.config import load_run_config

    path = tflite_file or os.path.join(run_dir, "export", "tflite", DECODER_NAME)
    if not os.path.isfile(path):
        raise UserError(
            f"no TFLite decoder at '{path}': run `keras-tfm export {run_dir}` "
            "first (or pass --tflite-file)."
        )
    if max_new_tokens < 1:
        raise UserError("--max-new-tokens must be at least 1.")
    generation.make_sampler(temperature, top_k, top_p, seed)  # validates
    load_run_config(run_dir)
    tokenizer = tokenizers.load_tokenizer(os.path.join(run_dir, "tokenizer"))
    prompt_ids = (tokenizer.encode(prompt) if prompt else []) or [
        tokenizer.eos_id
    ]
    ids = decoder.generate_ids(
        tflite.interpreter(path), prompt_ids, max_new_tokens, temperature,
        top_k, top_p, seed,
    )
    return tokenizer.decode(ids)
