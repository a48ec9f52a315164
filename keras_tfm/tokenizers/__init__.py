"""In-graph tokenizers: byte-level and trained WordPiece."""

from keras_tfm.tokenizers.base import CONFIG_FILE
from keras_tfm.tokenizers.base import SPECIAL_TOKENS
from keras_tfm.tokenizers.base import Tokenizer
from keras_tfm.tokenizers.byte_tokenizer import ByteTokenizer
from keras_tfm.tokenizers.loading import TOKENIZERS
from keras_tfm.tokenizers.loading import load_tokenizer
from keras_tfm.tokenizers.wordpiece_tokenizer import WordPieceTokenizer
