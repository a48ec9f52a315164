"""Token windows to `tf.data` batches for `fit` and `evaluate`."""

import numpy as np
import tensorflow as tf

from keras_tfm.data.masking import mask_tokens


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
            pass_seed = tf.stack(
                [tf.constant(seed, tf.int64), example // count]
            )
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
