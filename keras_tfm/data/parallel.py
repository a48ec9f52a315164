"""Sentence pairs and documents with summaries: files to batches.

Translation data is two line-aligned files, `SOURCE_FILE TARGET_FILE`
(plain or `.gz`, UTF-8, one sentence per line: line `i` of the target
translates line `i` of the source), as Multi30k and WMT ship them.
Summarization data is JSON Lines, one document per line, as SciTLDR ships
it: the input under `source_field` (a string, or a list of sentences
joined with spaces) and the reference under `target_field` (a string, or a
list: the first one trains, all of them are references).

Both become `ParallelData`; `tokenize_pairs` turns it into fixed-width id
arrays (`TokenizedPairs`) and `seq2seq_dataset` into batches
`({"encoder_token_ids", "decoder_token_ids"}, labels, sample_weight)` for
`Seq2SeqLM`:

    encoder_token_ids   [EOS] source        (cut to sequence_length)
    decoder_token_ids   [EOS] target        (cut to target_sequence_length)
    labels              target [EOS]        (cut the same way)
    sample_weight       1 at real tokens, 0 at padding

`[EOS]` starts the source as it starts every document a pre-trained LM
read (as classification does), and starts the decoder as the decoding
functions of `keras_tfm.generation.seq2seq` expect.
"""

import dataclasses
import os

import numpy as np
import tensorflow as tf

from keras_tfm.data import json_lines
from keras_tfm.errors import UserError

# Texts tokenized per TensorFlow call.
TOKENIZE_CHUNK = 2048


@dataclasses.dataclass
class ParallelData:
    """Inputs, the target each trains on, and every reference.

    Attributes:
        sources: list of str.
        targets: list of str. The training target of each source.
        references: list of lists of str. Every reference of each source
            (`targets[i]` is `references[i][0]`).
        name: str. Where the examples come from, for messages.
    """

    sources: list
    targets: list
    references: list
    name: str = ""

    def __len__(self):
        return len(self.sources)

    def subset(self, indices, name=None):
        return ParallelData(
            sources=[self.sources[i] for i in indices],
            targets=[self.targets[i] for i in indices],
            references=[self.references[i] for i in indices],
            name=self.name if name is None else name,
        )


# === Reading ===


def _open_text(path):
    # newline="" keeps "\r" so that only "\n" ends a line (never U+2028
    # and friends).
    return json_lines.open_text(path, newline="")


def _read_lines(path, what):
    if not os.path.isfile(path):
        raise UserError(f"no {what} file '{path}': check the path.")
    try:
        with _open_text(path) as f:
            text = f.read()
    except UnicodeDecodeError:
        raise UserError(f"'{path}' is not UTF-8 text: convert it.") from None
    except (OSError, EOFError) as e:
        raise UserError(f"cannot read '{path}' ({e}).") from None
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()  # the final newline ends the last line
    return [line.rstrip("\r") for line in lines]


def read_translation(source_path, target_path):
    """Reads two line-aligned files of sentences into `ParallelData`.

    Surrounding whitespace is stripped; a line pair blank on both sides is
    skipped.

    Raises:
        UserError: a file is missing, not UTF-8 or empty, or the two have
            different line counts.
    """
    sources = _read_lines(source_path, "source")
    targets = _read_lines(target_path, "target")
    for path, lines in ((source_path, sources), (target_path, targets)):
        if not any(line.strip() for line in lines):
            raise UserError(
                f"'{path}' is empty: a translation file holds one sentence "
                "per line."
            )
    if len(sources) != len(targets):
        raise UserError(
            f"'{source_path}' has {len(sources):,} lines but '{target_path}'"
            f" has {len(targets):,}: translation files must be line-aligned "
            "(line i of one translates line i of the other)."
        )
    pairs = [
        (source.strip(), target.strip())
        for source, target in zip(sources, targets)
        if source.strip() or target.strip()
    ]
    return ParallelData(
        sources=[source for source, _ in pairs],
        targets=[target for _, target in pairs],
        references=[[target] for _, target in pairs],
        name=f"{source_path} -> {target_path}",
    )


def _field_text(value, path, line_number, field, joined):
    """A field's text: a string, or a list of strings joined with spaces
    (`joined`) or kept as a list."""
    if isinstance(value, str):
        return value.strip() if joined else [value.strip()]
    if isinstance(value, list) and value and all(
        isinstance(item, str) for item in value
    ):
        items = [item.strip() for item in value]
        return " ".join(item for item in items if item) if joined else items
    raise UserError(
        f"the field '{field}' at line {line_number} of '{path}' is "
        f"{type(value).__name__ if value != [] else 'an empty list'}: it "
        "must be a string or a non-empty list of strings."
    )


def read_summarization(path, source_field="source", target_field="target"):
    """Reads a JSON Lines file of documents and summaries.

    A list-valued `source_field` (sentences) is joined with spaces; a
    list-valued `target_field` holds several references, the first of which
    trains. Blank lines are skipped.

    Raises:
        UserError: the file is missing, not UTF-8 or empty, a line is not a
            JSON object, or lacks a field, or a field is not text.
    """
    if not os.path.isfile(path):
        raise UserError(f"no summarization file '{path}': check the path.")
    sources, references = [], []
    try:
        with _open_text(path) as f:
            for line_number, record in json_lines.records(f, path, {
                source_field: "pass the right --source-field",
                target_field: "pass the right --target-field",
            }):
                sources.append(_field_text(
                    record[source_field], path, line_number, source_field,
                    joined=True,
                ))
                references.append(_field_text(
                    record[target_field], path, line_number, target_field,
                    joined=False,
                ))
    except UnicodeDecodeError:
        raise UserError(f"'{path}' is not UTF-8 text: convert it.") from None
    except (OSError, EOFError) as e:
        raise UserError(f"cannot read '{path}' ({e}).") from None
    if not sources:
        raise UserError(
            f"'{path}' is empty: a summarization file holds one JSON object "
            f"per line, with '{source_field}' and '{target_field}'."
        )
    return ParallelData(
        sources=sources,
        targets=[refs[0] for refs in references],
        references=references,
        name=path,
    )


def read_parallel(task, paths, source_field="source", target_field="target",
                  flag="--data"):
    """The `ParallelData` of a task's files: `SOURCE_FILE TARGET_FILE` for
    translation, one JSONL file for summarization.

    Raises:
        UserError: the wrong number of files, or a bad file.
    """
    paths = list(paths)
    if task == "translation":
        if len(paths) != 2:
            raise UserError(
                f"translation reads SOURCE_FILE TARGET_FILE (two line-"
                f"aligned files); {flag} names {len(paths)}."
            )
        return read_translation(*paths)
    if len(paths) != 1:
        raise UserError(
            f"summarization reads one JSON Lines file; {flag} names "
            f"{len(paths)}."
        )
    return read_summarization(paths[0], source_field, target_field)


def split_validation(data, fraction, seed):
    """`(train, validation)`: a seeded `fraction` of the examples held out,
    both parts in file order.

    Raises:
        UserError: either part would be empty.
    """
    count = len(data)
    held = int(round(count * fraction))
    if held < 1 or held >= count:
        raise UserError(
            f"{count:,} examples in {data.name} are too few to hold out a "
            f"validation fraction of {fraction:g} ({held:,} for validation, "
            f"{count - held:,} for training): pass --validation-data, "
            "another --validation-fraction or more data."
        )
    order = np.random.default_rng(seed).permutation(count)
    validation = np.sort(order[:held])
    train = np.sort(order[held:])
    return (
        data.subset(train, f"{1 - fraction:g} of {data.name}"),
        data.subset(validation, f"{fraction:g} of {data.name}"),
    )


# === Tokens ===


def token_lists(tokenizer, texts):
    """Each text's token ids (no special tokens), as int32 arrays."""
    lists = []
    for start in range(0, len(texts), TOKENIZE_CHUNK):
        ids = tokenizer.tokenize(
            tf.constant(texts[start : start + TOKENIZE_CHUNK], tf.string)
        )
        values = ids.flat_values.numpy().astype(np.int32)
        splits = ids.row_splits.numpy()
        lists.extend(values[a:b] for a, b in zip(splits[:-1], splits[1:]))
    return lists


def source_token_ids(tokenizer, texts, sequence_length):
    """`(batch,)` strings -> int32 `(batch, width)` encoder inputs in
    TensorFlow ops (for SavedModel graphs): `[EOS]` and the text's tokens,
    cut to `sequence_length`, right-padded to the longest row. The same ids
    as `tokenize_pairs`' `encoder_ids`, up to padding."""
    ids = tf.cast(tokenizer.tokenize(texts), tf.int32)
    start = tf.fill([tf.shape(texts)[0], 1], tokenizer.eos_id)
    ids = tf.concat([tf.RaggedTensor.from_tensor(start), ids], axis=1)
    return ids[:, :sequence_length].to_tensor(default_value=tokenizer.pad_id)


def pad_rows(rows, width, pad_id=0):
    """A list of int sequences -> int32 `(len(rows), width)`, cut and
    right-padded."""
    array = np.full((len(rows), width), pad_id, np.int32)
    for i, row in enumerate(rows):
        row = row[:width]
        array[i, : len(row)] = row
    return array


@dataclasses.dataclass
class TokenizedPairs:
    """Id arrays of `ParallelData`.

    Attributes:
        encoder_ids: int32 `(n, source_width)`: `[EOS]` + source, cut to
            the sequence length, padded with 0.
        target_ids: int32 `(n, target_width + 1)`: `[EOS]` + target +
            `[EOS]`, cut to `target_sequence_length + 1`, padded with 0;
            `[:, :-1]` feeds the decoder and `[:, 1:]` are its labels.
        source_truncated: share of sources cut.
        target_truncated: share of targets cut (their end token too).
        source_unknown_rate, target_unknown_rate: share of the tokens that
            are `[UNK]`, before cutting.
    """

    encoder_ids: np.ndarray
    target_ids: np.ndarray
    source_truncated: float
    target_truncated: float
    source_unknown_rate: float
    target_unknown_rate: float

    def __len__(self):
        return len(self.encoder_ids)


def tokenize_pairs(tokenizer, data, sequence_length, target_sequence_length):
    """`ParallelData` -> `TokenizedPairs`.

    Arrays are as wide as their longest row, at most `sequence_length`
    (sources, `[EOS]` included) and `target_sequence_length` (decoder
    inputs and labels), so a data set of short sentences does not carry
    padding up to the model's limits.
    """
    if not len(data):
        raise ValueError("tokenize_pairs needs at least one example")
    eos = tokenizer.eos_id
    sources = token_lists(tokenizer, data.sources)
    targets = token_lists(tokenizer, data.targets)
    source_rows = [np.concatenate([[eos], ids]) for ids in sources]
    target_rows = [np.concatenate([[eos], ids, [eos]]) for ids in targets]
    source_width = min(sequence_length, max(map(len, source_rows)))
    # Decoder inputs and labels are one shorter than [EOS] target [EOS].
    target_width = min(target_sequence_length,
                       max(map(len, target_rows)) - 1)

    def unknown_rate(lists):
        total = sum(len(ids) for ids in lists)
        unknown = sum(int((ids == tokenizer.unk_id).sum()) for ids in lists)
        return unknown / max(1, total)

    return TokenizedPairs(
        encoder_ids=pad_rows(source_rows, source_width, tokenizer.pad_id),
        target_ids=pad_rows(target_rows, target_width + 1, tokenizer.pad_id),
        source_truncated=float(np.mean(
            [len(row) > sequence_length for row in source_rows])),
        target_truncated=float(np.mean(
            [len(row) - 1 > target_sequence_length for row in target_rows])),
        source_unknown_rate=unknown_rate(sources),
        target_unknown_rate=unknown_rate(targets),
    )


# === Batches ===


def _model_batch(encoder_ids, target_ids):
    labels = target_ids[:, 1:]
    inputs = {
        "encoder_token_ids": encoder_ids,
        "decoder_token_ids": target_ids[:, :-1],
    }
    return inputs, labels, tf.cast(tf.not_equal(labels, 0), tf.float32)


def seq2seq_dataset(pairs, batch_size, training, seed=0, start_step=0):
    """A `tf.data.Dataset` of `Seq2SeqLM` batches.

    Training data is an endless stream in which batch `s` is a pure
    function of `(seed, s)`: each pass over the examples is a fresh
    permutation (`tf.random.experimental.index_shuffle` keyed by the seed
    and the pass, as in `keras_tfm.data.pipeline.make_dataset`), so
    starting at `start_step` resumes exactly where a run stopped. Every
    training batch has the same shape (one compilation). Evaluation data is
    one pass in order, the last batch possibly smaller.

    Args:
        pairs: `TokenizedPairs`.
        batch_size: int. Examples per batch.
        training: bool. The shuffled endless stream if true.
        seed: int. Seeds the order. Defaults to `0`.
        start_step: int. The first training batch to produce. Defaults to
            `0`.

    Returns:
        Batches `({"encoder_token_ids", "decoder_token_ids"}, labels,
        sample_weight)`: int32 `(batch, source_width)`, int32 `(batch,
        target_width)` twice, and float32 `(batch, target_width)`, 0 at
        padding.
    """
    encoder_ids = tf.constant(pairs.encoder_ids)
    target_ids = tf.constant(pairs.target_ids)
    if training:
        count = len(pairs)

        def example(index):
            # Example i of the stream: pass i // count, position i % count.
            pass_seed = tf.stack([tf.constant(seed, tf.int64), index // count])
            position = tf.random.experimental.index_shuffle(
                index % count, pass_seed, count - 1
            )
            return (tf.gather(encoder_ids, position),
                    tf.gather(target_ids, position))

        dataset = tf.data.Dataset.range(
            start_step * batch_size, np.iinfo(np.int64).max
        ).map(example, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        dataset = dataset.batch(batch_size, drop_remainder=True)
    else:
        dataset = tf.data.Dataset.from_tensor_slices((encoder_ids, target_ids))
        dataset = dataset.batch(batch_size)
    dataset = dataset.map(_model_batch, num_parallel_calls=tf.data.AUTOTUNE,
                          deterministic=True)
    options = tf.data.Options()
    # As in `make_dataset`: under MultiWorkerMirroredStrategy each worker
    # builds the same stream and keeps its share of every global batch.
    options.experimental_distribute.auto_shard_policy = (
        tf.data.experimental.AutoShardPolicy.DATA
    )
    return dataset.with_options(options).prefetch(tf.data.AUTOTUNE)
