"""Generating from a run's exported prefill/decode TFLite file."""

import os

from keras_tfm import _startup
from keras_tfm.errors import UserError
from keras_tfm.export import decoder
from keras_tfm.export import tflite
from keras_tfm.export.run_export import DECODER_NAME
from keras_tfm.tasks.language_model import check_generation
from keras_tfm.tasks.language_model import load_tokenizer
from keras_tfm.training.config import TrainConfig
from keras_tfm.training.config import load_run_config


def generate_from_run(run_dir, prompt="", max_new_tokens=200,
                      temperature=1.0, top_k=None, top_p=None, seed=None,
                      tflite_file=None):
    """Samples text after `prompt` with the LiteRT interpreter alone."""
    check_generation(max_new_tokens, temperature, top_k, top_p)
    path = tflite_file or os.path.join(run_dir, "export", "tflite",
                                       DECODER_NAME)
    if not os.path.isfile(path):
        raise UserError(
            f"no TFLite decoder at '{path}': run `keras-tfm export {run_dir}` "
            "first (or pass --tflite-file)."
        )
    config = load_run_config(run_dir, TrainConfig)
    if config.objective != "causal":
        raise UserError(
            f"'{run_dir}' holds a masked LM, which cannot generate text: "
            "use a run trained with --objective causal."
        )
    tokenizer = load_tokenizer(run_dir)
    prompt_ids = (tokenizer.encode(prompt) if prompt else []) or [
        tokenizer.eos_id
    ]
    try:
        runner = tflite.interpreter(path)
    except (ValueError, RuntimeError) as e:
        raise UserError(
            f"'{path}' is not a TFLite file the interpreter can load "
            f"({str(e).splitlines()[0]}): export the run again."
        ) from None
    with _startup.quiet_stderr():
        ids = decoder.generate_ids(
            runner, prompt_ids, max_new_tokens, temperature, top_k, top_p,
            seed,
        )
    return tokenizer.decode(ids)
