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
    def train(cls, texts, vocabulary_size, min_frequency=2):
        """Learns a vocabulary of about `vocabulary_size` tokens from texts.

        Words are split with the same pattern `tokenize` uses; the pieces
        are learned by Hugging Face's `tokenizers` WordPiece trainer (a
        compiled learner that keras-hub also depends on: seconds where
        tensorflow-text's Python learner took minutes on a few MB), with
        the same `##` continuation prefix and the special tokens first.
        Every character of the texts gets a piece, so text made of seen
        characters never becomes `[UNK]`.

        Args:
            texts: an iterable of strings (documents).
            vocabulary_size: int. The target size, special tokens included.
            min_frequency: int. A merge must occur this often.
        """
        from tokenizers import Regex
        from tokenizers import Tokenizer as LearnerTokenizer
        from tokenizers import models
        from tokenizers import pre_tokenizers
        from tokenizers import trainers

        learner = LearnerTokenizer(models.WordPiece(
            unk_token="[UNK]", continuing_subword_prefix=SUFFIX_INDICATOR))
        learner.pre_tokenizer = pre_tokenizers.Split(
            Regex(PRETOKENIZE_PATTERN), behavior="isolated")
        trainer = trainers.WordPieceTrainer(
            vocab_size=vocabulary_size,
            special_tokens=list(SPECIAL_TOKENS),
            continuing_subword_prefix=SUFFIX_INDICATOR,
            min_frequency=min_frequency,
            show_progress=False,
        )
        seen = []

        def pieces():
            # Long documents in pieces, cut before whitespace (the pattern
            # never matches across it), so the learner's memory stays small.
            for text in texts:
                start = 0
                while start < len(text):
                    end = start + (1 << 20)
                    if end < len(text):
                        space = max(text.rfind(" ", start, end),
                                    text.rfind("\n", start, end))
                        end = space if space > start else end
                    piece = text[start:end]
                    if piece.strip():
                        seen.append(True)
                    yield piece
                    start = end

        learner.train_from_iterator(pieces(), trainer)
        if not seen:
            raise UserError(
                "cannot train a WordPiece vocabulary on an empty corpus: "
                "pass --data with some text."
            )
        ranked = sorted(learner.get_vocab().items(), key=lambda kv: kv[1])
        return cls([token for token, _ in ranked])

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
            elif (
                token.startswith(SUFFIX_INDICATOR)
                and token != SUFFIX_INDICATOR
            ):
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
