import numpy as np
import pytest
from layer_test_utils import run_layer_test

from keras_tfm.layers import PositionEmbedding


def test_layer_basics():
    run_layer_test(
        PositionEmbedding,
        init_kwargs={"sequence_length": 8, "initializer": "glorot_uniform"},
        input_data=np.random.uniform(size=(2, 4, 6)).astype("float32"),
        expected_output_shape=(2, 4, 6),
        expected_num_trainable_weights=1,
    )


def test_returns_table_rows():
    layer = PositionEmbedding(sequence_length=5)
    layer.build((None, None, 3))
    table = np.arange(15, dtype="float32").reshape(5, 3)
    layer.set_weights([table])
    out = layer(np.zeros((2, 4, 3), "float32"))
    np.testing.assert_array_equal(out[0], table[:4])
    np.testing.assert_array_equal(out[1], table[:4])
    tail = layer(np.zeros((1, 2, 3), "float32"), start_index=3)
    np.testing.assert_array_equal(tail[0], table[3:5])


def test_rejects_bad_length():
    with pytest.raises(ValueError, match="sequence_length"):
        PositionEmbedding(sequence_length=0)
