"""Loading a tokenizer saved in a directory."""

import os

from keras_tfm import files
from keras_tfm.errors import UserError
from keras_tfm.tokenizers.base import CONFIG_FILE
from keras_tfm.tokenizers.byte_tokenizer import ByteTokenizer
from keras_tfm.tokenizers.wordpiece_tokenizer import WordPieceTokenizer

TOKENIZERS = ("byte", "wordpiece")


def load_tokenizer(directory):
    """Loads a tokenizer saved with `Tokenizer.save(directory)`.

    Raises:
        UserError: the file is missing, damaged or of an unknown type.
    """
    path = os.path.join(directory, CONFIG_FILE)
    if not os.path.isfile(path):
        raise UserError(
            f"no tokenizer in {directory} ({CONFIG_FILE} is missing): "
            "point at a run directory written by keras-tfm."
        )
    try:
        config = files.read_json(path, "tokenizer file")
    except (OSError, ValueError) as e:
        raise UserError(
            f"{e}: restore it, or retrain the run with --restart."
        ) from None
    kind = config.get("type") if isinstance(config, dict) else None
    if kind == "byte":
        return ByteTokenizer()
    if kind == "wordpiece" and isinstance(config.get("vocabulary"), list):
        try:
            return WordPieceTokenizer(config["vocabulary"])
        except ValueError as e:
            raise UserError(f"'{path}' is not a usable vocabulary: {e}"
                            ) from None
    raise UserError(f"unknown tokenizer type in {path}: {kind!r}.")
