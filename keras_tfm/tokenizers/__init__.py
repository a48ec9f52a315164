"""In-graph tokenizers: byte-level and trained WordPiece."""

import json
import os

from keras_tfm.errors import UserError
from keras_tfm.tokenizers.base import CONFIG_FILE
from keras_tfm.tokenizers.base import SPECIAL_TOKENS
from keras_tfm.tokenizers.base import Tokenizer
from keras_tfm.tokenizers.byte_tokenizer import ByteTokenizer
from keras_tfm.tokenizers.wordpiece_tokenizer import WordPieceTokenizer

TOKENIZERS = ("byte", "wordpiece")


def load_tokenizer(directory):
    """Loads a tokenizer saved with `Tokenizer.save(directory)`."""
    path = os.path.join(directory, CONFIG_FILE)
    if not os.path.isfile(path):
        raise UserError(
            f"no tokenizer in {directory} ({CONFIG_FILE} is missing): "
            "point at a run directory written by `keras-tfm pretrain`."
        )
    with open(path, encoding="utf-8") as f:
        config = json.load(f)
    if config.get("type") == "byte":
        return ByteTokenizer()
    if config.get("type") == "wordpiece":
        return WordPieceTokenizer(config["vocabulary"])
    raise UserError(f"unknown tokenizer type in {path}: {config.get('type')!r}")
