import numpy as np
import pytest
import tensorflow as tf

from keras_tfm.tokenizers import SPECIAL_TOKENS
from keras_tfm.tokenizers import ByteTokenizer
from keras_tfm.tokenizers import WordPieceTokenizer
from keras_tfm.tokenizers import load_tokenizer

TEXT = "First Citizen:\nBefore we proceed  any further, hear me speak.\n"


def test_byte_tokenizer_round_trips_any_text():
    tokenizer = ByteTokenizer()
    text = "Grüße, 世界! \t\n ünïcödé 🙂"
    ids = tokenizer.encode(text)
    assert len(ids) == len(text.encode("utf-8"))
    assert min(ids) >= 4 and max(ids) < tokenizer.vocabulary_size == 260
    assert tokenizer.decode(ids) == text


def test_byte_tokenizer_runs_in_graph():
    tokenizer = ByteTokenizer()

    @tf.function
    def round_trip(texts):
        return tokenizer.detokenize(tokenizer.tokenize(texts))

    texts = tf.constant(["abc", "héllo"])
    assert round_trip(texts).numpy().tolist() == [b"abc", "héllo".encode()]


@pytest.fixture(scope="module")
def wordpiece(shakespeare_text):
    return WordPieceTokenizer.train([shakespeare_text[:100_000]], 400)


def test_wordpiece_vocabulary(wordpiece):
    assert wordpiece.vocabulary[:4] == list(SPECIAL_TOKENS)
    assert 100 < wordpiece.vocabulary_size <= 400
    assert "\n" in wordpiece.vocabulary and " " in wordpiece.vocabulary


def test_wordpiece_round_trips_text_with_known_characters(wordpiece):
    ids = wordpiece.encode(TEXT)
    assert wordpiece.unk_id not in ids
    # Fewer tokens than bytes: subwords, not characters.
    assert len(ids) < len(TEXT)
    assert wordpiece.decode(ids) == TEXT


def test_wordpiece_byte_lengths_cover_the_text(wordpiece):
    text = TEXT + " Zürich 🙂"
    ids, lengths = wordpiece.tokenize_with_byte_lengths(tf.constant([text]))
    ids, lengths = ids[0].numpy(), lengths[0].numpy()
    assert lengths.sum() == len(text.encode("utf-8"))
    # Unseen characters become [UNK], which still accounts for its bytes.
    assert wordpiece.unk_id in ids
    assert lengths[ids == wordpiece.unk_id].sum() >= len("🙂".encode())


def test_save_and_load(tmp_path, wordpiece):
    wordpiece.save(str(tmp_path / "wp"))
    loaded = load_tokenizer(str(tmp_path / "wp"))
    assert loaded.vocabulary == wordpiece.vocabulary
    assert loaded.encode(TEXT) == wordpiece.encode(TEXT)
    ByteTokenizer().save(str(tmp_path / "b"))
    assert isinstance(load_tokenizer(str(tmp_path / "b")), ByteTokenizer)


def test_detokenize_drops_special_tokens():
    tokenizer = ByteTokenizer()
    ids = np.array([[0, 4 + ord("h"), 3, 4 + ord("i"), 2]])
    assert tokenizer.detokenize(ids).numpy().tolist() == [b"hi"]
