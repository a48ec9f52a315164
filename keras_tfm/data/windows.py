"""From text in memory to train and validation windows of token ids.

1. tokenize every document in TensorFlow ops (the tokenizer's in-graph
   `tokenize`) and concatenate them into one token stream, with `[EOS]`
   after each document;
2. pack the stream into disjoint windows of `sequence_length + 1` tokens
   (inputs are the first `sequence_length`, targets the last, shifted by
   one), so no token is a training and a validation target at once;
3. split: consecutive windows form blocks, and a seeded shuffle sends
   `validation_fraction` of the blocks to validation. Contiguous blocks keep
   neighbouring text (which is alike) on one side of the split; the same
   seed gives the same split.

`keras_tfm.data.pipeline.make_dataset` turns the windows into batches.
This path holds the corpus in memory; `keras-tfm prepare` writes shards
for corpora that do not fit.
"""

import dataclasses
import math

import numpy as np
import tensorflow as tf

from keras_tfm.errors import UserError

# Windows per split block; fewer when the corpus is too small for it.
WINDOWS_PER_BLOCK = 8


def tokenize_stream(tokenizer, texts, batch_size=64):
    """Tokenizes documents into one stream, `[EOS]` after each.

    Returns:
        `(ids, byte_lengths)`, two int32 numpy arrays of equal length: the
        token ids and the UTF-8 bytes each covers (0 for `[EOS]`).
    """
    ids, lengths = [], []
    for start in range(0, len(texts), batch_size):
        batch = tf.constant(texts[start : start + batch_size], dtype=tf.string)
        batch_ids, batch_lengths = tokenizer.tokenize_with_byte_lengths(batch)
        for doc_ids, doc_lengths in zip(
            batch_ids.numpy(), batch_lengths.numpy()
        ):
            ids.extend([doc_ids, [tokenizer.eos_id]])
            lengths.extend([doc_lengths, [0]])
    return (
        np.concatenate(ids).astype(np.int32),
        np.concatenate(lengths).astype(np.int32),
    )


@dataclasses.dataclass
class Windows:
    """Token windows of `sequence_length + 1` and their byte counts.

    Attributes:
        tokens: `(num_windows, sequence_length + 1)` int32 ids.
        target_bytes: `(num_windows,)` UTF-8 bytes covered by the targets
            (tokens 1...), the denominator of bits per byte.
        target_unknown_bytes: `(num_windows,)` bytes hidden in `[UNK]`
            targets.
    """

    tokens: np.ndarray
    target_bytes: np.ndarray
    target_unknown_bytes: np.ndarray

    def __len__(self):
        return len(self.tokens)

    def subset(self, indices):
        return Windows(
            self.tokens[indices],
            self.target_bytes[indices],
            self.target_unknown_bytes[indices],
        )


def pack_windows(
    ids, byte_lengths, sequence_length, unk_id, pad_tail=False, overlap=False,
    pad_id=0,
):
    """Cuts a stream into windows of `sequence_length + 1` tokens.

    Args:
        pad_tail: keep the ragged tail in a last window filled up with
            `pad_id`, which evaluation ignores; else drop it.
        overlap: start a window every `sequence_length` tokens, so each
            window's first token (context only) is the previous window's
            last target and every token after the first is predicted once;
            for evaluating a text. Otherwise windows are disjoint, as a
            train/validation split needs.
    """
    if len(byte_lengths) != len(ids):
        raise ValueError(
            f"{len(ids)} token ids but {len(byte_lengths)} byte lengths: "
            "one byte length per token"
        )
    width = sequence_length + 1
    step = sequence_length if overlap else width
    if pad_tail:
        count = max(1, math.ceil((len(ids) - (width - step)) / step))
        padding = max(0, (count - 1) * step + width - len(ids))
        ids = np.concatenate([ids, np.full(padding, pad_id, ids.dtype)])
        byte_lengths = np.concatenate(
            [byte_lengths, np.zeros(padding, byte_lengths.dtype)]
        )
    else:
        count = max(0, (len(ids) - width) // step + 1)
    if count == 0:
        empty = np.zeros(0, np.int64)
        return Windows(np.zeros((0, width), ids.dtype), empty, empty)
    # Strided views, not an index array: a corpus's validation split can
    # be millions of tokens, and a `(count, width)` int64 index and its
    # gathers would hold several copies of it at once.
    view = np.lib.stride_tricks.sliding_window_view
    # A copy, not a view of the caller's array.
    tokens = np.array(view(ids, width)[::step][:count])
    lengths = view(byte_lengths, width)[::step][:count, 1:]
    target_bytes = lengths.sum(axis=1, dtype=np.int64)
    unknown = np.zeros(count, np.int64)
    rows, columns = np.nonzero(tokens[:, 1:] == unk_id)
    np.add.at(unknown, rows, lengths[rows, columns])
    return Windows(tokens, target_bytes, unknown)


def split_windows(num_windows, validation_fraction, seed):
    """Indices of train and validation windows, by contiguous blocks."""
    if num_windows < 2:
        raise ValueError("need at least two windows to split")
    block = max(1, min(WINDOWS_PER_BLOCK, num_windows // 10))
    num_blocks = math.ceil(num_windows / block)
    num_validation = min(
        num_blocks - 1, max(1, round(validation_fraction * num_blocks))
    )
    order = np.random.default_rng(seed).permutation(num_blocks)
    is_validation = np.zeros(num_blocks, dtype=bool)
    is_validation[order[:num_validation]] = True
    window_is_validation = np.repeat(is_validation, block)[:num_windows]
    indices = np.arange(num_windows)
    return indices[~window_is_validation], indices[window_is_validation]


@dataclasses.dataclass
class LMData:
    """A corpus prepared for language modelling.

    Attributes:
        train: `Windows` for training.
        validation: `Windows` for validation.
        sequence_length: int.
        stats: dict of corpus figures (tokens, bytes, sequences).
    """

    train: Windows
    validation: Windows
    sequence_length: int
    stats: dict


def prepare_lm_data(
    tokenizer, texts, sequence_length, validation_fraction=0.1, seed=0
):
    """Tokenizes, packs and splits texts into train and validation windows.

    Raises:
        UserError: the corpus is too short for one training and one
            validation sequence.
    """
    ids, byte_lengths = tokenize_stream(tokenizer, texts)
    needed = 2 * (sequence_length + 1)
    if len(ids) < needed:
        raise UserError(
            f"the corpus has {len(ids)} tokens, shorter than one training "
            f"and one validation sequence ({needed} tokens at "
            f"sequence_length {sequence_length}): add text or lower "
            "--sequence-length."
        )
    windows = pack_windows(ids, byte_lengths, sequence_length, tokenizer.unk_id)
    train_index, validation_index = split_windows(
        len(windows), validation_fraction, seed
    )
    train, validation = windows.subset(train_index), windows.subset(
        validation_index
    )
    stats = {
        "corpus_tokens": int(len(ids)),
        "corpus_bytes": int(byte_lengths.sum()),
        "train_sequences": len(train),
        "validation_sequences": len(validation),
        "validation_unknown_rate": float(
            np.mean(validation.tokens[:, 1:] == tokenizer.unk_id)
        ),
    }
    return LMData(train, validation, sequence_length, stats)
