import gzip
import json

import numpy as np
import pytest
from conftest import shared_data

from keras_tfm.data.parallel import read_parallel
from keras_tfm.data.parallel import read_summarization
from keras_tfm.data.parallel import read_translation
from keras_tfm.data.parallel import seq2seq_dataset
from keras_tfm.data.parallel import source_token_ids
from keras_tfm.data.parallel import split_validation
from keras_tfm.data.parallel import tokenize_pairs
from keras_tfm.errors import UserError
from keras_tfm.tokenizers import ByteTokenizer
from keras_tfm.tokenizers import WordPieceTokenizer

EOS = 3


def write(path, text, compress=False):
    if compress:
        with gzip.open(path, "wt", encoding="utf-8") as f:
            f.write(text)
    else:
        path.write_text(text, encoding="utf-8")
    return str(path)


def byte_ids(text):
    # The ByteTokenizer's ids worked out in Python: byte b is id b + 4.
    return [b + 4 for b in text.encode("utf-8")]


# --- Reading translation pairs ---


def test_translation_pairs_plain_and_gzip(tmp_path):
    source = write(tmp_path / "train.en", "A dog.\nTwo cats \n\n")
    target = write(tmp_path / "train.de.gz", "Ein Hund.\n Zwei Katzen\n\n",
                   compress=True)
    data = read_translation(source, target)
    # Stripped; the pair blank on both sides is skipped.
    assert data.sources == ["A dog.", "Two cats"]
    assert data.targets == ["Ein Hund.", "Zwei Katzen"]
    assert data.references == [["Ein Hund."], ["Zwei Katzen"]]
    assert len(data) == 2


def test_only_newline_ends_a_line(tmp_path):
    # U+2028 (line separator) and "\r" inside a line are text, not line
    # ends, or the files would fall out of alignment; a CRLF file reads.
    source = write(tmp_path / "s.txt", "one\u2028still one\r\ntwo\r\n")
    target = write(tmp_path / "t.txt", "eins\ntwo\n")
    data = read_translation(source, target)
    assert data.sources == ["one\u2028still one", "two"]


@pytest.mark.parametrize("source_text, target_text, fragments", [
    ("a\nb\nc\n", "x\ny\n", ["s.txt' has 3 lines", "t.txt' has 2",
                             "line-aligned"]),
    ("", "x\n", ["s.txt' is empty"]),
    ("a\n", "\n\n", ["t.txt' is empty"]),
])
def test_translation_errors_name_files_and_counts(tmp_path, source_text,
                                                  target_text, fragments):
    source = write(tmp_path / "s.txt", source_text)
    target = write(tmp_path / "t.txt", target_text)
    with pytest.raises(UserError) as error:
        read_translation(source, target)
    message = str(error.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message


def test_missing_and_non_utf8_files(tmp_path):
    target = write(tmp_path / "t.txt", "x\n")
    with pytest.raises(UserError, match="no source file"):
        read_translation(str(tmp_path / "nope"), target)
    latin = tmp_path / "s.txt"
    latin.write_bytes("caf\xe9\n".encode("latin-1"))
    with pytest.raises(UserError, match="not UTF-8"):
        read_translation(str(latin), target)


def test_read_parallel_counts_files(tmp_path):
    path = write(tmp_path / "a.txt", "x\n")
    with pytest.raises(UserError, match="SOURCE_FILE TARGET_FILE.*names 1"):
        read_parallel("translation", [path])
    with pytest.raises(UserError, match="one JSON Lines file.*names 2"):
        read_parallel("summarization", [path, path])


# --- Reading summarization JSON Lines ---


def test_summarization_lists_and_strings(tmp_path):
    lines = [
        {"source": ["First sentence.", "Second one."],
         "target": ["Author tldr.", "Reviewer tldr."], "paper_id": "p1"},
        {"source": "Just a string.", "target": "One summary."},
    ]
    path = write(tmp_path / "train.jsonl",
                 "\n".join(json.dumps(line) for line in lines) + "\n\n")
    data = read_summarization(path)
    assert data.sources == ["First sentence. Second one.", "Just a string."]
    # The first reference trains; all are references.
    assert data.targets == ["Author tldr.", "One summary."]
    assert data.references == [["Author tldr.", "Reviewer tldr."],
                               ["One summary."]]


def test_summarization_custom_fields_and_gzip(tmp_path):
    path = write(tmp_path / "d.jsonl.gz",
                 json.dumps({"article": "Text.", "highlights": "Sum."}) + "\n",
                 compress=True)
    data = read_summarization(path, "article", "highlights")
    assert (data.sources, data.targets) == (["Text."], ["Sum."])


@pytest.mark.parametrize("content, fragments", [
    ('{"source": "a", "target": "b"}\n{"source": "c"}\n',
     ["line 2", "no field 'target'", "--target-field"]),
    ('{"target": "b"}\n', ["line 1", "no field 'source'", "--source-field"]),
    ('{"source": "a", "target": "b"}\nnot json\n', ["line 2", "not JSON"]),
    ('["a", "b"]\n', ["line 1", "not a JSON object"]),
    ('{"source": "a", "target": []}\n', ["line 1", "'target'",
                                         "empty list"]),
    ('{"source": 7, "target": "b"}\n', ["line 1", "'source'", "int"]),
    ("\n\n", ["is empty"]),
])
def test_summarization_errors_name_file_and_line(tmp_path, content,
                                                 fragments):
    path = write(tmp_path / "bad.jsonl", content)
    with pytest.raises(UserError) as error:
        read_summarization(path)
    message = str(error.value)
    assert "\n" not in message and "bad.jsonl" in message
    for fragment in fragments:
        assert fragment in message


# --- Validation split ---


def test_split_validation_is_seeded_and_in_order(tmp_path):
    n = 50
    source = write(tmp_path / "s", "".join(f"s{i}\n" for i in range(n)))
    target = write(tmp_path / "t", "".join(f"t{i}\n" for i in range(n)))
    data = read_translation(source, target)
    train, validation = split_validation(data, 0.2, seed=3)
    assert (len(train), len(validation)) == (40, 10)
    # Disjoint, together everything, each in file order, pairs intact.
    numbers = [int(s[1:]) for s in train.sources + validation.sources]
    assert sorted(numbers) == list(range(n))
    for part in (train, validation):
        order = [int(s[1:]) for s in part.sources]
        assert order == sorted(order)
        assert [t[1:] for t in part.targets] == [s[1:] for s in part.sources]
    again = split_validation(data, 0.2, seed=3)[1]
    assert again.sources == validation.sources
    assert split_validation(data, 0.2, seed=4)[1].sources != (
        validation.sources)


def test_empty_split_is_an_error(tmp_path):
    source = write(tmp_path / "s", "a\nb\nc\n")
    target = write(tmp_path / "t", "x\ny\nz\n")
    data = read_translation(source, target)
    with pytest.raises(UserError) as error:
        split_validation(data, 0.1, seed=0)
    assert "3 examples" in str(error.value)
    assert "0 for validation, 3 for training" in str(error.value)


# --- Token ids and batches ---


def test_tokenize_pairs_layout_and_truncation(tmp_path):
    source = write(tmp_path / "s", "hi\nabcdef\n")
    target = write(tmp_path / "t", "yo\nlonger target\n")
    data = read_translation(source, target)
    pairs = tokenize_pairs(ByteTokenizer(), data, sequence_length=5,
                           target_sequence_length=4)
    # Sources: [EOS] + bytes, cut to 5, padded to the longest (5).
    assert pairs.encoder_ids.tolist() == [
        [EOS] + byte_ids("hi") + [0, 0],
        [EOS] + byte_ids("abcd"),
    ]
    # Targets: [EOS] + bytes + [EOS], cut to 4 + 1.
    assert pairs.target_ids.tolist() == [
        [EOS] + byte_ids("yo") + [EOS, 0],
        [EOS] + byte_ids("long"),
    ]
    assert pairs.source_truncated == 0.5
    assert pairs.target_truncated == 0.5
    assert pairs.encoder_ids.dtype == np.int32
    # Short data is not padded to the model's limits.
    short = tokenize_pairs(ByteTokenizer(), data.subset([0]), 64, 64)
    assert short.encoder_ids.shape == (1, 3)
    assert short.target_ids.shape == (1, 4)


def test_graph_source_ids_equal_training_ids():
    tokenizer = WordPieceTokenizer.train(
        ["the cat sat on the mat", "a dog ran"] * 5, 40)
    texts = ["the cat ran", "a mat on the dog sat", ""]
    from keras_tfm.data.parallel import ParallelData

    data = ParallelData(texts, texts, [[t] for t in texts])
    expected = tokenize_pairs(tokenizer, data, 6, 6).encoder_ids
    graph = source_token_ids(tokenizer, texts, 6).numpy()
    assert graph.tolist() == expected.tolist()
    assert graph[2].tolist()[:1] == [EOS]


def test_unknown_rates(tmp_path):
    tokenizer = WordPieceTokenizer.train(["aaa bbb"] * 5, 20)
    source = write(tmp_path / "s", "aaa bbb\n")
    target = write(tmp_path / "t", "aaa zzz\n")
    pairs = tokenize_pairs(tokenizer, read_translation(source, target), 8, 8)
    assert pairs.source_unknown_rate == 0.0
    ids = tokenizer.encode("aaa zzz")
    assert pairs.target_unknown_rate == pytest.approx(
        ids.count(tokenizer.unk_id) / len(ids))
    assert pairs.target_unknown_rate > 0


def make_pairs(tmp_path, n=10):
    source = write(tmp_path / "s", "".join(f"source {i}\n" for i in range(n)))
    target = write(tmp_path / "t", "".join(f"t{i}\n" for i in range(n)))
    return tokenize_pairs(ByteTokenizer(), read_translation(source, target),
                          16, 8)


def test_training_batches_are_teacher_forced_and_weighted(tmp_path):
    pairs = make_pairs(tmp_path)
    inputs, labels, weights = next(iter(
        seq2seq_dataset(pairs, 4, training=True, seed=0)))
    decoder, labels = inputs["decoder_token_ids"].numpy(), labels.numpy()
    assert inputs["encoder_token_ids"].shape == (4, pairs.encoder_ids.shape[1])
    for row_in, row_out, weight in zip(decoder, labels, weights.numpy()):
        # Input: [EOS] + target; labels: target + [EOS]: shifted by one.
        assert row_in[0] == EOS
        real = row_out[row_out != 0]
        assert real[-1] == EOS
        np.testing.assert_array_equal(row_in[1 : len(real)], real[:-1])
        np.testing.assert_array_equal(weight, (row_out != 0).astype(float))


def test_training_stream_is_a_pure_function_of_seed_and_step(tmp_path):
    pairs = make_pairs(tmp_path, n=10)

    def batches(seed, start, count):
        dataset = seq2seq_dataset(pairs, 4, training=True, seed=seed,
                                  start_step=start)
        return [b[0]["encoder_token_ids"].numpy().tolist()
                for b in dataset.take(count)]

    run = batches(0, 0, 6)
    # Resuming at step 3 gives batches 3, 4, 5 of the uninterrupted run.
    assert batches(0, 3, 3) == run[3:]
    assert batches(1, 0, 6) != run
    # Each pass (10 examples) is a permutation: 20 examples, each twice.
    rows = [tuple(r) for batch in run[:5] for r in batch]
    assert sorted(set(map(rows.count, rows))) == [2]


def test_evaluation_pass_is_ordered_and_complete(tmp_path):
    pairs = make_pairs(tmp_path, n=10)
    batches = list(seq2seq_dataset(pairs, 4, training=False))
    assert [len(b[1]) for b in batches] == [4, 4, 2]
    ids = np.concatenate([b[0]["encoder_token_ids"].numpy() for b in batches])
    np.testing.assert_array_equal(ids, pairs.encoder_ids)


def test_multi30k_and_scitldr_read_as_documented():
    # Counts from ../shared/data/*/SOURCE.md.
    directory = shared_data("multi30k")
    val = read_translation(f"{directory}/val.en.gz", f"{directory}/val.de.gz")
    assert len(val) == 1014
    test = read_summarization(shared_data("scitldr", "test.jsonl"))
    assert len(test) == 618
    assert sum(len(refs) for refs in test.references) == 1967
    assert all(" " in source for source in test.sources[:5])
