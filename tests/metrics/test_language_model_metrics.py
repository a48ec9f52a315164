import math

import keras
import numpy as np

from keras_tfm import data
from keras_tfm.metrics import evaluate_windows
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
    np.testing.assert_allclose(
        results["bits_per_byte"], expected_bpb, rtol=1e-6
    )


def test_unknown_tokens_are_charged_their_bytes():
    tokenizer = WordPieceTokenizer.train(["abc abc ab a b c\n"] * 5, 40)
    known = "abc ab c " * 8
    unknown = known + "🙂🙂 "
    vocabulary = tokenizer.vocabulary_size
    model = uniform_model(vocabulary)

    def evaluate(text):
        ids, lengths = data.tokenize_stream(tokenizer, [text])
        windows = data.pack_windows(
            ids, lengths, 8, tokenizer.unk_id, pad_tail=True, overlap=True
        )
        return ids, evaluate_windows(model, windows, tokenizer=tokenizer)

    ids, plain = evaluate(known)
    assert plain["unknown_tokens"] == 0
    ids, with_unknown = evaluate(unknown)
    # By hand: the emoji pair is one unknown word of 8 UTF-8 bytes; every
    # token but the first is predicted at log2(V) bits (uniform model), and
    # the unknown one is charged 8 bits per byte on top.
    assert with_unknown["unknown_tokens"] == 1
    assert with_unknown["unknown_bytes"] == 8
    first_token_bytes = len(tokenizer.decode(ids[:1].tolist()).encode())
    text_bytes = len(unknown.encode()) - first_token_bytes
    assert with_unknown["bytes"] == text_bytes
    expected = ((len(ids) - 1) * math.log2(vocabulary) + 8 * 8) / text_bytes
    np.testing.assert_allclose(with_unknown["bits_per_byte"], expected,
                               rtol=1e-6)


def test_unigram_baseline_by_hand():
    from keras_tfm.metrics import unigram_bits_per_byte

    # Train targets 5, 5, 6; add-one smoothing over 8 ids: p(5) = 3/11,
    # p(6) = 2/11, any other id 1/11. Validation targets 5, 6, 7, 3 bytes.
    train = data.Windows(np.array([[0, 5, 5, 6]]), np.array([3]),
                         np.array([0]))
    validation = data.Windows(np.array([[0, 5, 6, 7]]), np.array([3]),
                              np.array([0]))
    expected = -(math.log2(3 / 11) + math.log2(2 / 11) + math.log2(1 / 11)) / 3
    np.testing.assert_allclose(
        unigram_bits_per_byte(train, validation, 8), expected, rtol=1e-12
    )
