import keras
import numpy as np
import pytest
from layer_test_utils import run_layer_test
from numpy_reference import causal_mask
from numpy_reference import decoder_block
from numpy_reference import layer_norm

from keras_tfm.layers import TransformerDecoder

BATCH, TGT, SRC, HIDDEN, HEADS, FFN, LAYERS = 2, 5, 6, 8, 2, 16, 2
HEAD_DIM = HIDDEN // HEADS


def random_inputs(shape):
    return np.random.normal(size=shape).astype("float32")


def source_padding():
    mask = np.ones((BATCH, SRC), bool)
    mask[0, -2:] = False
    return mask


def built_decoder(normalize_first=True, **kwargs):
    decoder = TransformerDecoder(
        num_layers=LAYERS,
        num_heads=HEADS,
        intermediate_dim=FFN,
        normalize_first=normalize_first,
        activation="gelu_approximate",
        **kwargs,
    )
    decoder.build((None, None, HIDDEN))
    rng = np.random.default_rng(0)
    decoder.set_weights(
        [rng.normal(size=w.shape).astype("float32") * 0.3
         for w in decoder.get_weights()]
    )
    return decoder


@pytest.mark.parametrize(
    "normalize_first, num_weights",
    # two blocks of 20, plus the final norm's 2 with pre-LN
    [(True, 42), (False, 40)],
)
def test_layer_basics(normalize_first, num_weights):
    run_layer_test(
        TransformerDecoder,
        init_kwargs={
            "num_layers": LAYERS,
            "num_heads": HEADS,
            "intermediate_dim": FFN,
            "dropout": 0.1,
            "normalize_first": normalize_first,
        },
        input_data=random_inputs((BATCH, TGT, HIDDEN)),
        expected_output_shape=(BATCH, TGT, HIDDEN),
        expected_num_trainable_weights=num_weights,
        call_kwargs={
            "encoder_outputs": random_inputs((BATCH, SRC, HIDDEN)),
            "encoder_padding_mask": source_padding(),
        },
    )


def test_symbolic_encoder_input_save_round_trip(tmp_path):
    targets = keras.Input((None, HIDDEN))
    memory = keras.Input((None, HIDDEN))
    mask = keras.Input((None,), dtype="bool")
    outputs = TransformerDecoder(
        num_layers=LAYERS, num_heads=HEADS, intermediate_dim=FFN
    )(targets, encoder_outputs=memory, encoder_padding_mask=mask)
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


@pytest.mark.parametrize("normalize_first", [True, False])
def test_matches_numpy_reference(normalize_first):
    decoder = built_decoder(normalize_first)
    x = random_inputs((BATCH, TGT, HIDDEN))
    memory = random_inputs((BATCH, SRC, HIDDEN))
    source = source_padding()
    out = decoder(x, encoder_outputs=memory, encoder_padding_mask=source)

    weights = {v.path.split("/", 1)[1]: v.numpy() for v in decoder.weights}
    expected = x
    for i in range(LAYERS):
        prefix = f"block_{i}/"
        w = {k[len(prefix):]: v for k, v in weights.items()
             if k.startswith(prefix)}
        expected = decoder_block(
            expected, memory, w, HEADS,
            self_mask=causal_mask(BATCH, TGT),
            cross_mask=np.broadcast_to(source[:, None], (BATCH, TGT, SRC)),
            normalize_first=normalize_first,
        )
    if normalize_first:
        expected = layer_norm(
            expected, weights["final_norm/gamma"], weights["final_norm/beta"],
            1e-5,
        )
    np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-4)


def test_cross_attention_cache_is_stacked_per_layer():
    decoder = built_decoder()
    memory = random_inputs((BATCH, SRC, HIDDEN))
    cache = np.asarray(decoder.compute_cross_attention_cache(memory))
    assert cache.shape == (BATCH, LAYERS, 2, SRC, HEADS, HEAD_DIM)
    for i, block in enumerate(decoder.blocks):
        np.testing.assert_allclose(
            cache[:, i], block.cross_attention.compute_cache(memory)
        )


def test_cached_decoding_equals_full_forward():
    decoder = built_decoder()
    x = random_inputs((BATCH, TGT, HIDDEN))
    memory = random_inputs((BATCH, SRC, HIDDEN))
    padding = source_padding()
    full = np.asarray(
        decoder(x, encoder_outputs=memory, encoder_padding_mask=padding)
    )
    self_cache = np.zeros(
        (BATCH, LAYERS, 2, TGT, HEADS, HEAD_DIM), "float32"
    )
    cross_cache = decoder.compute_cross_attention_cache(memory)
    steps = []
    for t in range(TGT):
        out, self_cache = decoder(
            x[:, t : t + 1],
            encoder_padding_mask=padding,
            self_attention_cache=self_cache,
            cross_attention_cache=cross_cache,
            cache_update_index=t,
        )
        steps.append(np.asarray(out))
    np.testing.assert_allclose(np.concatenate(steps, 1), full, atol=1e-5)
    assert self_cache.shape == (BATCH, LAYERS, 2, TGT, HEADS, HEAD_DIM)


def test_padding_and_causality_through_the_stack():
    decoder = built_decoder()
    x = random_inputs((BATCH, TGT, HIDDEN))
    memory = random_inputs((BATCH, SRC, HIDDEN))
    padding = source_padding()
    changed_memory = memory.copy()
    changed_memory[0, -2:] = 50.0
    changed_x = x.copy()
    changed_x[:, 3:] = random_inputs((BATCH, TGT - 3, HIDDEN))
    a = np.asarray(
        decoder(x, encoder_outputs=memory, encoder_padding_mask=padding)
    )
    b = np.asarray(
        decoder(
            changed_x,
            encoder_outputs=changed_memory,
            encoder_padding_mask=padding,
        )
    )
    np.testing.assert_allclose(a[:, :3], b[:, :3], atol=1e-5)


def test_mixed_precision():
    decoder = TransformerDecoder(
        num_layers=LAYERS,
        num_heads=HEADS,
        intermediate_dim=FFN,
        dtype="mixed_bfloat16",
    )
    x = random_inputs((BATCH, TGT, HIDDEN))
    memory = random_inputs((BATCH, SRC, HIDDEN))
    out = decoder(x, encoder_outputs=memory)
    assert out.dtype == "bfloat16"
    cross = decoder.compute_cross_attention_cache(memory)
    cache = keras.ops.zeros(
        (BATCH, LAYERS, 2, TGT, HEADS, HEAD_DIM), "bfloat16"
    )
    out, cache = decoder(
        x[:, :1], self_attention_cache=cache, cross_attention_cache=cross
    )
    assert out.dtype == "bfloat16" and cache.dtype == "bfloat16"
    assert cross.dtype == "bfloat16"
