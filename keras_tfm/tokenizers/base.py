import os

import tensorflow as tf

from keras_tfm import files

# Every tokenizer reserves the same four ids, so models and data code can
# rely on them.
SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[MASK]", "[EOS]")
PAD_ID, UNK_ID, MASK_ID, EOS_ID = range(4)
CONFIG_FILE = "tokenizer.json"


class Tokenizer(tf.Module):
    """Base class: text to int32 ids and back, in TensorFlow ops.

    `tokenize` and `detokenize` are graph ops, so they run inside `tf.data`,
    `tf.function` and exported SavedModels. Subclasses implement
    `tokenize_with_byte_lengths`, `token_strings` and `get_config`.

    Ids 0-3 are `[PAD]`, `[UNK]`, `[MASK]` and `[EOS]` (end of document).
    """

    pad_id, unk_id, mask_id, eos_id = PAD_ID, UNK_ID, MASK_ID, EOS_ID
    num_special_tokens = len(SPECIAL_TOKENS)

    @property
    def vocabulary_size(self):
        raise NotImplementedError

    def tokenize(self, texts):
        """`(batch,)` strings -> ragged int32 ids `(batch, (tokens))`."""
        ids, _ = self.tokenize_with_byte_lengths(texts)
        return ids

    def tokenize_with_byte_lengths(self, texts):
        """Ids and, for each id, how many UTF-8 bytes of the text it covers.

        The byte lengths make bits per byte exact, and let the evaluation
        charge `[UNK]` tokens for the bytes they hide.
        """
        raise NotImplementedError

    def token_strings(self):
        """The UTF-8 bytes each id stands for, `""` for special tokens."""
        raise NotImplementedError

    def detokenize(self, ids):
        """int ids `(batch, tokens)` (dense or ragged) -> `(batch,)` strings.

        Special tokens are dropped, except `[UNK]`, shown as U+FFFD.
        """
        ids = tf.cast(ids, tf.int32)
        if not isinstance(ids, tf.RaggedTensor):
            ids = tf.RaggedTensor.from_tensor(ids)
        pieces = tf.gather(self.token_table(), ids)
        return tf.strings.reduce_join(pieces, axis=-1)

    def token_table(self):
        """A string tensor: the bytes of each id (U+FFFD for `[UNK]`)."""
        if getattr(self, "_table", None) is None:
            strings = list(self.token_strings())
            strings[UNK_ID] = "\ufffd".encode("utf-8")
            self._table = tf.constant(strings, dtype=tf.string)
        return self._table

    def decode(self, ids):
        """Python helper: one sequence of ids -> `str` (bad UTF-8 replaced)."""
        text = self.detokenize(tf.constant([list(ids)], dtype=tf.int32))[0]
        return text.numpy().decode("utf-8", errors="replace")

    def encode(self, text):
        """Python helper: `str` -> list of int ids."""
        return self.tokenize(tf.constant([text]))[0].numpy().tolist()

    def get_config(self):
        raise NotImplementedError

    def save(self, directory):
        """Writes `tokenizer.json` (type and vocabulary) into `directory`."""
        os.makedirs(directory, exist_ok=True)
        files.write_json(os.path.join(directory, CONFIG_FILE),
                         self.get_config(), indent=1)
