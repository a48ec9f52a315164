import math

import keras
import numpy as np

from keras_tfm import data
from keras_tfm.evaluation import evaluate_windows
from keras_tfm.tokenizers import ByteTokenizer
from keras_tfm.tokenizers import WordPieceTokenizer


def uniform_model(vocabulary_size):
    # Logits all zero: every token has probability 1 / vocabulary_size.
    return keras.Sequential(
        [
            keras.Input((None,), dtype="int32"),
            keras.layers.Embedding(
                vocabulary_size, vocabulary_size, embeddings_initializer="zeros"
            ),
        ]
    )


def test_uniform_model_has_closed_form_figures():
    tokenizer = ByteTokenizer()
    text = "hello world, " * 40
    ids, lengths = data.tokenize_stream(tokenizer, [text])
    windows = data.pack_windows(
        ids, lengths, 16, tokenizer.unk_id, pad_tail=True, overlap=True
    )
    results = evaluate_windows(uniform_model(260), windows, tokenizer=tokenizer)
    # Every byte is predicted once except the first; [EOS] has 0 bytes.
    assert results["tokens"] == len(ids) - 1
    assert results["bytes"] == len(text) - 1
    np.testing.assert_allclose(results["loss"], math.log(260), rtol=1e-6)
    np.testing.assert_allclose(results["perplexity"], 260, rtol=1e-5)
    expected_bpb = math.log2(260) * results["tokens"] / results["bytes"]
    np.testing.assert_allclose(results["bits_per_byte"], expected_bpb, rtol=1e-6)


def test_unknown_tokens_are_charged_their_bytes():
    tokenizer = WordPieceTokenizer.train(["abc abc ab a b c\n"] * 5, 40)
    known = "abc ab c " * 8
    unknown = known + "🙂🙂 "
    model = uniform_model(tokenizer.vocabulary_size)

    def evaluate(text):
        ids, lengths = data.tokenize_stream(tokenizer, [text])
        windows = data.pack_windows(
            ids, lengths, 8, tokenizer.unk_id, pad_tail=True, overlap=True
        )
        return evaluate_windows(model, windows, tokenizer=tokenizer)

    plain, with_unknown = evaluate(known), evaluate(unknown)
    assert plain["unknown_tokens"] == 0
    assert with_unknown["unknown_tokens"] >= 1
    assert with_unknown["unknown_bytes"] == len("🙂🙂".encode())
    bits = with_unknown["loss"] * with_unknown["tokens"] / math.log(2)
    expected = (bits + 8 * with_unknown["unknown_bytes"]) / with_unknown["bytes"]
    np.testing.assert_allclose(with_unknown["bits_per_byte"], expected, rtol=1e-6)
