"""The checks every layer gets (after keras-hub's `run_layer_test`)."""

import json
import os
import tempfile

import keras
import numpy as np


def run_layer_test(
    layer_cls,
    init_kwargs,
    input_data,
    expected_output_shape,
    expected_num_trainable_weights,
    call_kwargs=None,
    run_training_check=True,
):
    """Checks config and JSON round trips, build and weight count, eager and
    symbolic calls, a `.keras` save/load round trip and one `fit` step.
    """
    call_kwargs = call_kwargs or {}
    input_data = np.asarray(input_data)

    # Config round trips: from_config and the JSON of serialize_keras_object.
    layer = layer_cls(**init_kwargs)
    config = layer.get_config()
    for key, value in init_kwargs.items():
        assert key in config, f"get_config() lacks {key}"
    assert layer_cls.from_config(config).get_config() == config
    serialized = keras.saving.serialize_keras_object(layer)
    revived = keras.saving.deserialize_keras_object(
        json.loads(json.dumps(serialized))
    )
    assert revived.get_config() == config

    # Eager call: shape, build, weight count.
    output = layer(input_data, **call_kwargs)
    assert tuple(output.shape) == tuple(expected_output_shape)
    assert layer.built
    assert len(layer.trainable_weights) == expected_num_trainable_weights

    # Symbolic call on a keras.Input with a free batch axis.
    inputs = keras.Input(shape=input_data.shape[1:], dtype=input_data.dtype)
    symbolic = layer_cls(**init_kwargs)(inputs, **call_kwargs)
    assert tuple(symbolic.shape) == (None,) + tuple(expected_output_shape[1:])

    # .keras round trip inside a functional model: same outputs.
    model = keras.Model(inputs, symbolic)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "model.keras")
        model.save(path)
        loaded = keras.models.load_model(path)
    np.testing.assert_allclose(
        loaded(input_data), model(input_data), rtol=1e-6, atol=1e-6
    )

    # One fit step; the layer's own weights must move.
    if run_training_check:
        head = keras.layers.Dense(1)(symbolic)
        trainer = keras.Model(inputs, head)
        trainer.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
        before = [w.numpy().copy() for w in trainer.layers[1].trainable_weights]
        targets = np.ones(tuple(expected_output_shape[:-1]) + (1,), "float32")
        history = trainer.fit(input_data, targets, epochs=1, verbose=0)
        assert np.isfinite(history.history["loss"][0])
        after = [w.numpy() for w in trainer.layers[1].trainable_weights]
        for b, a in zip(before, after):
            assert not np.allclose(b, a), "a trainable weight did not change"
    return layer
