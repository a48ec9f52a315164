import keras
from keras import ops


@keras.saving.register_keras_serializable(package="keras_tfm")
class RotaryEmbedding(keras.layers.Layer):
    """Rotary position embedding (RoPE, Su et al., 2021).

    Rotates each pair of features of a query or key vector by an angle
    proportional to the token's position, so that the dot product of a
    query and a key depends only on their relative position. Feature `k`
    is paired with feature `k + head_dim / 2` (the "rotate half" layout of
    GPT-NeoX and LLaMA), and pair `k` turns at the inverse wavelength
    `max_wavelength ** (-2k / head_dim)`.

    Unlike the additive encodings, RoPE is applied inside attention to the
    per-head queries and keys, not to the embeddings.

    Args:
        max_wavelength: int. The longest wavelength. Defaults to `10000`.
        **kwargs: other keyword arguments passed to `keras.layers.Layer`.

    Call arguments:
        inputs: tensor of shape `(batch_size, sequence_length, num_heads,
            head_dim)`, with an even `head_dim`.
        start_index: int or int tensor. The position of the first token, for
            cached decoding. Defaults to `0`.

    References:
        - [Su et al., 2021](https://arxiv.org/abs/2104.09864)
    """

    def __init__(self, max_wavelength=10000, **kwargs):
        super().__init__(**kwargs)
        self.max_wavelength = max_wavelength
        self.built = True

    def call(self, inputs, start_index=0):
        shape = ops.shape(inputs)
        sequence_length, head_dim = shape[1], shape[-1]
        dtype = self.compute_dtype
        half = head_dim // 2
        exponent = ops.cast(2 * ops.arange(half), "float32") / ops.cast(
            head_dim, "float32"
        )
        inverse_wavelength = ops.power(
            ops.cast(self.max_wavelength, "float32"), -exponent
        )
        positions = ops.cast(
            ops.arange(sequence_length) + start_index, "float32"
        )
        # (sequence_length, half) -> (1, sequence_length, 1, half)
        angles = positions[:, None] * inverse_wavelength[None, :]
        cos = ops.cast(ops.cos(angles), dtype)[None, :, None, :]
        sin = ops.cast(ops.sin(angles), dtype)[None, :, None, :]
        first, second = inputs[..., :half], inputs[..., half:]
        return ops.concatenate(
            [first * cos - second * sin, second * cos + first * sin], axis=-1
        )

    def get_config(self):
        config = super().get_config()
        config.update({"max_wavelength": self.max_wavelength})
        return config

    def compute_output_shape(self, input_shape):
        return input_shape
