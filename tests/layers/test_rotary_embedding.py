import numpy as np
from layer_test_utils import run_layer_test

from keras_tfm.layers import RotaryEmbedding


def test_layer_basics():
    run_layer_test(
        RotaryEmbedding,
        init_kwargs={"max_wavelength": 10000},
        input_data=np.random.uniform(size=(2, 4, 2, 6)).astype("float32"),
        expected_output_shape=(2, 4, 2, 6),
        expected_num_trainable_weights=0,
    )


def test_matches_rotation_formula():
    x = np.random.normal(size=(1, 5, 1, 4)).astype("float32")
    out = np.asarray(RotaryEmbedding(max_wavelength=100)(x))
    for pos in range(5):
        for k in range(2):  # pairs (k, k + 2)
            theta = pos * 100 ** (-2 * k / 4)
            a, b = x[0, pos, 0, k], x[0, pos, 0, k + 2]
            np.testing.assert_allclose(
                out[0, pos, 0, k], a * np.cos(theta) - b * np.sin(theta),
                atol=1e-5,
            )
            np.testing.assert_allclose(
                out[0, pos, 0, k + 2], b * np.cos(theta) + a * np.sin(theta),
                atol=1e-5,
            )


def test_dot_products_depend_on_relative_position_only():
    layer = RotaryEmbedding()
    q = np.random.normal(size=(1, 1, 1, 8)).astype("float32")
    k = np.random.normal(size=(1, 1, 1, 8)).astype("float32")

    def score(query_pos, key_pos):
        qr = layer(q, start_index=query_pos)
        kr = layer(k, start_index=key_pos)
        return float(np.sum(np.asarray(qr) * np.asarray(kr)))

    np.testing.assert_allclose(score(7, 3), score(24, 20), rtol=1e-4)
    # A rotation keeps vector norms.
    np.testing.assert_allclose(
        np.linalg.norm(layer(q, start_index=5)), np.linalg.norm(q), rtol=1e-5
    )


def test_start_index_matches_full_sequence():
    layer = RotaryEmbedding()
    x = np.random.normal(size=(2, 6, 2, 4)).astype("float32")
    full = layer(x)
    tail = layer(x[:, 4:], start_index=4)
    np.testing.assert_allclose(tail, full[:, 4:], atol=1e-6)
