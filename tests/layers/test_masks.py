import numpy as np

from keras_tfm.layers import compute_causal_mask
from keras_tfm.layers import merge_attention_masks


def test_causal_mask_is_lower_triangular():
    mask = np.asarray(compute_causal_mask(3, 3))
    np.testing.assert_array_equal(mask, np.tril(np.ones((3, 3), bool)))


def test_causal_mask_with_cache_offset():
    # Query at absolute position 2 against a cache of 4 slots.
    mask = np.asarray(compute_causal_mask(1, 4, query_start=2))
    np.testing.assert_array_equal(mask, [[True, True, True, False]])


def test_merge_padding_and_causal():
    padding = np.array([[1, 1, 0]])
    mask = np.asarray(
        merge_attention_masks(3, 3, padding_mask=padding, use_causal_mask=True)
    )
    expected = np.tril(np.ones((3, 3), bool)) & np.array([True, True, False])
    np.testing.assert_array_equal(mask[0], expected)
    assert merge_attention_masks(3, 3) is None


def test_documents_and_positions_by_hand():
    from keras_tfm.layers.masks import document_attention_mask
    from keras_tfm.layers.masks import document_ids
    from keras_tfm.layers.masks import positions_in_documents

    ids = np.array([[5, 6, 3, 7, 3, 3, 8]])
    np.testing.assert_array_equal(document_ids(ids, 3), [[0, 0, 0, 1, 1, 2,
                                                          3]])
    np.testing.assert_array_equal(positions_in_documents(ids, 3),
                                  [[0, 1, 2, 0, 1, 0, 0]])
    same = np.asarray(document_attention_mask(ids, 3))[0]
    assert same[1, 0] and same[2, 0] and not same[3, 2] and same[4, 3]
    assert not same[6, 5] and same[6, 6]


def test_documents_and_positions_under_xla():
    import tensorflow as tf

    from keras_tfm.layers.masks import document_ids
    from keras_tfm.layers.masks import positions_in_documents

    tokens = tf.constant([[5, 6, 3, 7, 3, 3, 8], [3, 9, 9, 3, 9, 9, 9]])
    compiled = tf.function(
        lambda t: (document_ids(t, 3), positions_in_documents(t, 3)),
        jit_compile=True)
    documents, positions = compiled(tokens)
    assert documents.numpy().tolist() == [[0, 0, 0, 1, 1, 2, 3],
                                          [0, 1, 1, 1, 2, 2, 2]]
    assert positions.numpy().tolist() == [[0, 1, 2, 0, 1, 0, 0],
                                          [0, 0, 1, 2, 0, 1, 2]]


def test_document_spans_by_hand():
    from keras_tfm.layers.masks import document_spans

    start, end = document_spans(np.array([[5, 6, 3, 7, 3, 3, 8]]), 3)
    np.testing.assert_array_equal(start, [[0, 0, 0, 3, 3, 5, 6]])
    np.testing.assert_array_equal(end, [[2, 2, 2, 4, 4, 5, 6]])


def test_document_mask_equals_same_document_ids_under_xla():
    # The mask is built from spans (for speed); numpy's equality of
    # document ids is the definition it must match.
    import tensorflow as tf

    from keras_tfm.layers.masks import document_attention_mask

    rng = np.random.default_rng(0)
    tokens = rng.integers(3, 6, (4, 33))
    tokens[0] = 5  # a window inside one document
    tokens[1, -1] = 3  # one that ends with [EOS]
    documents = np.cumsum(tokens == 3, axis=-1) - (tokens == 3)
    expected = documents[:, :, None] == documents[:, None, :]
    compiled = tf.function(lambda t: document_attention_mask(t, 3),
                           jit_compile=True)
    np.testing.assert_array_equal(compiled(tf.constant(tokens)), expected)
