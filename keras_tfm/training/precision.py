"""Keras' global dtype policy, set for one block."""

import contextlib

import keras


@contextlib.contextmanager
def dtype_policy(precision):
    """Keras' global dtype policy set to `precision` inside the block only.

    Layers take the global policy when they are created, so a model built
    inside computes in `precision`; the caller's policy is back afterwards.
    """
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(precision)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)
