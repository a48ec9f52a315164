import collections

import tensorflow as tf
import tensorflow_text as tf_text

from keras_tfm.errors import UserError
from keras_tfm.tokenizers.base import SPECIAL_TOKENS
from keras_tfm.tokenizers.base import Tokenizer

# Lossless pre-tokenization in the style of GPT-2: a word keeps its leading
# space (" the" is one word), every other whitespace character and each run
# of punctuation is a word of its own. Concatenating the words gives back
# the text exactly, so nothing (layout included) is lost and bits per byte
# measure the whole text.
PRETOKENIZE_PATTERN = r" ?[\p{L}\p{M}\p{N}]+|\s|[^\p{L}\p{M}\p{N}\s]+"
SUFFIX_INDICATOR = "##"


class WordPieceTokenizer(Tokenizer):
    """A WordPiece tokenizer whose vocabulary is learned from the corpus.

    Text is split into words with `PRETOKENIZE_PATTERN` (tensorflow-text's
    `regex_split`), then each word into the longest vocabulary pieces with
    tensorflow-text's `FastWordpieceTokenizer`; continuation pieces carry
    the `##` prefix. A word with a character outside the vocabulary becomes
    `[UNK]`; evaluation charges such tokens 8 bits per hidden byte, so an
    unknown-heavy text never looks better than it is.

    Args:
        vocabulary: list of str. The tokens; the first four must be
            `[PAD]`, `[UNK]`, `[MASK]`, `[EOS]`.
    """

    def __init__(self, vocabulary, name="wordpiece_tokenizer"):
        super().__init__(name=name)
        vocabulary = list(vocabulary)
        if tuple(vocabulary[: len(SPECIAL_TOKENS)]) != SPECIAL_TOKENS:
            raise ValueError(
                f"A vocabulary must start with {SPECIAL_TOKENS}; it starts "
                f"with {vocabulary[: len(SPECIAL_TOKENS)]}."
            )
        self.vocabulary = vocabulary
        self._wordpiece = tf_text.FastWordpieceTokenizer(
            vocab=vocabulary,
            suffix_indicator=SUFFIX_INDICATOR,
            token_out_type=tf.int32,
            unknown_token="[UNK]",
            no_pretokenization=True,
        )

    @classmethod
    def train(
        cls,
        texts,
        vocabulary_size,
        min_frequency=2,
        max_input_words=5_000_000,
    ):
        """Learns a vocabulary of about `vocabulary_size` tokens from texts.

        Counts words with the same pre-tokenization `tokenize` uses, then
        runs tensorflow-text's WordPiece learner (the one behind
        `bert_vocab_from_dataset`) on the counts.
        """
        from tensorflow_text.tools.wordpiece_vocab import (
            wordpiece_tokenizer_learner_lib as learner,
        )

        counts = collections.Counter()
        for text in texts:
            words = tf_text.regex_split(
                tf.constant([text]), PRETOKENIZE_PATTERN, PRETOKENIZE_PATTERN
            )
            counts.update(w.decode("utf-8") for w in words.flat_values.numpy())
        if not counts:
            raise UserError(
                "cannot train a WordPiece vocabulary on an empty corpus: "
                "pass --data with some text."
            )
        vocabulary = learner.learn(
            counts.items(),
            vocab_size=vocabulary_size,
            reserved_tokens=list(SPECIAL_TOKENS),
            lower_thresh=min_frequency,
            max_input_tokens=max_input_words,
            joiner=SUFFIX_INDICATOR,
        )
        return cls(vocabulary)

    @property
    def vocabulary_size(self):
        return len(self.vocabulary)

    def tokenize_with_byte_lengths(self, texts):
        texts = tf.convert_to_tensor(texts, dtype=tf.string)
        # (batch, (words))
        words = tf_text.regex_split(
            texts, PRETOKENIZE_PATTERN, PRETOKENIZE_PATTERN
        )
        # (batch, (words), (pieces)), with byte offsets inside each word.
        ids, starts, ends = self._wordpiece.tokenize_with_offsets(words)
        ids = ids.merge_dims(1, 2)
        byte_lengths = (ends - starts).merge_dims(1, 2)
        return ids, tf.cast(byte_lengths, tf.int32)

    def token_strings(self):
        strings = []
        for i, token in enumerate(self.vocabulary):
            if i < self.num_special_tokens:
                token = ""
            elif token.startswith(SUFFIX_INDICATOR) and token != SUFFIX_INDICATOR:
                token = token[len(SUFFIX_INDICATOR) :]
            strings.append(token.encode("utf-8"))
        return strings

    def get_config(self):
        return {
            "type": "wordpiece",
            "pretokenize_pattern": PRETOKENIZE_PATTERN,
            "suffix_indicator": SUFFIX_INDICATOR,
            "vocabulary": self.vocabulary,
        }
