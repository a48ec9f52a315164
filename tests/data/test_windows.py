import numpy as np
import pytest
import tensorflow as tf

from keras_tfm import data
from keras_tfm.data import corpus
from keras_tfm.errors import UserError
from keras_tfm.tokenizers import ByteTokenizer


def test_default_corpus_is_pydoc_topics():
    documents = corpus.default_corpus()
    assert len(documents) > 50
    assert all(name.startswith("pydoc_data:") for name, _ in documents)
    assert sum(len(text) for _, text in documents) > 300_000


def test_stream_has_eos_after_each_document():
    tokenizer = ByteTokenizer()
    ids, lengths = data.tokenize_stream(tokenizer, ["ab", "c"])
    assert ids.tolist() == [4 + 97, 4 + 98, 3, 4 + 99, 3]
    assert lengths.tolist() == [1, 1, 0, 1, 0]


def test_windows_are_disjoint_and_shift_by_one():
    ids = np.arange(100, dtype=np.int32)
    windows = data.pack_windows(ids, np.ones(100, np.int32), 9, unk_id=1)
    assert windows.tokens.shape == (10, 10)
    assert np.array_equal(windows.tokens.ravel(), ids)
    assert windows.target_bytes.tolist() == [9] * 10
    padded = data.pack_windows(ids[:25], np.ones(25, np.int32), 9, 1, True)
    assert padded.tokens.shape == (3, 10)
    assert padded.tokens[-1].tolist() == list(range(20, 25)) + [0] * 5


def test_overlapping_windows_predict_every_token_once():
    ids = np.arange(4, 30, dtype=np.int32)  # 26 tokens
    windows = data.pack_windows(
        ids, np.ones(26, np.int32), 8, 1, pad_tail=True, overlap=True
    )
    targets = windows.tokens[:, 1:].ravel()
    assert targets[targets != 0].tolist() == ids[1:].tolist()
    assert windows.tokens[1, 0] == windows.tokens[0, -1]
    assert windows.target_bytes.sum() == 25


@pytest.mark.parametrize("pad_tail,overlap", [(False, False), (True, False),
                                               (False, True), (True, True)])
def test_windows_match_a_plain_loop(pad_tail, overlap):
    # A second path: windows cut one by one in Python, unknown bytes
    # counted by hand, on streams of every length around a window.
    rng = np.random.default_rng(0)
    for length in range(0, 40):
        ids = rng.integers(0, 4, length).astype(np.int32)  # 1 is [UNK]
        lengths = rng.integers(0, 4, length).astype(np.int32)
        windows = data.pack_windows(ids, lengths, 6, 1, pad_tail, overlap)
        step = 6 if overlap else 7
        starts = list(range(0, max(length - 7, -1) + 1, step))
        if pad_tail and (not starts or starts[-1] + 7 < length):
            starts.append(starts[-1] + step if starts else 0)
        expected = []
        for start in starts:
            row = list(ids[start:start + 7]) + [0] * 7
            row_lengths = list(lengths[start:start + 7]) + [0] * 7
            expected.append((row[:7], sum(row_lengths[1:7]), sum(
                b for t, b in zip(row[1:7], row_lengths[1:7]) if t == 1)))
        assert windows.tokens.shape == (len(expected), 7), length
        for k, (row, total, unknown) in enumerate(expected):
            assert windows.tokens[k].tolist() == row
            assert windows.target_bytes[k] == total
            assert windows.target_unknown_bytes[k] == unknown
        if len(expected):  # a copy: writing to it leaves ids alone
            windows.tokens[0, 0] = 99
            assert 99 not in ids


def test_windows_need_one_byte_length_per_token():
    with pytest.raises(ValueError, match="5 token ids but 4 byte lengths"):
        data.pack_windows(np.zeros(5, np.int32), np.zeros(4, np.int32), 2, 1)


@pytest.fixture(scope="module")
def shakespeare_data(shakespeare_text):
    return data.prepare_lm_data(
        ByteTokenizer(), [shakespeare_text], sequence_length=64, seed=7
    )


def test_split_is_disjoint_and_covers_the_corpus(shakespeare_text):
    tokenizer = ByteTokenizer()
    split = data.prepare_lm_data(tokenizer, [shakespeare_text], 64, seed=7)
    train, val = split.train, split.validation
    # Every window of the stream lands on exactly one side: by hand, the
    # stream is the text's bytes plus one [EOS], cut into windows of 65.
    stream = len(shakespeare_text.encode()) + 1
    assert len(train) + len(val) == stream // 65
    assert 0.08 < len(val) / (len(train) + len(val)) < 0.12
    train_rows = {row.tobytes() for row in train.tokens}
    assert not any(row.tobytes() in train_rows for row in val.tokens)
    # Together the windows are the stream's windows, each once.
    everything = np.concatenate([train.tokens, val.tokens])
    expected = np.frombuffer(shakespeare_text.encode(), np.uint8)[
        : stream // 65 * 65].astype(np.int32) + 4
    assert sorted(map(bytes, everything)) == sorted(
        map(bytes, expected.reshape(-1, 65))
    )


def test_split_is_the_same_for_the_same_seed():
    def split(seed):
        return data.split_windows(500, 0.1, seed)

    a_train, a_val = split(3)
    b_train, b_val = split(3)
    c_train, c_val = split(4)
    assert np.array_equal(a_val, b_val) and np.array_equal(a_train, b_train)
    assert not np.array_equal(a_val, c_val)
    assert not set(a_train) & set(a_val)
    assert set(a_train) | set(a_val) == set(range(500))
    # Whole blocks of 8 consecutive windows (500 // 10 > 8) move together:
    # every validation window's block is entirely in validation.
    blocks = set(a_val // 8)
    assert set(a_val) == {
        i for b in blocks for i in range(8 * b, min(8 * b + 8, 500))
    }


def test_causal_batches(shakespeare_data):
    dataset = data.make_dataset(shakespeare_data.train, 4, "causal", seed=1)
    x, y = next(iter(dataset))
    assert x.shape == (4, 64) and y.shape == (4, 64)
    assert x.dtype == tf.int32
    np.testing.assert_array_equal(x[:, 1:], y[:, :-1])


def test_masking_rates():
    tokenizer = ByteTokenizer()
    ids = tf.random.stateless_uniform(
        (200, 200), (1, 2), minval=4, maxval=260, dtype=tf.int32
    )
    ids = tf.tensor_scatter_nd_update(ids, [[0, 0], [1, 1]], [3, 0])
    masked, labels, weights = data.mask_tokens(
        ids, tf.constant([5, 6]), tokenizer.mask_id, 260, 4
    )
    masked, labels, weights = masked.numpy(), labels.numpy(), weights.numpy()
    picked = weights > 0
    np.testing.assert_array_equal(labels, ids.numpy())
    assert abs(picked.mean() - 0.15) < 0.01
    as_mask = (masked == tokenizer.mask_id)[picked].mean()
    unchanged = (masked == labels)[picked].mean()
    assert abs(as_mask - 0.8) < 0.02
    assert abs(unchanged - 0.1) < 0.02  # a random token may equal the label
    assert not picked[0, 0] and not picked[1, 1]  # special tokens stay
    assert np.array_equal(masked[~picked], labels[~picked])


def test_masked_validation_masks_are_fixed(shakespeare_data):
    dataset = data.make_dataset(
        shakespeare_data.validation, 4, "masked", ByteTokenizer(),
        training=False, seed=3,
    )
    first = [w.numpy() for _, _, w in dataset.take(3)]
    second = [w.numpy() for _, _, w in dataset.take(3)]
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a, b)


def test_corpus_shorter_than_one_sequence():
    with pytest.raises(UserError, match="shorter than one training"):
        data.prepare_lm_data(ByteTokenizer(), ["tiny"], sequence_length=64)


def test_bad_files(tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("  \n")
    latin = tmp_path / "latin.txt"
    latin.write_bytes("café".encode("latin-1"))
    with pytest.raises(UserError, match="is empty"):
        corpus.load_corpus([str(empty)])
    with pytest.raises(UserError, match="not UTF-8.*byte 3"):
        corpus.load_corpus([str(latin)])
    with pytest.raises(UserError, match="no such file"):
        corpus.load_corpus([str(tmp_path / "missing.txt")])
    with pytest.raises(UserError, match="no file matches"):
        corpus.load_corpus([str(tmp_path / "*.md")])
    with pytest.raises(UserError, match="is a directory"):
        corpus.load_corpus([str(tmp_path)])


def test_globs_expand_sorted_and_once(tmp_path):
    for name in ("b.txt", "a.txt"):
        (tmp_path / name).write_text(name)
    docs = corpus.load_corpus(
        [str(tmp_path / "*.txt"), str(tmp_path / "a.txt")]
    )
    assert [text for _, text in docs] == ["a.txt", "b.txt"]
