import numpy as np
import pytest
from layer_test_utils import run_layer_test
from numpy_reference import attention
from numpy_reference import causal_mask
from numpy_reference import gelu_tanh
from numpy_reference import layer_norm

from keras_tfm.layers import TransformerEncoderBlock

BATCH, SEQ, HIDDEN, HEADS, FFN = 2, 5, 8, 2, 16


def random_inputs(shape=(BATCH, SEQ, HIDDEN)):
    return np.random.normal(size=shape).astype("float32")


def built_block(normalize_first=True, **kwargs):
    block = TransformerEncoderBlock(
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
        TransformerEncoderBlock,
        init_kwargs={
            "num_heads": HEADS,
            "intermediate_dim": FFN,
            "dropout": 0.1,
            "normalize_first": normalize_first,
            "activation": "gelu_approximate",
        },
        input_data=random_inputs(),
        expected_output_shape=(BATCH, SEQ, HIDDEN),
        # attention 4, two norms 2 x 2, feed-forward 2 x 2
        expected_num_trainable_weights=12,
        call_kwargs={"use_causal_mask": True},
    )


def reference_block(block, x, mask, normalize_first):
    """The block in NumPy, from its own weights."""
    w = {v.path.split("/", 1)[1]: v.numpy() for v in block.weights}
    a = block.attention

    def attn(h):
        return attention(
            h,
            w[f"{a.name}/qkv/kernel"], w[f"{a.name}/qkv/bias"],
            w[f"{a.name}/output/kernel"], w[f"{a.name}/output/bias"],
            HEADS, mask,
        )

    def norm(h, name):
        return layer_norm(h, w[f"{name}/gamma"], w[f"{name}/beta"], 1e-5)

    def ffn(h):
        h = gelu_tanh(h @ w["feedforward_intermediate/kernel"]
                      + w["feedforward_intermediate/bias"])
        return h @ w["feedforward_output/kernel"] + w["feedforward_output/bias"]

    if normalize_first:
        x = x + attn(norm(x, "attention_norm"))
        return x + ffn(norm(x, "feedforward_norm"))
    x = norm(x + attn(x), "attention_norm")
    return norm(x + ffn(x), "feedforward_norm")


@pytest.mark.parametrize("normalize_first", [True, False])
def test_matches_numpy_reference(normalize_first):
    block = built_block(normalize_first)
    x = random_inputs()
    out = block(x, use_causal_mask=True)
    expected = reference_block(
        block, x, causal_mask(BATCH, SEQ), normalize_first
    )
    np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-4)


def test_zeroed_branches_make_pre_ln_block_the_identity():
    block = built_block(normalize_first=True)
    for dense in (block.attention.output_dense, block.feedforward_output):
        dense.set_weights([np.zeros_like(v) for v in dense.get_weights()])
    x = random_inputs()
    np.testing.assert_allclose(block(x), x, atol=1e-6)


def test_padded_position_changes_no_other_output():
    block = built_block()
    x = random_inputs()
    padding = np.ones((BATCH, SEQ), bool)
    padding[:, -1] = False
    changed = x.copy()
    changed[:, -1] = 100.0
    a = np.asarray(block(x, padding_mask=padding))
    b = np.asarray(block(changed, padding_mask=padding))
    np.testing.assert_allclose(a[:, :-1], b[:, :-1], atol=1e-5)


def test_future_token_never_changes_earlier_output():
    block = built_block()
    x = random_inputs()
    changed = x.copy()
    changed[:, 3:] = random_inputs((BATCH, SEQ - 3, HIDDEN))
    a = np.asarray(block(x, use_causal_mask=True))
    b = np.asarray(block(changed, use_causal_mask=True))
    np.testing.assert_allclose(a[:, :3], b[:, :3], atol=1e-5)


def test_cached_decoding_equals_full_forward():
    block = built_block()
    x = random_inputs()
    full = np.asarray(block(x, use_causal_mask=True))
    cache = np.zeros((BATCH, 2, SEQ, HEADS, HIDDEN // HEADS), "float32")
    steps = []
    for t in range(SEQ):
        out, cache = block(
            x[:, t : t + 1], use_causal_mask=True, cache=cache,
            cache_update_index=t,
        )
        steps.append(np.asarray(out))
    np.testing.assert_allclose(np.concatenate(steps, 1), full, atol=1e-5)


def test_hidden_dim_not_divisible_by_heads():
    block = TransformerEncoderBlock(num_heads=3, intermediate_dim=4)
    with pytest.raises(ValueError, match="divisible by num_heads"):
        block(random_inputs())
