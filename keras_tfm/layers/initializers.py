import keras


def clone_initializer(initializer):
    """A fresh copy of `initializer`, so sublayers do not share one object.

    A seeded initializer object shared by two sublayers would give both the
    same values; each sublayer gets its own copy, as in keras-hub.
    """
    initializer = keras.initializers.get(initializer)
    return initializer.__class__.from_config(initializer.get_config())
