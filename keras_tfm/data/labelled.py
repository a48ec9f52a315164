"""Labelled text for classification: files to `LabelledData` to batches.

`read_labelled` reads a TSV or CSV file with a header row, or JSON Lines,
into texts and integer label ids; `classification_dataset` tokenizes them
in TensorFlow ops with the pre-training run's tokenizer and batches
`(token_ids, labels)` for `TextClassifier`.
"""

import csv
import dataclasses
import os
import re

import numpy as np
import tensorflow as tf

from keras_tfm.data import json_lines
from keras_tfm.errors import UserError

INTEGER = re.compile(r"-?\d+")


@dataclasses.dataclass
class LabelledData:
    """Texts and their labels.

    Attributes:
        texts: list of str.
        labels: `(num_examples,)` int32 label ids, indices into
            `label_names`.
        label_names: list of str. The name of each label id.
    """

    texts: list
    labels: np.ndarray
    label_names: list

    def __len__(self):
        return len(self.texts)

    @property
    def num_classes(self):
        return len(self.label_names)


def read_labelled(
    path,
    text_column="sentence",
    label_column="label",
    label_names=None,
    require_two_classes=False,
):
    """Reads labelled text from a `.tsv`, `.csv` or `.jsonl` file.

    Delimited files need a header row naming the columns. `.tsv` files are
    read without quoting (`csv.QUOTE_NONE`), as GLUE's SST-2 files are
    meant to be read: a `"` is text there. `.csv` files follow the usual
    CSV quoting; other names (`.txt`, ...) have their delimiter sniffed.
    `.jsonl` files hold one JSON object per line, with the same field
    names. Any of them may be gzipped (`.tsv.gz`). Surrounding whitespace
    is stripped from texts and labels (SST-2's sentences end with a
    space).

    Labels may be strings or integers. Without `label_names`, the names are
    the labels found, sorted (numerically when every label is an integer,
    so `"2"` comes before `"10"`); label id `i` is `label_names[i]`. An
    evaluation file is read with the training run's `label_names`, so ids
    mean the same classes.

    Args:
        path: str. The file.
        text_column: str. The column holding the text. Defaults to
            `"sentence"`.
        label_column: str. The column holding the label. Defaults to
            `"label"`.
        label_names: list of str or `None`. The known labels; a label
            outside them is an error. Defaults to `None` (from the file).
        require_two_classes: bool. Refuse a file whose labels are all one
            class, which cannot train a classifier. Defaults to `False`.

    Returns:
        A `LabelledData`.

    Raises:
        UserError: the file is missing or empty, a column is missing, a row
            has no text or no label, a label is unknown, or (with
            `require_two_classes`) there is one class only.
    """
    if not os.path.isfile(path):
        raise UserError(f"no labelled data file '{path}': check the path.")
    try:
        rows = list(_read_rows(path, text_column, label_column))
    except UnicodeDecodeError:
        raise UserError(f"'{path}' is not UTF-8 text: convert it.") from None
    except csv.Error as e:
        raise UserError(f"'{path}' is not readable as CSV/TSV ({e}).") from None
    if not rows:
        raise UserError(
            f"'{path}' has no rows: give a file with a header and at least "
            "one labelled row."
        )
    texts, labels = [], []
    for line, text, label in rows:
        if not text:
            raise UserError(
                f"row at line {line} of '{path}' has no text in "
                f"'{text_column}': fill it in or remove the row."
            )
        if not label:
            raise UserError(
                f"row at line {line} of '{path}' has no label in "
                f"'{label_column}': fill it in or remove the row."
            )
        texts.append(text)
        labels.append(label)

    if label_names is None:
        label_names = sorted_label_names(labels)
    label_names = [str(name) for name in label_names]
    ids = {name: i for i, name in enumerate(label_names)}
    for (line, _, _), label in zip(rows, labels):
        if label not in ids:
            raise UserError(
                f"label '{label}' at line {line} of '{path}' is not one of "
                f"the training labels ({', '.join(label_names)}): fix the "
                "row or fine-tune on data with this label."
            )
    if require_two_classes and len(set(labels)) < 2:
        raise UserError(
            f"every row of '{path}' has label '{labels[0]}': training needs "
            f"at least two classes in '{label_column}'."
        )
    return LabelledData(
        texts=texts,
        labels=np.array([ids[label] for label in labels], dtype=np.int32),
        label_names=label_names,
    )


def sorted_label_names(labels):
    """The distinct labels, sorted numerically if all are integers."""
    names = set(labels)
    if all(INTEGER.fullmatch(name) for name in names):
        return sorted(names, key=lambda name: (int(name), name))
    return sorted(names)


def _read_rows(path, text_column, label_column):
    """Yields `(line_number, text, label)`, both stripped strings."""
    name = path[: -len(".gz")] if path.endswith(".gz") else path
    extension = os.path.splitext(name)[1].lower()
    if extension in (".jsonl", ".ndjson"):
        yield from _read_json_lines(path, text_column, label_column)
    else:
        yield from _read_delimited(path, extension, text_column, label_column)


def _read_delimited(path, extension, text_column, label_column):
    with json_lines.open_text(path, newline="") as f:
        if extension == ".tsv":
            reader = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        elif extension == ".csv":
            reader = csv.reader(f)
        else:
            sample = f.read(64 * 1024)
            f.seek(0)
            try:
                dialect = csv.Sniffer().sniff(sample, delimiters="\t,;|")
            except csv.Error:
                if not sample.strip():
                    return
                raise UserError(
                    f"cannot tell the delimiter of '{path}': name it .tsv, "
                    ".csv or .jsonl."
                ) from None
            if dialect.delimiter == "\t":
                reader = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
            else:
                reader = csv.reader(f, dialect)
        header = next(reader, None)
        if header is None:
            return
        header = [column.strip() for column in header]
        indices = []
        for column in (text_column, label_column):
            if column not in header:
                raise UserError(
                    f"'{path}' has no column '{column}' (its columns: "
                    f"{', '.join(header)}): pass the right column name."
                )
            indices.append(header.index(column))
        for row in reader:
            if not any(field.strip() for field in row):
                continue  # a blank line
            text, label = (
                row[i].strip() if i < len(row) else "" for i in indices
            )
            yield reader.line_num, text, label


def _read_json_lines(path, text_column, label_column):
    hint = "pass the right column name"
    with json_lines.open_text(path) as f:
        for line_number, record in json_lines.records(
            f, path, {text_column: hint, label_column: hint}
        ):
            yield (
                line_number,
                _json_text(record[text_column], path, line_number),
                _json_label(record[label_column], path, line_number),
            )


def _json_text(value, path, line_number):
    if value is None:
        return ""
    if not isinstance(value, str):
        raise UserError(
            f"the text at line {line_number} of '{path}' is not a string."
        )
    return value.strip()


def _json_label(value, path, line_number):
    if value is None:
        return ""
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise UserError(
            f"the label at line {line_number} of '{path}' is {value!r}: "
            "labels are strings or integers."
        )
    return str(value).strip()


def classification_dataset(
    texts,
    labels,
    tokenizer,
    sequence_length,
    batch_size,
    training,
    seed=0,
    start_step=0,
    prepend_eos=True,
):
    """A `tf.data.Dataset` of `(token_ids, labels)` batches.

    Texts are tokenized in TensorFlow ops with `tokenizer`, start with
    `[EOS]` when `prepend_eos` (the token before every document the
    language model was pre-trained on, so the text reads as a document's
    start), are cut to `sequence_length` tokens (keeping the start) and
    right-padded with `[PAD]` to exactly `sequence_length`, one shape for
    every batch (one XLA compilation).

    Training data is an endless stream in which batch `s` is a pure
    function of `(seed, s)`: each pass over the examples is a fresh
    permutation (`tf.random.experimental.index_shuffle` keyed by the seed
    and the pass, as in `keras_tfm.data.pipeline.make_dataset`), so
    starting at `start_step` resumes exactly where a run stopped.
    Evaluation data is one pass in order, the last batch possibly smaller.

    Args:
        texts: list of str.
        labels: int label ids `(num_examples,)`, or `None` for batches of
            token ids only (for `predict`).
        tokenizer: the pre-training run's tokenizer.
        sequence_length: int. Tokens per example, `[EOS]` included.
        batch_size: int. Examples per batch.
        training: bool. The shuffled endless stream if true.
        seed: int. Seeds the order. Defaults to `0`.
        start_step: int. The first training batch to produce. Defaults to
            `0`.
        prepend_eos: bool. Start each text with `[EOS]`. Defaults to
            `True`.

    Returns:
        Batches `(token_ids, labels)`: int32 `(batch, sequence_length)` and
        int32 `(batch,)`; or `token_ids` alone when `labels` is `None`.
    """
    count = len(texts)
    if count == 0:
        raise ValueError("classification_dataset needs at least one text")
    if labels is not None and len(labels) != count:
        raise ValueError(
            f"{count} texts but {len(labels)} labels: give one label per "
            "text"
        )
    texts = tf.constant(list(texts), dtype=tf.string)
    if labels is not None:
        labels = tf.constant(np.asarray(labels, dtype=np.int32))

    def tokenize(batch_texts):
        # (batch,) strings -> ragged ids (batch, (tokens)).
        ids = tokenizer.tokenize(batch_texts)
        if prepend_eos:
            eos = tf.fill([tf.shape(batch_texts)[0], 1], tokenizer.eos_id)
            ids = tf.concat([tf.cast(eos, ids.dtype), ids], axis=1)
        ids = tf.cast(ids[:, :sequence_length], tf.int32)
        # (batch, sequence_length), right-padded.
        return ids.to_tensor(
            default_value=tokenizer.pad_id, shape=[None, sequence_length]
        )

    if training:

        def example(index):
            # Example i of the stream: pass i // count, position i % count.
            pass_seed = tf.stack(
                [tf.constant(seed, tf.int64), index // count]
            )
            position = tf.random.experimental.index_shuffle(
                index % count, pass_seed, count - 1
            )
            if labels is None:
                return tf.gather(texts, position)
            return tf.gather(texts, position), tf.gather(labels, position)

        dataset = tf.data.Dataset.range(
            start_step * batch_size, np.iinfo(np.int64).max
        ).map(example, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        dataset = dataset.batch(batch_size, drop_remainder=True)
    else:
        slices = texts if labels is None else (texts, labels)
        dataset = tf.data.Dataset.from_tensor_slices(slices)
        dataset = dataset.batch(batch_size)

    if labels is None:
        dataset = dataset.map(
            tokenize, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True
        )
    else:
        dataset = dataset.map(
            lambda batch_texts, batch_labels: (
                tokenize(batch_texts),
                batch_labels,
            ),
            num_parallel_calls=tf.data.AUTOTUNE,
            deterministic=True,
        )
    options = tf.data.Options()
    # As in `make_dataset`: under MultiWorkerMirroredStrategy each worker
    # builds the same stream and keeps its share of every global batch.
    options.experimental_distribute.auto_shard_policy = (
        tf.data.experimental.AutoShardPolicy.DATA
    )
    return dataset.with_options(options).prefetch(tf.data.AUTOTUNE)
