"""From text to packed, batched token sequences in `tf.data`.

The pipeline:

1. tokenize every document in TensorFlow ops (the tokenizer's in-graph
   `tokenize`) and concatenate them into one token stream, with `[EOS]`
   after each document;
2. pack the stream into disjoint windows of `sequence_length + 1` tokens
   (inputs are the first `sequence_length`, targets the last, shifted by
   one), so no token is a training and a validation target at once;
3. split: consecutive windows form blocks, and a seeded shuffle sends
   `validation_fraction` of the blocks to validation. Contiguous blocks keep
   neighbouring text (which is alike) on one side of the split; the same
   seed gives the same split;
4. `tf.data`: cache, shuffle (train), repeat, batch, mask (masked LM) and
   prefetch.
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
    ids, byte_lengths, sequence_length, unk_id, pad_tail=False, overlap=False
):
    """Cuts a stream into windows of `sequence_length + 1` tokens.

    Args:
        pad_tail: keep the ragged tail in a last window filled up with
            `[PAD]` (id 0), which evaluation ignores; else drop it.
        overlap: start a window every `sequence_length` tokens, so each
            window's first token (context only) is the previous window's
            last target and every token after the first is predicted once;
            for evaluating a text. Otherwise windows are disjoint, as a
            train/validation split needs.
    """
    width = sequence_length + 1
    step = sequence_length if overlap else width
    if pad_tail:
        count = max(1, math.ceil((len(ids) - (width - step)) / step))
        padding = max(0, (count - 1) * step + width - len(ids))
        ids = np.concatenate([ids, np.zeros(padding, ids.dtype)])
        byte_lengths = np.concatenate(
            [byte_lengths, np.zeros(padding, byte_lengths.dtype)]
        )
    else:
        count = max(0, (len(ids) - width) // step + 1)
    index = np.arange(count)[:, None] * step + np.arange(width)[None, :]
    tokens = ids[index]
    lengths = byte_lengths[index][:, 1:]
    unknown = np.where(tokens[:, 1:] == unk_id, lengths, 0)
    return Windows(tokens, lengths.sum(axis=1), unknown.sum(axis=1))


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
        stats: dict of corpus figures (tokens, bytes, unigram baseline).
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
        "unigram_bits_per_byte": unigram_bits_per_byte(
            train, validation, tokenizer.vocabulary_size
        ),
    }
    return LMData(train, validation, sequence_length, stats)


def unigram_bits_per_byte(train, validation, vocabulary_size):
    """Bits per byte of validation targets under train-set token counts.

    The baseline a language model must beat: each token coded by its
    add-one-smoothed frequency, ignoring all context.
    """
    counts = np.bincount(
        train.tokens[:, 1:].ravel(), minlength=vocabulary_size
    ).astype(np.float64)
    log2_probability = np.log2((counts + 1) / (counts.sum() + vocabulary_size))
    bits = -log2_probability[validation.tokens[:, 1:]].sum()
    return float(
        (bits + 8 * validation.target_unknown_bytes.sum())
        / max(1, validation.target_bytes.sum())
    )


def mask_tokens(token_ids, seed, mask_id, vocabulary_size, num_special_tokens,
                mask_rate=0.15):
    """BERT's masking: pick 15% of tokens; of those 80% become `[MASK]`,
    10% a random token and 10% stay unchanged.

    Special tokens are never picked. Stateless random ops keyed by `seed`
    (a `(2,)` int tensor) make the masking reproducible.

    Returns:
        `(masked_ids, labels, sample_weight)`: labels are the original ids,
        and the weight is 1.0 at picked positions and 0.0 elsewhere, so the
        loss counts only picked positions.
    """
    seeds = tf.random.experimental.stateless_split(seed, num=3)
    shape = tf.shape(token_ids)
    pickable = token_ids >= num_special_tokens
    picked = tf.logical_and(
        tf.random.stateless_uniform(shape, seeds[0]) < mask_rate, pickable
    )
    choice = tf.random.stateless_uniform(shape, seeds[1])
    random_tokens = tf.random.stateless_uniform(
        shape,
        seeds[2],
        minval=num_special_tokens,
        maxval=vocabulary_size,
        dtype=tf.int32,
    )
    masked = tf.where(
        tf.logical_and(picked, choice < 0.8), mask_id, token_ids
    )
    masked = tf.where(
        tf.logical_and(picked, tf.logical_and(choice >= 0.8, choice < 0.9)),
        random_tokens,
        masked,
    )
    return masked, token_ids, tf.cast(picked, tf.float32)


def make_dataset(
    windows,
    batch_size,
    objective="causal",
    tokenizer=None,
    training=True,
    seed=0,
    start_step=0,
):
    """A `tf.data.Dataset` of batches for `model.fit` / `model.evaluate`.

    Causal batches are `(inputs, targets)`, targets shifted by one token.
    Masked-LM batches are `(masked_ids, ids, sample_weight)` over the first
    `sequence_length` tokens of each window.

    Training data is an endless stream in which batch `s` is a pure
    function of `(seed, s)`: each pass over the windows is a fresh
    permutation (`tf.random.experimental.index_shuffle` keyed by the seed
    and the pass), and masked-LM masks are keyed by the step. Starting at
    `start_step` therefore resumes the data exactly where a run stopped,
    without replaying it. Validation data is one pass in order, with the
    same masks every time. Batches have a fixed size (the tail is dropped),
    which XLA and `tf.distribute` want.

    Args:
        windows: `Windows` from `prepare_lm_data`.
        batch_size: int. The global batch size.
        objective: `"causal"` or `"masked"`.
        tokenizer: the tokenizer (its special ids), for `"masked"`.
        training: bool. The shuffled endless stream if true.
        seed: int. Seeds the order and the masking.
        start_step: int. The first training batch to produce.
    """
    if objective not in ("causal", "masked"):
        raise ValueError(f"unknown objective {objective!r}")
    if training:
        count = len(windows)
        tokens = tf.constant(windows.tokens)

        def window(example):
            # Example i of the stream: pass i // count, position i % count.
            pass_seed = tf.stack([tf.constant(seed, tf.int64), example // count])
            index = tf.random.experimental.index_shuffle(
                example % count, pass_seed, count - 1
            )
            return tf.gather(tokens, index)

        dataset = tf.data.Dataset.range(
            start_step * batch_size, np.iinfo(np.int64).max
        ).map(window, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        dataset = dataset.batch(batch_size, drop_remainder=True)
        steps = tf.data.Dataset.range(start_step, np.iinfo(np.int64).max)
    else:
        dataset = tf.data.Dataset.from_tensor_slices(windows.tokens)
        dataset = dataset.batch(batch_size, drop_remainder=True)
        steps = tf.data.Dataset.range(np.iinfo(np.int64).max)

    if objective == "causal":
        dataset = dataset.map(
            lambda w: (w[:, :-1], w[:, 1:]), num_parallel_calls=tf.data.AUTOTUNE
        )
    else:
        dataset = tf.data.Dataset.zip((dataset, steps)).map(
            lambda w, step: mask_tokens(
                w[:, :-1],
                tf.stack([tf.constant(seed, tf.int64), step]),
                tokenizer.mask_id,
                tokenizer.vocabulary_size,
                tokenizer.num_special_tokens,
            ),
            num_parallel_calls=tf.data.AUTOTUNE,
            deterministic=True,
        )
    options = tf.data.Options()
    # Under MultiWorkerMirroredStrategy each worker builds the same stream
    # and keeps its share of every global batch.
    options.experimental_distribute.auto_shard_policy = (
        tf.data.experimental.AutoShardPolicy.DATA
    )
    return dataset.with_options(options).prefetch(tf.data.AUTOTUNE)
