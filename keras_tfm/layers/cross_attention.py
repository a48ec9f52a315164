import math

import keras
from keras import ops

from keras_tfm.layers.checks import check_heads_divide
from keras_tfm.layers.initializers import clone_initializer
from keras_tfm.layers.masks import merge_attention_masks
from keras_tfm.layers.multi_head_attention import MultiHeadAttention


@keras.saving.register_keras_serializable(package="keras_tfm")
class CrossAttention(MultiHeadAttention):
    """Multi-head attention from a decoder to an encoder's outputs.

    Queries are projected from the decoder's hidden states; keys and values
    from the encoder's outputs, with one fused `(hidden_dim, 2 *
    hidden_dim)` matmul. A padding mask over the source hides padded source
    positions from every query. There is no causal mask and no rotary
    embedding: queries and keys come from different sequences.

    The keys and values depend on the encoder's outputs only, so decoding
    projects them once: `compute_cache(encoder_outputs)` returns them, and
    every decoding step passes that cache instead of the encoder outputs.

    A subclass of `MultiHeadAttention` for its attention arithmetic (fused
    and explicit paths, float32 softmax, the integer-export masking); the
    projections and the call are its own. The encoder outputs must have the
    decoder's hidden size.

    Args:
        num_heads: int. The number of attention heads; must divide the
            hidden size.
        dropout: float. Dropout rate on the attention probabilities.
            Defaults to `0.0`.
        use_bias: bool. Whether the projections have biases. Defaults to
            `True`.
        use_fused_attention: bool. Whether to use
            `keras.ops.dot_product_attention` when possible. Defaults to
            `True`.
        kernel_initializer: initializer for the projection kernels.
            Defaults to `"glorot_uniform"`.
        bias_initializer: initializer for the projection biases. Defaults to
            `"zeros"`.
        **kwargs: other keyword arguments passed to `keras.layers.Layer`.

    Call arguments:
        inputs: the decoder's hidden states, `(batch_size, target_length,
            hidden_dim)`.
        encoder_outputs: `(batch_size, source_length, hidden_dim)`. Give
            either this or `cache`.
        encoder_padding_mask: optional `(batch_size, source_length)` tensor,
            1 at real source tokens, 0 at padding.
        cache: the output of `compute_cache(encoder_outputs)`, `(batch_size,
            2, source_length, num_heads, head_dim)`: keys (index 0) and
            values (index 1). The call does not change it.
        training: bool. Whether dropout is active.
        return_attention_scores: bool. If true, also returns the attention
            probabilities, `(batch_size, num_heads, target_length,
            source_length)`.

    Returns:
        `(batch_size, target_length, hidden_dim)`, or that and the scores.

    Example:
    ```python
    decoder_states = keras.random.normal((2, 4, 16))
    encoder_outputs = keras.random.normal((2, 7, 16))
    layer = keras_tfm.layers.CrossAttention(num_heads=2)
    y = layer(decoder_states, encoder_outputs=encoder_outputs)  # (2, 4, 16)
    cache = layer.compute_cache(encoder_outputs)  # (2, 2, 7, 2, 8)
    y = layer(decoder_states[:, :1], cache=cache)  # (2, 1, 16)
    ```

    References:
        - [Vaswani et al., 2017](https://arxiv.org/abs/1706.03762)
    """

    def __init__(
        self,
        num_heads,
        dropout=0.0,
        use_bias=True,
        use_fused_attention=True,
        kernel_initializer="glorot_uniform",
        bias_initializer="zeros",
        **kwargs,
    ):
        super().__init__(
            num_heads=num_heads,
            dropout=dropout,
            use_bias=use_bias,
            rotary_max_wavelength=None,
            use_fused_attention=use_fused_attention,
            kernel_initializer=kernel_initializer,
            bias_initializer=bias_initializer,
            **kwargs,
        )

    def build(self, inputs_shape):
        hidden_dim = inputs_shape[-1]
        check_heads_divide(hidden_dim, self.num_heads)
        self.hidden_dim = hidden_dim
        self.head_dim = hidden_dim // self.num_heads
        self.query_dense = self._dense(hidden_dim, "query", inputs_shape)
        # Keys and values in one matmul: the encoder side is projected once
        # per source sequence, so fusing halves its kernel launches.
        self.key_value_dense = self._dense(
            2 * hidden_dim, "key_value", inputs_shape
        )
        self.output_dense = self._dense(hidden_dim, "output", inputs_shape)
        self.dropout_layer = keras.layers.Dropout(
            self.dropout, dtype=self.dtype_policy, name="attention_dropout"
        )
        self.built = True

    def _dense(self, units, name, inputs_shape):
        dense = keras.layers.Dense(
            units,
            use_bias=self.use_bias,
            kernel_initializer=clone_initializer(self.kernel_initializer),
            bias_initializer=clone_initializer(self.bias_initializer),
            dtype=self.dtype_policy,
            name=name,
        )
        dense.build(inputs_shape)
        return dense

    def compute_cache(self, encoder_outputs):
        """The projected keys and values of `encoder_outputs`.

        Returns:
            `(batch_size, 2, source_length, num_heads, head_dim)`; index 0
            of axis 1 holds keys, 1 values (`MultiHeadAttention`'s layout).
        """
        shape = ops.shape(encoder_outputs)
        # (batch, src, 2 * hidden) -> (batch, src, 2, heads, head_dim)
        key_value = ops.reshape(
            self.key_value_dense(encoder_outputs),
            (shape[0], shape[1], 2, self.num_heads, self.head_dim),
        )
        # (batch, 2, src, heads, head_dim)
        return ops.transpose(key_value, (0, 2, 1, 3, 4))

    def call(
        self,
        inputs,
        encoder_outputs=None,
        encoder_padding_mask=None,
        cache=None,
        training=None,
        return_attention_scores=False,
    ):
        if (encoder_outputs is None) == (cache is None):
            raise ValueError(
                "CrossAttention needs exactly one of `encoder_outputs` and "
                "`cache`; received "
                f"{'both' if cache is not None else 'neither'}."
            )
        if cache is None:
            cache = self.compute_cache(encoder_outputs)
        shape = ops.shape(inputs)
        batch_size, target_length = shape[0], shape[1]
        # (batch, tgt, hidden) -> (batch, tgt, heads, head_dim)
        query = ops.reshape(
            self.query_dense(inputs),
            (batch_size, target_length, self.num_heads, self.head_dim),
        )
        # Each (batch, src, heads, head_dim).
        key, value = cache[:, 0], cache[:, 1]
        # (batch, 1, src) or None: a padded source position is hidden from
        # every query.
        mask = merge_attention_masks(
            target_length,
            ops.shape(key)[1],
            padding_mask=encoder_padding_mask,
        )
        dropout_active = training and self.dropout > 0
        if (
            self.use_fused_attention
            and not self.bounded_masking
            and not return_attention_scores
            and not dropout_active
        ):
            # (batch, tgt, heads, head_dim); the mask gains a heads axis.
            outputs = ops.dot_product_attention(
                query,
                key,
                value,
                mask=None if mask is None else mask[:, None, :, :],
                scale=1.0 / math.sqrt(self.head_dim),
            )
            scores = None
        else:
            outputs, scores = self._compute_attention(
                query, key, value, mask, training
            )
        outputs = ops.reshape(
            outputs, (batch_size, target_length, self.hidden_dim)
        )
        outputs = self.output_dense(outputs)
        if return_attention_scores:
            return outputs, scores
        return outputs

    def get_config(self):
        config = super().get_config()
        # Inherited from `MultiHeadAttention`; positions do not apply here.
        del config["rotary_max_wavelength"]
        return config

    def compute_output_spec(
        self,
        inputs,
        encoder_outputs=None,
        encoder_padding_mask=None,
        cache=None,
        training=None,
        return_attention_scores=False,
    ):
        outputs = keras.KerasTensor(inputs.shape, dtype=self.compute_dtype)
        if not return_attention_scores:
            return outputs
        if encoder_outputs is not None:
            source_length = encoder_outputs.shape[1]
        else:
            source_length = cache.shape[2]
        scores_shape = (
            inputs.shape[0],
            self.num_heads,
            inputs.shape[1],
            source_length,
        )
        return outputs, keras.KerasTensor(
            scores_shape, dtype=self.compute_dtype
        )
