import keras
import numpy as np
import pytest
from layer_test_utils import run_layer_test
from numpy_reference import cross_attention

from keras_tfm.layers import CrossAttention

BATCH, TGT, SRC, HIDDEN, HEADS = 2, 4, 6, 8, 2


def random_inputs(shape):
    return np.random.normal(size=shape).astype("float32")


def source_padding():
    # Row 0 has two padded source positions, row 1 none.
    mask = np.ones((BATCH, SRC), bool)
    mask[0, -2:] = False
    return mask


def built_layer(**kwargs):
    layer = CrossAttention(num_heads=HEADS, **kwargs)
    layer.build((None, None, HIDDEN))
    rng = np.random.default_rng(0)
    layer.set_weights(
        [rng.normal(size=w.shape).astype("float32") * 0.5
         for w in layer.get_weights()]
    )
    return layer


def numpy_weights(layer):
    return {v.path.split("/", 1)[1]: v.numpy() for v in layer.weights}


def test_layer_basics():
    # The encoder outputs and mask ride along as constant call arguments.
    run_layer_test(
        CrossAttention,
        init_kwargs={"num_heads": HEADS, "dropout": 0.1},
        input_data=random_inputs((BATCH, TGT, HIDDEN)),
        expected_output_shape=(BATCH, TGT, HIDDEN),
        # query, key_value and output: kernel and bias each
        expected_num_trainable_weights=6,
        call_kwargs={
            "encoder_outputs": random_inputs((BATCH, SRC, HIDDEN)),
            "encoder_padding_mask": source_padding(),
        },
    )


def test_symbolic_encoder_input_save_round_trip_and_fit(tmp_path):
    # Both sides symbolic, lengths free: what a seq2seq model builds.
    targets = keras.Input((None, HIDDEN))
    memory = keras.Input((None, HIDDEN))
    mask = keras.Input((None,), dtype="bool")
    outputs = CrossAttention(num_heads=HEADS)(
        targets, encoder_outputs=memory, encoder_padding_mask=mask
    )
    assert tuple(outputs.shape) == (None, None, HIDDEN)
    model = keras.Model([targets, memory, mask], outputs)
    data = [
        random_inputs((BATCH, TGT, HIDDEN)),
        random_inputs((BATCH, SRC, HIDDEN)),
        source_padding(),
    ]
    path = str(tmp_path / "model.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    np.testing.assert_allclose(loaded(data), model(data), atol=1e-6)

    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    before = [w.numpy().copy() for w in model.trainable_weights]
    model.fit(data, np.ones((BATCH, TGT, HIDDEN)), verbose=0)
    for b, a in zip(before, model.trainable_weights):
        assert not np.allclose(b, a.numpy())


@pytest.mark.parametrize("use_fused_attention", [True, False])
def test_matches_numpy_reference(use_fused_attention):
    layer = built_layer(use_fused_attention=use_fused_attention)
    x = random_inputs((BATCH, TGT, HIDDEN))
    memory = random_inputs((BATCH, SRC, HIDDEN))
    padding = source_padding()
    w = numpy_weights(layer)
    expected, expected_scores = cross_attention(
        x, memory,
        w["query/kernel"], w["query/bias"],
        w["key_value/kernel"], w["key_value/bias"],
        w["output/kernel"], w["output/bias"],
        HEADS, np.broadcast_to(padding[:, None, :], (BATCH, TGT, SRC)),
    )
    out = layer(x, encoder_outputs=memory, encoder_padding_mask=padding)
    np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-4)
    out, scores = layer(
        x,
        encoder_outputs=memory,
        encoder_padding_mask=padding,
        return_attention_scores=True,
    )
    np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(scores, expected_scores, atol=1e-5)


def test_padded_source_position_changes_no_output():
    layer = built_layer()
    x = random_inputs((BATCH, TGT, HIDDEN))
    memory = random_inputs((BATCH, SRC, HIDDEN))
    changed = memory.copy()
    changed[0, -2:] = 100.0  # row 0's padded positions
    padding = source_padding()
    a, scores = layer(
        x, encoder_outputs=memory, encoder_padding_mask=padding,
        return_attention_scores=True,
    )
    b = layer(x, encoder_outputs=changed, encoder_padding_mask=padding)
    np.testing.assert_allclose(a, b, atol=1e-5)
    np.testing.assert_allclose(np.asarray(scores)[0, :, :, -2:], 0.0)
    # Without the mask the same change shows: the test can fail.
    c = layer(x, encoder_outputs=changed)
    assert not np.allclose(np.asarray(a)[0], np.asarray(c)[0], atol=1e-3)


def test_cache_holds_projected_keys_and_values():
    layer = built_layer()
    x = random_inputs((BATCH, TGT, HIDDEN))
    memory = random_inputs((BATCH, SRC, HIDDEN))
    cache = np.asarray(layer.compute_cache(memory))
    assert cache.shape == (BATCH, 2, SRC, HEADS, HIDDEN // HEADS)
    w = numpy_weights(layer)
    keys, values = np.split(
        memory @ w["key_value/kernel"] + w["key_value/bias"], 2, axis=-1
    )
    shape = (BATCH, SRC, HEADS, HIDDEN // HEADS)
    np.testing.assert_allclose(cache[:, 0], keys.reshape(shape), atol=1e-5)
    np.testing.assert_allclose(cache[:, 1], values.reshape(shape), atol=1e-5)

    padding = source_padding()
    full = layer(x, encoder_outputs=memory, encoder_padding_mask=padding)
    # One target position at a time against the cache, as decoding runs.
    steps = [
        layer(x[:, t : t + 1], cache=cache, encoder_padding_mask=padding)
        for t in range(TGT)
    ]
    np.testing.assert_allclose(np.concatenate(steps, 1), full, atol=1e-5)


def test_needs_exactly_one_of_encoder_outputs_and_cache():
    layer = built_layer()
    x = random_inputs((BATCH, TGT, HIDDEN))
    memory = random_inputs((BATCH, SRC, HIDDEN))
    with pytest.raises(ValueError, match="neither"):
        layer(x)
    with pytest.raises(ValueError, match="both"):
        layer(x, encoder_outputs=memory, cache=layer.compute_cache(memory))


def test_bounded_masking_gives_the_same_outputs():
    # The integer-export softmax path (inherited from MultiHeadAttention).
    layer = built_layer()
    x = random_inputs((BATCH, TGT, HIDDEN))
    memory = random_inputs((BATCH, SRC, HIDDEN))
    padding = source_padding()
    expected = layer(x, encoder_outputs=memory, encoder_padding_mask=padding)
    layer.bounded_masking = True
    out = layer(x, encoder_outputs=memory, encoder_padding_mask=padding)
    np.testing.assert_allclose(out, expected, atol=1e-5)


def test_mixed_precision():
    layer = CrossAttention(num_heads=HEADS, dtype="mixed_bfloat16")
    x = random_inputs((BATCH, TGT, HIDDEN))
    memory = random_inputs((BATCH, SRC, HIDDEN))
    out, scores = layer(
        x, encoder_outputs=memory, encoder_padding_mask=source_padding(),
        return_attention_scores=True,
    )
    assert out.dtype == "bfloat16" and scores.dtype == "bfloat16"
    assert layer.query_dense.kernel.dtype == "float32"
    assert layer.compute_cache(memory).dtype == "bfloat16"
    assert np.isfinite(np.asarray(keras.ops.cast(out, "float32"))).all()


def test_config_has_no_rotary_argument():
    config = CrossAttention(num_heads=HEADS).get_config()
    assert "rotary_max_wavelength" not in config
    assert CrossAttention.from_config(config).get_config() == config


def test_hidden_dim_not_divisible_by_heads():
    layer = CrossAttention(num_heads=3)
    with pytest.raises(ValueError, match="divisible by num_heads"):
        layer(
            random_inputs((BATCH, TGT, HIDDEN)),
            encoder_outputs=random_inputs((BATCH, SRC, HIDDEN)),
        )
