import numpy as np
import pytest
from layer_test_utils import run_layer_test

from keras_tfm.layers import TransformerEncoder

BATCH, SEQ, HIDDEN, HEADS = 2, 6, 8, 2


def random_inputs(shape=(BATCH, SEQ, HIDDEN)):
    return np.random.normal(size=shape).astype("float32")


@pytest.mark.parametrize(
    "normalize_first, expected_weights", [(True, 2 * 12 + 2), (False, 2 * 12)]
)
def test_layer_basics(normalize_first, expected_weights):
    run_layer_test(
        TransformerEncoder,
        init_kwargs={
            "num_layers": 2,
            "num_heads": HEADS,
            "intermediate_dim": 16,
            "normalize_first": normalize_first,
        },
        input_data=random_inputs(),
        expected_output_shape=(BATCH, SEQ, HIDDEN),
        expected_num_trainable_weights=expected_weights,
        call_kwargs={"use_causal_mask": True},
    )


def test_stack_is_its_blocks_then_final_norm():
    stack = TransformerEncoder(
        num_layers=2, num_heads=HEADS, intermediate_dim=16
    )
    x = random_inputs()
    out = stack(x, use_causal_mask=True)
    h = x
    for block in stack.blocks:
        h = block(h, use_causal_mask=True)
    np.testing.assert_allclose(out, stack.final_norm(h), atol=1e-6)


@pytest.mark.parametrize("rotary", [None, 10000])
def test_cached_decoding_equals_full_forward(rotary):
    stack = TransformerEncoder(
        num_layers=2, num_heads=HEADS, intermediate_dim=16,
        rotary_max_wavelength=rotary,
    )
    x = random_inputs()
    full = np.asarray(stack(x, use_causal_mask=True))
    cache = np.zeros((BATCH, 2, 2, SEQ, HEADS, HIDDEN // HEADS), "float32")
    out, cache = stack(x[:, :4], use_causal_mask=True, cache=cache)
    steps = [np.asarray(out)]
    for t in range(4, SEQ):
        out, cache = stack(
            x[:, t : t + 1], use_causal_mask=True, cache=cache,
            cache_update_index=t,
        )
        steps.append(np.asarray(out))
    np.testing.assert_allclose(np.concatenate(steps, 1), full, atol=1e-5)


def test_future_token_never_changes_earlier_output():
    stack = TransformerEncoder(
        num_layers=2, num_heads=HEADS, intermediate_dim=16
    )
    x = random_inputs()
    changed = x.copy()
    changed[:, 4:] += 5.0
    a = np.asarray(stack(x, use_causal_mask=True))
    b = np.asarray(stack(changed, use_causal_mask=True))
    np.testing.assert_allclose(a[:, :4], b[:, :4], atol=1e-5)


def test_padded_position_changes_no_other_output():
    stack = TransformerEncoder(
        num_layers=2, num_heads=HEADS, intermediate_dim=16
    )
    x = random_inputs()
    padding = np.ones((BATCH, SEQ), bool)
    padding[:, 0] = False
    changed = x.copy()
    changed[:, 0] = -7.0
    a = np.asarray(stack(x, padding_mask=padding))
    b = np.asarray(stack(changed, padding_mask=padding))
    np.testing.assert_allclose(a[:, 1:], b[:, 1:], atol=1e-5)
