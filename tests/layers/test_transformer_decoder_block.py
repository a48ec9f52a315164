import keras
import numpy as np
import pytest
from layer_test_utils import run_layer_test
from numpy_reference import causal_mask
from numpy_reference import decoder_block

from keras_tfm.layers import TransformerDecoderBlock

BATCH, TGT, SRC, HIDDEN, HEADS, FFN = 2, 5, 6, 8, 2, 16
HEAD_DIM = HIDDEN // HEADS


def random_inputs(shape):
    return np.random.normal(size=shape).astype("float32")


def source_padding():
    mask = np.ones((BATCH, SRC), bool)
    mask[0, -2:] = False
    return mask


def built_block(normalize_first=True, **kwargs):
    block = TransformerDecoderBlock(
        num_heads=HEADS,
        intermediate_dim=FFN,
        normalize_first=normalize_first,
        activation="gelu_approximate",
        **kwargs,
    )
    block.build((None, None, HIDDEN))
    rng = np.random.default_rng(0)
    block.set_weights(
        [rng.normal(size=w.shape).astype("float32") * 0.3
         for w in block.get_weights()]
    )
    return block


@pytest.mark.parametrize("normalize_first", [True, False])
def test_layer_basics(normalize_first):
    run_layer_test(
        TransformerDecoderBlock,
        init_kwargs={
            "num_heads": HEADS,
            "intermediate_dim": FFN,
            "dropout": 0.1,
            "normalize_first": normalize_first,
            "activation": "gelu_approximate",
        },
        input_data=random_inputs((BATCH, TGT, HIDDEN)),
        expected_output_shape=(BATCH, TGT, HIDDEN),
        # self-attention 4, cross-attention 6, three norms 3 x 2,
        # feed-forward 2 x 2
        expected_num_trainable_weights=20,
        call_kwargs={
            "encoder_outputs": random_inputs((BATCH, SRC, HIDDEN)),
            "encoder_padding_mask": source_padding(),
        },
    )


def test_symbolic_encoder_input_save_round_trip_and_fit(tmp_path):
    targets = keras.Input((None, HIDDEN))
    memory = keras.Input((None, HIDDEN))
    mask = keras.Input((None,), dtype="bool")
    outputs = TransformerDecoderBlock(num_heads=HEADS, intermediate_dim=FFN)(
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


@pytest.mark.parametrize("normalize_first", [True, False])
def test_matches_numpy_reference(normalize_first):
    block = built_block(normalize_first)
    x = random_inputs((BATCH, TGT, HIDDEN))
    memory = random_inputs((BATCH, SRC, HIDDEN))
    source = source_padding()
    target = np.ones((BATCH, TGT), bool)
    target[1, 1] = False
    out = block(
        x,
        encoder_outputs=memory,
        decoder_padding_mask=target,
        encoder_padding_mask=source,
    )
    w = {v.path.split("/", 1)[1]: v.numpy() for v in block.weights}
    expected = decoder_block(
        x, memory, w, HEADS,
        self_mask=causal_mask(BATCH, TGT) & target[:, None, :],
        cross_mask=np.broadcast_to(source[:, None, :], (BATCH, TGT, SRC)),
        normalize_first=normalize_first,
    )
    np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-4)


def test_padded_source_position_changes_no_output():
    block = built_block()
    x = random_inputs((BATCH, TGT, HIDDEN))
    memory = random_inputs((BATCH, SRC, HIDDEN))
    changed = memory.copy()
    changed[0, -2:] = 100.0
    padding = source_padding()
    a = block(x, encoder_outputs=memory, encoder_padding_mask=padding)
    b = block(x, encoder_outputs=changed, encoder_padding_mask=padding)
    np.testing.assert_allclose(a, b, atol=1e-5)


def test_padded_target_position_changes_no_other_output():
    # Position 1 is padding; later positions would see it if unmasked.
    block = built_block()
    x = random_inputs((BATCH, TGT, HIDDEN))
    memory = random_inputs((BATCH, SRC, HIDDEN))
    padding = np.ones((BATCH, TGT), bool)
    padding[:, 1] = False
    changed = x.copy()
    changed[:, 1] = 100.0
    kwargs = dict(encoder_outputs=memory, decoder_padding_mask=padding)
    a = np.asarray(block(x, **kwargs))
    b = np.asarray(block(changed, **kwargs))
    others = [0, 2, 3, 4]
    np.testing.assert_allclose(a[:, others], b[:, others], atol=1e-5)
    unmasked = np.asarray(block(changed, encoder_outputs=memory))
    assert not np.allclose(a[:, 2:], unmasked[:, 2:], atol=1e-3)


def test_future_token_never_changes_earlier_output():
    block = built_block()
    x = random_inputs((BATCH, TGT, HIDDEN))
    memory = random_inputs((BATCH, SRC, HIDDEN))
    changed = x.copy()
    changed[:, 3:] = random_inputs((BATCH, TGT - 3, HIDDEN))
    a = np.asarray(block(x, encoder_outputs=memory))
    b = np.asarray(block(changed, encoder_outputs=memory))
    np.testing.assert_allclose(a[:, :3], b[:, :3], atol=1e-5)
    assert not np.allclose(a[:, 3:], b[:, 3:], atol=1e-3)


@pytest.mark.parametrize("rotary_max_wavelength", [None, 10000])
def test_cached_decoding_equals_full_forward(rotary_max_wavelength):
    block = built_block(rotary_max_wavelength=rotary_max_wavelength)
    x = random_inputs((BATCH, TGT, HIDDEN))
    memory = random_inputs((BATCH, SRC, HIDDEN))
    padding = source_padding()
    full = np.asarray(
        block(x, encoder_outputs=memory, encoder_padding_mask=padding)
    )
    self_cache = np.zeros((BATCH, 2, TGT, HEADS, HEAD_DIM), "float32")
    cross_cache = block.compute_cross_attention_cache(memory)
    assert tuple(cross_cache.shape) == (BATCH, 2, SRC, HEADS, HEAD_DIM)
    # A two-token prefill, then one token per call.
    out, self_cache = block(
        x[:, :2],
        encoder_padding_mask=padding,
        self_attention_cache=self_cache,
        cross_attention_cache=cross_cache,
        cache_update_index=0,
    )
    steps = [np.asarray(out)]
    for t in range(2, TGT):
        out, self_cache = block(
            x[:, t : t + 1],
            encoder_padding_mask=padding,
            self_attention_cache=self_cache,
            cross_attention_cache=cross_cache,
            cache_update_index=t,
        )
        steps.append(np.asarray(out))
    np.testing.assert_allclose(np.concatenate(steps, 1), full, atol=1e-5)
    assert self_cache.shape == (BATCH, 2, TGT, HEADS, HEAD_DIM)


def test_self_attention_cache_with_encoder_outputs():
    # The cross side may also come straight from the encoder outputs.
    block = built_block()
    x = random_inputs((BATCH, TGT, HIDDEN))
    memory = random_inputs((BATCH, SRC, HIDDEN))
    full = np.asarray(block(x, encoder_outputs=memory))
    cache = np.zeros((BATCH, 2, TGT, HEADS, HEAD_DIM), "float32")
    out, _ = block(
        x, encoder_outputs=memory, self_attention_cache=cache,
        cache_update_index=0,
    )
    np.testing.assert_allclose(out, full, atol=1e-5)


def test_dropout_only_in_training():
    block = built_block(dropout=0.5)
    x = random_inputs((BATCH, TGT, HIDDEN))
    memory = random_inputs((BATCH, SRC, HIDDEN))
    a = block(x, encoder_outputs=memory, training=False)
    b = block(x, encoder_outputs=memory, training=False)
    np.testing.assert_allclose(a, b)
    c = block(x, encoder_outputs=memory, training=True)
    assert not np.allclose(a, c, atol=1e-3)


def test_mixed_precision():
    block = TransformerDecoderBlock(
        num_heads=HEADS, intermediate_dim=FFN, dtype="mixed_bfloat16"
    )
    x = random_inputs((BATCH, TGT, HIDDEN))
    memory = random_inputs((BATCH, SRC, HIDDEN))
    out = block(
        x, encoder_outputs=memory, encoder_padding_mask=source_padding()
    )
    assert out.dtype == "bfloat16"
    assert block.feedforward_output.kernel.dtype == "float32"
    cache = keras.ops.zeros((BATCH, 2, TGT, HEADS, HEAD_DIM), "bfloat16")
    out, cache = block(
        x[:, :1],
        cross_attention_cache=block.compute_cross_attention_cache(memory),
        self_attention_cache=cache,
    )
    assert out.dtype == "bfloat16" and cache.dtype == "bfloat16"


def test_needs_encoder_outputs_or_cross_attention_cache():
    block = built_block()
    with pytest.raises(ValueError, match="CrossAttention needs exactly one"):
        block(random_inputs((BATCH, TGT, HIDDEN)))
