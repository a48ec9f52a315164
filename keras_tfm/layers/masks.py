"""Attention masks: `True` where a query may attend to a key."""

from keras import ops


def compute_causal_mask(query_length, key_length, query_start=0):
    """Lower-triangular mask of shape `(query_length, key_length)`.

    Query `i` sits at absolute position `query_start + i` and may attend to
    keys at positions `<=` its own. With a KV cache, `key_length` is the
    cache's length and `query_start` the cache update index, so the cache
    slots not yet written (positions after the query) are masked too.
    """
    query_positions = ops.arange(query_length)[:, None] + query_start
    key_positions = ops.arange(key_length)[None, :]
    return ops.greater_equal(query_positions, key_positions)


def merge_attention_masks(
    query_length,
    key_length,
    padding_mask=None,
    use_causal_mask=False,
    query_start=0,
):
    """Combines a key padding mask and a causal mask.

    Args:
        padding_mask: `None` or a `(batch_size, key_length)` tensor, true (or
            1) at real tokens and false (or 0) at padding.
        use_causal_mask: bool. Whether a query may not see later keys.

    Returns:
        `None` when there is nothing to mask, else a boolean tensor that
        broadcasts to `(batch_size, query_length, key_length)`.
    """
    mask = None
    if padding_mask is not None:
        # (batch, 1, key_length): a padded key is hidden from every query.
        mask = ops.cast(padding_mask, "bool")[:, None, :]
    if use_causal_mask:
        causal = compute_causal_mask(query_length, key_length, query_start)
        causal = causal[None, :, :]
        mask = causal if mask is None else ops.logical_and(mask, causal)
    return mask
