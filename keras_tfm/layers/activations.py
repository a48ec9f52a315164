import keras


@keras.saving.register_keras_serializable(package="keras_tfm")
def gelu_approximate(x):
    """GELU with the tanh approximation (GPT-2's form).

    Under XLA its backward pass fuses away, while the exact (erf) form's
    backward is a separate, costly computation on CPU (the benchmark's
    `keras_tfm_exact_gelu` entry measures the difference).
    """
    return keras.activations.gelu(x, approximate=True)


def get_activation(identifier):
    """`keras.activations.get`, plus the name `"gelu_approximate"`."""
    if identifier == "gelu_approximate":
        return gelu_approximate
    return keras.activations.get(identifier)
