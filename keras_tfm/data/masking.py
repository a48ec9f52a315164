"""BERT's masking of token ids for the masked-LM objective."""

import tensorflow as tf


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
