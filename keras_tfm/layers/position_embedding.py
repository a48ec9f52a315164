import keras
from keras import ops


@keras.saving.register_keras_serializable(package="keras_tfm")
class PositionEmbedding(keras.layers.Layer):
    """A learned position embedding, as in GPT-2 and BERT.

    Holds one trainable vector per position up to `sequence_length` and
    returns the vectors for the input's positions, to be added to the token
    embeddings.

    Args:
        sequence_length: int. The largest number of positions the layer
            can embed.
        initializer: string or `keras.initializers` initializer. The
            initializer of the position table. Defaults to `"glorot_uniform"`.
        **kwargs: other keyword arguments passed to `keras.layers.Layer`.

    Call arguments:
        inputs: tensor of shape `(batch_size, sequence_length, hidden_dim)`.
            Only its shape is used.
        start_index: int or int tensor. The position of the first input
            token, for cached decoding. Defaults to `0`.
        positions: optional int tensor `(batch_size, sequence_length)`:
            each token's position, instead of `start_index + i`.

    Example:
    ```python
    embedding = keras.layers.Embedding(1000, 32)(token_ids)
    outputs = embedding + keras_tfm.layers.PositionEmbedding(128)(embedding)
    ```
    """

    def __init__(self, sequence_length, initializer="glorot_uniform", **kwargs):
        super().__init__(**kwargs)
        if sequence_length is None or int(sequence_length) < 1:
            raise ValueError(
                "`sequence_length` must be a positive int. "
                f"Received: sequence_length={sequence_length}"
            )
        self.sequence_length = int(sequence_length)
        self.initializer = keras.initializers.get(initializer)

    def build(self, inputs_shape):
        hidden_dim = inputs_shape[-1]
        self.position_embeddings = self.add_weight(
            name="embeddings",
            shape=(self.sequence_length, hidden_dim),
            initializer=self.initializer,
        )
        self.built = True

    def call(self, inputs, start_index=0, positions=None):
        shape = ops.shape(inputs)
        if positions is not None:
            # (batch, seq) positions, e.g. restarting in each document.
            return ops.take(self.position_embeddings, positions, axis=0)
        sequence_length = shape[-2]
        # (sequence_length, hidden_dim), broadcast over the batch.
        embeddings = ops.slice(
            ops.convert_to_tensor(self.position_embeddings),
            (start_index, 0),
            (sequence_length, shape[-1]),
        )
        return ops.broadcast_to(embeddings, shape)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "sequence_length": self.sequence_length,
                "initializer": keras.initializers.serialize(self.initializer),
            }
        )
        return config

    def compute_output_shape(self, input_shape):
        return input_shape
