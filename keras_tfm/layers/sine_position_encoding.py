import keras
from keras import ops


@keras.saving.register_keras_serializable(package="keras_tfm")
class SinePositionEncoding(keras.layers.Layer):
    """Sinusoidal position encoding (Vaswani et al., 2017).

    Returns, for position `pos` and feature `i` of a `hidden_dim`-wide
    input, the standard encoding of "Attention Is All You Need" (section
    3.5):

        PE[pos, 2k]     = sin(pos / max_wavelength ** (2k / hidden_dim))
        PE[pos, 2k + 1] = cos(pos / max_wavelength ** (2k / hidden_dim))

    The formula in keras-tfm's original brief was garbled; this is the
    paper's formula, and the tests check the layer against it. The layer
    has no weights: add its output to the token embeddings.

    Args:
        max_wavelength: int. The longest wavelength of the sine and cosine
            curves. Defaults to `10000`, as in the paper.
        **kwargs: other keyword arguments passed to `keras.layers.Layer`,
            including `name` and `dtype`.

    Call arguments:
        inputs: tensor of shape `(batch_size, sequence_length, hidden_dim)`.
            Only its shape is used.
        start_index: int or int tensor. The position of the first input
            token; used by cached decoding, which feeds one token at a time.
            Defaults to `0`.
        positions: optional int tensor `(batch_size, sequence_length)`:
            each token's position, instead of `start_index + i`.

    Example:
    ```python
    embedding = keras.layers.Embedding(1000, 32)(token_ids)
    outputs = embedding + keras_tfm.layers.SinePositionEncoding()(embedding)
    ```

    References:
        - [Vaswani et al., 2017](https://arxiv.org/abs/1706.03762)
    """

    def __init__(self, max_wavelength=10000, **kwargs):
        super().__init__(**kwargs)
        self.max_wavelength = max_wavelength
        self.built = True

    def call(self, inputs, start_index=0, positions=None):
        shape = ops.shape(inputs)
        sequence_length, hidden_dim = shape[-2], shape[-1]
        # Positions and angles in float32 whatever the compute dtype: in
        # bfloat16 an angle near 100 rad rounds in steps of 0.5.
        if positions is None:
            positions = ops.arange(sequence_length) + start_index
        # (seq,) or (batch, seq)
        positions = ops.cast(positions, "float32")
        # Feature i uses the frequency of its pair 2k = i - i % 2.
        pair_index = ops.cast(2 * (ops.arange(hidden_dim) // 2), "float32")
        inverse_wavelength = ops.power(
            ops.cast(self.max_wavelength, "float32"),
            -pair_index / ops.cast(hidden_dim, "float32"),
        )
        # (..., sequence_length, hidden_dim)
        angles = ops.expand_dims(positions, -1) * inverse_wavelength
        is_odd = ops.cast(ops.arange(hidden_dim) % 2, "bool")
        encoding = ops.where(is_odd, ops.cos(angles), ops.sin(angles))
        return ops.broadcast_to(ops.cast(encoding, self.compute_dtype), shape)

    def get_config(self):
        config = super().get_config()
        config.update({"max_wavelength": self.max_wavelength})
        return config

    def compute_output_shape(self, input_shape):
        return input_shape
