import tensorflow as tf
import tensorflow_text as tf_text

from keras_tfm.tokenizers.base import Tokenizer


class ByteTokenizer(Tokenizer):
    """A byte-level tokenizer: each UTF-8 byte is one token. Needs no training.

    Byte `b` gets id `b + 4` (ids 0-3 are the special tokens), so the
    vocabulary has 260 ids and no text is ever unknown. Splitting uses
    tensorflow-text's `ByteSplitter`, one of the ops TFLite can run.
    """

    def __init__(self, name="byte_tokenizer"):
        super().__init__(name=name)
        self._splitter = tf_text.ByteSplitter()

    @property
    def vocabulary_size(self):
        return self.num_special_tokens + 256

    def tokenize_with_byte_lengths(self, texts):
        texts = tf.convert_to_tensor(texts, dtype=tf.string)
        byte_values = self._splitter.split(texts)  # ragged uint8
        ids = tf.cast(byte_values, tf.int32) + self.num_special_tokens
        return ids, tf.ones_like(ids)

    def token_strings(self):
        return [b""] * self.num_special_tokens + [
            bytes([b]) for b in range(256)
        ]

    def get_config(self):
        return {"type": "byte"}
