import gzip
import json

import numpy as np
import pytest
from conftest import shared_data

from keras_tfm.data.labelled import classification_dataset
from keras_tfm.data.labelled import read_labelled
from keras_tfm.errors import UserError
from keras_tfm.tokenizers import ByteTokenizer
from keras_tfm.tokenizers import WordPieceTokenizer

TEXTS = ["good film", "bad", "a very long and rambling review", "ok", "x", "yy"]
LABELS = [1, 0, 1, 1, 0, 0]


def write(path, text):
    path.write_text(text, encoding="utf-8")
    return str(path)


def byte_ids(text, sequence_length, prepend_eos=True):
    # The ByteTokenizer's ids worked out in Python: byte b is id b + 4.
    ids = ([3] if prepend_eos else []) + [b + 4 for b in text.encode()]
    ids = ids[:sequence_length]
    return ids + [0] * (sequence_length - len(ids))


# --- Reading ---


def test_tsv_with_header_is_read_without_quoting(tmp_path):
    # SST-2 style: a '"' is text (CSV quoting would drop these), and
    # sentences end with a space.
    path = write(
        tmp_path / "train.tsv",
        'sentence\tlabel\n"fine" , she said \t1\nbleak \t0\n\ndull\t0\n',
    )
    data = read_labelled(path)
    assert data.texts == ['"fine" , she said', "bleak", "dull"]
    assert data.labels.tolist() == [1, 0, 0]
    assert data.labels.dtype == np.int32
    assert data.label_names == ["0", "1"]
    assert len(data) == 3 and data.num_classes == 2


def test_csv_with_quotes_and_string_labels(tmp_path):
    path = write(
        tmp_path / "reviews.csv",
        'id,text,sentiment\n1,"great, really",pos\n2,awful,neg\n'
        '3,"said ""meh""",neutral\n',
    )
    data = read_labelled(path, text_column="text", label_column="sentiment")
    assert data.texts == ["great, really", "awful", 'said "meh"']
    assert data.label_names == ["neg", "neutral", "pos"]
    assert data.labels.tolist() == [2, 0, 1]


def test_jsonl_with_int_labels_sorts_numerically(tmp_path):
    records = [{"sentence": "a", "label": 10}, {"sentence": "b", "label": 2},
               {"sentence": "c", "label": "2"}]
    path = write(
        tmp_path / "data.jsonl",
        "\n".join(json.dumps(r) for r in records) + "\n\n",
    )
    data = read_labelled(path)
    # Numeric order ("2" < "10"), where string order would put "10" first.
    assert data.label_names == ["2", "10"]
    assert data.labels.tolist() == [1, 0, 0]


def test_gzipped_and_sniffed_files(tmp_path):
    path = tmp_path / "train.tsv.gz"
    with gzip.open(path, "wt", encoding="utf-8") as f:
        f.write("sentence\tlabel\nhi\t1\nho\t0\n")
    assert read_labelled(str(path)).texts == ["hi", "ho"]
    sniffed = write(tmp_path / "data.txt", "label;sentence\n1;hi\n0;ho\n")
    data = read_labelled(sniffed)
    assert data.texts == ["hi", "ho"] and data.labels.tolist() == [1, 0]


def test_given_label_names_fix_the_ids(tmp_path):
    path = write(tmp_path / "dev.tsv", "sentence\tlabel\na\tpos\nb\tneg\n")
    data = read_labelled(path, label_names=["pos", "neg"])
    assert data.labels.tolist() == [0, 1]
    assert data.label_names == ["pos", "neg"]
    with pytest.raises(UserError, match=r"label 'neg' at line 3 .*\(pos\)"):
        read_labelled(path, label_names=["pos"])


def test_one_class_is_refused_for_training_only(tmp_path):
    path = write(tmp_path / "train.tsv", "sentence\tlabel\na\t1\nb\t1\n")
    assert read_labelled(path).label_names == ["1"]
    with pytest.raises(UserError, match="at least two classes in 'label'"):
        read_labelled(path, require_two_classes=True)


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("empty.tsv", "", "has no rows"),
        ("header.tsv", "sentence\tlabel\n", "has no rows"),
        ("empty.jsonl", "\n", "has no rows"),
        ("cols.tsv", "index\tsentence\n0\thi\n",
         r"no column 'label' \(its columns: index, sentence\)"),
        ("notext.tsv", "sentence\tlabel\nhi\t1\n  \t0\n",
         "line 3 of .* has no text in 'sentence'"),
        ("nolabel.csv", "sentence,label\nhi,1\nho\n",
         "line 3 of .* has no label in 'label'"),
        ("field.jsonl", '{"sentence": "a", "label": 1}\n{"text": "b"}\n',
         r"line 2 of .* no field 'sentence' \(its fields: text\)"),
        ("bad.jsonl", '{"sentence": "a", "label": 1}\n{oops\n',
         "line 2 of .* is not JSON"),
        ("float.jsonl", '{"sentence": "a", "label": 0.5}\n',
         "labels are strings or integers"),
    ],
)
def test_bad_files_raise_one_line_user_errors(tmp_path, name, content,
                                              message):
    path = write(tmp_path / name, content)
    with pytest.raises(UserError, match=message) as error:
        read_labelled(path)
    assert name in str(error.value) and "\n" not in str(error.value)


def test_missing_file(tmp_path):
    with pytest.raises(UserError, match="no labelled data file .*nope.tsv"):
        read_labelled(str(tmp_path / "nope.tsv"))


def test_sst2_dev_file():
    train = shared_data("sst2", "train.tsv")
    dev = read_labelled(shared_data("sst2", "dev.tsv"))
    # SOURCE.md: 872 rows, 444 positive, header sentence<TAB>label.
    assert len(dev) == 872 and int(dev.labels.sum()) == 444
    assert dev.label_names == ["0", "1"]
    assert dev.texts[0] == "it 's a charming and often affecting journey ."
    with pytest.raises(UserError, match="no column 'label'"):
        read_labelled(shared_data("sst2", "test.tsv"))
    assert len(read_labelled(train, require_two_classes=True)) == 67349


# --- Batches ---


def test_evaluation_batches_are_one_ordered_pass():
    dataset = classification_dataset(
        TEXTS, LABELS, ByteTokenizer(), sequence_length=8, batch_size=4,
        training=False,
    )
    batches = [(x.numpy(), y.numpy()) for x, y in dataset]
    # The last, partial batch is kept.
    assert [x.shape for x, _ in batches] == [(4, 8), (2, 8)]
    assert all(x.dtype == np.int32 and y.dtype == np.int32
               for x, y in batches)
    token_ids = np.concatenate([x for x, _ in batches])
    labels = np.concatenate([y for _, y in batches])
    assert labels.tolist() == LABELS
    # [EOS] first, then bytes; long texts cut, short ones padded with 0.
    assert token_ids.tolist() == [byte_ids(t, 8) for t in TEXTS]
    assert token_ids[:, 0].tolist() == [3] * 6
    assert token_ids[1].tolist() == [3, 102, 101, 104, 0, 0, 0, 0]  # "bad"


def test_without_eos_and_without_labels():
    dataset = classification_dataset(
        TEXTS, None, ByteTokenizer(), sequence_length=5, batch_size=6,
        training=False, prepend_eos=False,
    )
    (token_ids,) = [x.numpy() for x in dataset]
    assert token_ids.tolist() == [byte_ids(t, 5, False) for t in TEXTS]


def test_wordpiece_tokenizer_runs_in_the_pipeline():
    tokenizer = WordPieceTokenizer.train(TEXTS * 3, 40, min_frequency=1)
    dataset = classification_dataset(
        TEXTS, LABELS, tokenizer, sequence_length=6, batch_size=6,
        training=False,
    )
    token_ids, _ = next(iter(dataset))
    for row, text in zip(token_ids.numpy(), TEXTS):
        expected = ([3] + tokenizer.encode(text))[:6]
        assert row.tolist() == expected + [0] * (6 - len(expected))


def training_batches(seed=0, start_step=0, steps=6):
    dataset = classification_dataset(
        TEXTS, LABELS, ByteTokenizer(), sequence_length=8, batch_size=3,
        training=True, seed=seed, start_step=start_step,
    )
    return [(x.numpy(), y.numpy()) for x, y in dataset.take(steps)]


def test_training_stream_is_seeded_endless_and_resumes_exactly():
    batches = training_batches()
    assert len(batches) == 6  # 18 examples from 6: the stream repeats.
    # Each pass (two batches of 3) is a permutation of the examples, and
    # every label stays with its text.
    rows = {tuple(byte_ids(t, 8)): y for t, y in zip(TEXTS, LABELS)}
    for start in range(0, 6, 2):
        ids = np.concatenate([batches[start][0], batches[start + 1][0]])
        labels = np.concatenate([batches[start][1], batches[start + 1][1]])
        assert sorted(map(tuple, ids)) == sorted(rows)
        assert [rows[tuple(r)] for r in ids] == labels.tolist()
    passes = [np.concatenate([batches[s][0], batches[s + 1][0]])
              for s in (0, 2, 4)]
    assert not all(np.array_equal(passes[0], p) for p in passes[1:])
    # Same seed, same stream; starting at step 3 gives batches 3, 4, 5.
    again = training_batches()
    resumed = training_batches(start_step=3, steps=3)
    for a, b in zip(batches, again):
        np.testing.assert_array_equal(a[0], b[0])
    for a, b in zip(batches[3:], resumed):
        np.testing.assert_array_equal(a[0], b[0])
        np.testing.assert_array_equal(a[1], b[1])
    other = training_batches(seed=1)
    assert not all(np.array_equal(a[0], b[0]) for a, b in zip(batches, other))


def test_mismatched_lengths_raise():
    with pytest.raises(ValueError, match="6 texts but 2 labels"):
        classification_dataset(TEXTS, [0, 1], ByteTokenizer(), 8, 2, False)
