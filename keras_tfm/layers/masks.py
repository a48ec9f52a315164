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
    attention_mask=None,
):
    """Combines a key padding mask, a causal mask and an explicit mask.

    Args:
        padding_mask: `None` or a `(batch_size, key_length)` tensor, true (or
            1) at real tokens and false (or 0) at padding.
        use_causal_mask: bool. Whether a query may not see later keys.
        attention_mask: `None` or a `(batch_size, query_length,
            key_length)` tensor, true where a query may see a key (e.g.
            `document_attention_mask`).

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
    if attention_mask is not None:
        attention_mask = ops.cast(attention_mask, "bool")
        mask = (
            attention_mask if mask is None
            else ops.logical_and(mask, attention_mask)
        )
    return mask


def document_ids(token_ids, eos_id):
    """Which document of its window each token belongs to, `(batch, seq)`.

    Windows of packed text run across documents; `[EOS]` ends one, so the
    token after it starts the next (`[EOS]` belongs to the document it
    ends): `[5, 6, 3, 7, 3, 3, 8]` -> `[0, 0, 0, 1, 1, 2, 3]`.
    """
    ends = ops.cast(ops.equal(token_ids, eos_id), "int32")
    return ops.cumsum(ends, axis=-1) - ends


def document_attention_mask(token_ids, eos_id):
    """`(batch, seq, seq)`: true where query and key share a document."""
    return document_masking(token_ids, eos_id)[0]


def document_masking(token_ids, eos_id):
    """`(attention_mask, positions)` of packed windows: the mask of
    `document_attention_mask` and the positions of
    `positions_in_documents`, from one count.

    The mask is built as `start[q] <= k <= end[q]` from each query's
    document span, not as `document[q] == document[k]`: the same mask,
    but XLA on CPU fuses a compare against per-query bounds into the
    attention's softmax as it does the causal mask, while the equality of
    two id vectors doubled the forward pass at sequence length 512
    (docs/performance.md, "Document packing").
    """
    index, start, end, before = _spans(token_ids, eos_id)
    keys = index[:, None, :]
    mask = ops.logical_and(
        ops.greater_equal(keys, start[:, :, None]),
        ops.less_equal(keys, end[:, :, None]),
    )
    return mask, before


def document_spans(token_ids, eos_id):
    """`(start, end)`, each `(batch, seq)`: the window index of the first
    and last token of each token's document (`end` inclusive, at its
    `[EOS]` or the window's end): `[5, 6, 3, 7, 3, 3, 8]` -> start `[0, 0,
    0, 3, 3, 5, 6]`, end `[2, 2, 2, 4, 4, 5, 6]`."""
    _, start, end, _ = _spans(token_ids, eos_id)
    return start, end


def positions_in_documents(token_ids, eos_id):
    """Each token's position in its document, restarting after `[EOS]`:
    `[5, 6, 3, 7, 3, 3, 8]` -> `[0, 1, 2, 0, 1, 0, 0]`."""
    before, _ = _document_counts(token_ids, eos_id,
                                 _window_index(token_ids))
    return before


def _spans(token_ids, eos_id):
    """`(index, start, end, before)`: each token's window index, its
    document's first and last index, and its position in the document."""
    index = _window_index(token_ids)
    before, after = _document_counts(token_ids, eos_id, index)
    return index, index - before, index + after, before


def _window_index(token_ids):
    """Each token's index in its window, `(batch, seq)`, from the tensor
    itself (its length may be unknown while a functional model is
    built)."""
    return ops.cumsum(ops.ones_like(token_ids, dtype="int32"), axis=-1) - 1


def _document_counts(token_ids, eos_id, index):
    """`(before, after)`, `(batch, seq)`: how many tokens of the same
    document come before and after each token in its window (`index`:
    `_window_index(token_ids)`). Counted over `(batch, seq, seq)` pairs (no
    search: fine under XLA, and cheap next to attention)."""
    documents = document_ids(token_ids, eos_id)
    same = ops.equal(documents[:, :, None], documents[:, None, :])
    # earlier[b, q, k]: key k is at or before query q.
    earlier = ops.less_equal(index[:, None, :], index[:, :, None])
    count = ops.sum(ops.cast(same, "int32"), axis=-1)
    before = ops.sum(ops.cast(ops.logical_and(same, earlier), "int32"), -1)
    return before - 1, count - before
