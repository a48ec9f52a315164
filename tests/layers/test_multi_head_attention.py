import numpy as np
import pytest
from layer_test_utils import run_layer_test
from numpy_reference import attention
from numpy_reference import causal_mask

from keras_tfm.layers import MultiHeadAttention

BATCH, SEQ, HIDDEN, HEADS = 2, 5, 8, 2


def random_inputs(shape=(BATCH, SEQ, HIDDEN)):
    return np.random.normal(size=shape).astype("float32")


def built_layer(**kwargs):
    layer = MultiHeadAttention(num_heads=HEADS, **kwargs)
    layer.build((None, None, HIDDEN))
    # Hand-set weights (random, but known to the NumPy reference).
    rng = np.random.default_rng(0)
    weights = [rng.normal(size=w.shape).astype("float32") * 0.5
               for w in layer.get_weights()]
    layer.set_weights(weights)
    return layer, weights


@pytest.mark.parametrize("use_causal_mask", [False, True])
def test_layer_basics(use_causal_mask):
    run_layer_test(
        MultiHeadAttention,
        init_kwargs={"num_heads": HEADS, "dropout": 0.0, "use_bias": True},
        input_data=random_inputs(),
        expected_output_shape=(BATCH, SEQ, HIDDEN),
        expected_num_trainable_weights=4,
        call_kwargs={"use_causal_mask": use_causal_mask},
    )


@pytest.mark.parametrize("use_fused_attention", [True, False])
@pytest.mark.parametrize("use_causal_mask", [False, True])
def test_matches_numpy_softmax_attention(use_fused_attention, use_causal_mask):
    layer, (qkv_k, qkv_b, out_k, out_b) = built_layer(
        use_fused_attention=use_fused_attention
    )
    x = random_inputs()
    padding = np.ones((BATCH, SEQ), bool)
    padding[1, -2:] = False
    mask = np.broadcast_to(padding[:, None, :], (BATCH, SEQ, SEQ))
    if use_causal_mask:
        mask = mask & causal_mask(BATCH, SEQ)
    expected = attention(x, qkv_k, qkv_b, out_k, out_b, HEADS, mask)
    out = layer(x, padding_mask=padding, use_causal_mask=use_causal_mask)
    np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-4)


def test_hand_set_identity_weights_give_exact_numbers():
    # One head, hidden 2: Q = K = V = x and output = attention output.
    layer = MultiHeadAttention(num_heads=1, use_bias=False)
    layer.build((None, None, 2))
    eye = np.eye(2, dtype="float32")
    layer.set_weights([np.concatenate([eye, eye, eye], axis=1), eye])
    x = np.array([[[1.0, 0.0], [0.0, 1.0]]], "float32")
    out, scores = layer(x, return_attention_scores=True)
    # Scores: softmax([1, 0] / sqrt(2)) for row 0, softmax([0, 1] / ...).
    p = 1.0 / (1.0 + np.exp(-1.0 / np.sqrt(2.0)))
    np.testing.assert_allclose(
        scores[0, 0], [[p, 1 - p], [1 - p, p]], atol=1e-6
    )
    np.testing.assert_allclose(out[0], [[p, 1 - p], [1 - p, p]], atol=1e-6)


def test_padded_position_changes_no_other_output():
    layer, _ = built_layer()
    x = random_inputs()
    padding = np.ones((BATCH, SEQ), bool)
    padding[:, 3] = False
    changed = x.copy()
    changed[:, 3] += 10.0
    a = np.asarray(layer(x, padding_mask=padding))
    b = np.asarray(layer(changed, padding_mask=padding))
    keep = [0, 1, 2, 4]
    np.testing.assert_allclose(a[:, keep], b[:, keep], atol=1e-5)


def test_future_token_never_changes_earlier_output():
    layer, _ = built_layer()
    x = random_inputs()
    for t in range(SEQ - 1):
        changed = x.copy()
        changed[:, t + 1 :] = random_inputs((BATCH, SEQ - t - 1, HIDDEN))
        a = np.asarray(layer(x, use_causal_mask=True))
        b = np.asarray(layer(changed, use_causal_mask=True))
        np.testing.assert_allclose(a[:, : t + 1], b[:, : t + 1], atol=1e-5)
        assert not np.allclose(a[:, t + 1 :], b[:, t + 1 :])


@pytest.mark.parametrize("rotary", [None, 10000])
def test_cached_decoding_equals_full_forward(rotary):
    layer, _ = built_layer(rotary_max_wavelength=rotary)
    x = random_inputs()
    full = np.asarray(layer(x, use_causal_mask=True))
    head_dim = HIDDEN // HEADS
    cache = np.zeros((BATCH, 2, SEQ, HEADS, head_dim), "float32")
    # Prefill two tokens, then decode one at a time.
    out, cache = layer(
        x[:, :2], use_causal_mask=True, cache=cache, cache_update_index=0
    )
    outputs = [np.asarray(out)]
    for t in range(2, SEQ):
        out, cache = layer(
            x[:, t : t + 1],
            use_causal_mask=True,
            cache=cache,
            cache_update_index=t,
        )
        outputs.append(np.asarray(out))
    np.testing.assert_allclose(
        np.concatenate(outputs, axis=1), full, rtol=1e-5, atol=1e-5
    )


def test_attention_scores_are_masked_probabilities():
    layer, _ = built_layer()
    _, scores = layer(
        random_inputs(), use_causal_mask=True, return_attention_scores=True
    )
    scores = np.asarray(scores)
    assert scores.shape == (BATCH, HEADS, SEQ, SEQ)
    np.testing.assert_allclose(scores.sum(-1), 1.0, atol=1e-6)
    assert np.all(
        scores[..., np.triu_indices(SEQ, 1)[0], np.triu_indices(SEQ, 1)[1]]
        == 0
    )


def test_dropout_only_in_training():
    layer, _ = built_layer(dropout=0.5)
    x = random_inputs()
    np.testing.assert_allclose(layer(x), layer(x, training=False))
    assert not np.allclose(layer(x, training=True), layer(x))


def test_hidden_dim_not_divisible_by_heads():
    layer = MultiHeadAttention(num_heads=3)
    with pytest.raises(ValueError, match="divisible by num_heads"):
        layer(random_inputs())


def test_rejects_bad_num_heads():
    with pytest.raises(ValueError, match="num_heads"):
        MultiHeadAttention(num_heads=0)


def test_bounded_masking_equals_the_usual_softmax():
    # The int8-friendly form used for integer TFLite export.
    layer, _ = built_layer()
    x = random_inputs()
    padding = np.ones((BATCH, SEQ), bool)
    padding[1, -2:] = False
    usual = np.asarray(layer(x, padding_mask=padding, use_causal_mask=True))
    layer.bounded_masking = True
    bounded = np.asarray(layer(x, padding_mask=padding, use_causal_mask=True))
    np.testing.assert_allclose(bounded, usual, atol=1e-5)
    # Even when hidden keys would score far above the visible ones.
    x[:, -1] *= 50.0
    layer.bounded_masking = False
    usual = np.asarray(layer(x, use_causal_mask=True))
    layer.bounded_masking = True
    bounded = np.asarray(layer(x, use_causal_mask=True))
    np.testing.assert_allclose(bounded[:, :-1], usual[:, :-1], atol=1e-4)
    assert "bounded_masking" not in layer.get_config()


def test_cache_with_a_padding_mask_equals_the_full_pass():
    # Left-padded prompts, as a batch of prompts of different lengths is
    # decoded: the cache holds the pads' keys too, and the padding mask
    # (over the cache's length) must hide them at every step.
    layer, weights = built_layer()
    x = random_inputs((BATCH, 6, HIDDEN))
    padding = np.ones((BATCH, 6), bool)
    padding[1, :2] = False
    full = np.asarray(layer(x, padding_mask=padding, use_causal_mask=True))
    # NumPy, independently: causal and padding masks combined.
    mask = causal_mask(BATCH, 6) & padding[:, None, :]
    expected = attention(x, *weights, HEADS, mask)
    real = padding  # queries at pads attend to nothing; compare real ones
    np.testing.assert_allclose(full[real], expected[real], atol=1e-5)

    cache = np.zeros((BATCH, 2, 6, HEADS, HIDDEN // HEADS), "float32")
    out, cache = layer(x[:, :3], padding_mask=padding, use_causal_mask=True,
                       cache=cache, cache_update_index=0)
    steps = [np.asarray(out)]
    for t in range(3, 6):
        out, cache = layer(x[:, t:t + 1], padding_mask=padding,
                           use_causal_mask=True, cache=cache,
                           cache_update_index=t)
        steps.append(np.asarray(out))
    cached = np.concatenate(steps, axis=1)
    np.testing.assert_allclose(cached[real], expected[real], atol=1e-5)
