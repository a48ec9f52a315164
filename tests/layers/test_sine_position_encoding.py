import math

import numpy as np
import pytest
from layer_test_utils import run_layer_test

from keras_tfm.layers import SinePositionEncoding


def test_layer_basics():
    run_layer_test(
        SinePositionEncoding,
        init_kwargs={"max_wavelength": 10000},
        input_data=np.random.uniform(size=(2, 4, 6)).astype("float32"),
        expected_output_shape=(2, 4, 6),
        expected_num_trainable_weights=0,
    )


@pytest.mark.parametrize("hidden_dim", [6, 7])
def test_matches_vaswani_formula(hidden_dim):
    seq = 9
    out = SinePositionEncoding()(np.zeros((1, seq, hidden_dim), "float32"))
    expected = np.zeros((seq, hidden_dim))
    for pos in range(seq):
        for i in range(hidden_dim):
            pair = i - i % 2  # 2k
            angle = pos / 10000 ** (pair / hidden_dim)
            expected[pos, i] = (
                math.sin(angle) if i % 2 == 0 else math.cos(angle)
            )
    np.testing.assert_allclose(out[0], expected, atol=1e-5)


def test_golden_values_at_position_3():
    # keras-hub's golden value: position 3 starts [sin(3), cos(3), ...].
    out = SinePositionEncoding()(np.zeros((1, 4, 4), "float32"))
    np.testing.assert_allclose(
        out[0, 3, :2], [0.14112, -0.98999], atol=1e-5
    )


def test_start_index_matches_full_sequence():
    layer = SinePositionEncoding()
    full = layer(np.zeros((2, 8, 6), "float32"))
    tail = layer(np.zeros((2, 3, 6), "float32"), start_index=5)
    np.testing.assert_allclose(tail, full[:, 5:], atol=1e-6)
