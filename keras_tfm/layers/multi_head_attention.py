import math

import keras
from keras import ops

from keras_tfm.layers.checks import check_heads_divide
from keras_tfm.layers.initializers import clone_initializer
from keras_tfm.layers.masks import merge_attention_masks
from keras_tfm.layers.rotary_embedding import RotaryEmbedding


@keras.saving.register_keras_serializable(package="keras_tfm")
class MultiHeadAttention(keras.layers.Layer):
    """Multi-head self-attention with masks and a KV cache.

    Projects the input to queries, keys and values with one fused
    `(hidden_dim, 3 * hidden_dim)` matmul, attends per head with
    `softmax(Q K^T / sqrt(head_dim)) V`, and projects the heads back to
    `hidden_dim`. Causal and padding masks combine; a cache of past keys and
    values makes incremental decoding cost one token per step.

    Two paths compute the same attention. The fused path calls
    `keras.ops.dot_product_attention`, which Keras maps to the backend's
    fused kernel where one exists (cuDNN or flash attention on JAX and
    PyTorch GPUs; on TensorFlow it is XLA-friendly einsums). The explicit
    path (einsum, masked softmax, dropout) is taken when attention scores
    are requested or attention dropout is active in training.

    Args:
        num_heads: int. The number of attention heads; must divide the
            input's hidden size.
        dropout: float. Dropout rate on the attention probabilities.
            Defaults to `0.0`.
        use_bias: bool. Whether the projections have biases. Defaults to
            `True`.
        rotary_max_wavelength: int or `None`. If set, rotary position
            embeddings with this wavelength are applied to queries and keys.
            Defaults to `None`.
        use_fused_attention: bool. Whether to use
            `keras.ops.dot_product_attention` when possible. Defaults to
            `True`.
        kernel_initializer: initializer for the projection kernels.
            Defaults to `"glorot_uniform"`.
        bias_initializer: initializer for the projection biases. Defaults to
            `"zeros"`.
        **kwargs: other keyword arguments passed to `keras.layers.Layer`.

    Call arguments:
        inputs: tensor of shape `(batch_size, sequence_length, hidden_dim)`.
        padding_mask: optional `(batch_size, key_length)` tensor, 1 at real
            tokens, 0 at padding. `key_length` is the cache's length when a
            cache is passed.
        use_causal_mask: bool. If true, a token attends only to itself and
            earlier tokens.
        cache: optional tensor of shape `(batch_size, 2, max_length,
            num_heads, head_dim)` holding past keys (index 0) and values
            (index 1). When given, the call returns `(outputs, cache)`.
        cache_update_index: int or int tensor. The position of the first
            input token; the new keys and values are written there.
        training: bool. Whether dropout is active.
        return_attention_scores: bool. If true, also returns the attention
            probabilities, `(batch_size, num_heads, query_length,
            key_length)`.
        attention_mask: optional `(batch_size, query_length, key_length)`
            tensor, true where a query may see a key; combined with the
            other masks.

    Example:
    ```python
    x = keras.random.normal((2, 8, 16))
    layer = keras_tfm.layers.MultiHeadAttention(num_heads=2)
    y = layer(x, use_causal_mask=True)  # (2, 8, 16)
    ```
    """

    # Set (not saved in the config) on a model about to be converted to an
    # integer TFLite file: see `_bounded_masked_softmax`.
    bounded_masking = False

    def __init__(
        self,
        num_heads,
        dropout=0.0,
        use_bias=True,
        rotary_max_wavelength=None,
        use_fused_attention=True,
        kernel_initializer="glorot_uniform",
        bias_initializer="zeros",
        **kwargs,
    ):
        super().__init__(**kwargs)
        if not isinstance(num_heads, int) or num_heads < 1:
            raise ValueError(
                "`num_heads` must be a positive int. "
                f"Received: num_heads={num_heads}"
            )
        self.num_heads = num_heads
        self.dropout = dropout
        self.use_bias = use_bias
        self.rotary_max_wavelength = rotary_max_wavelength
        self.use_fused_attention = use_fused_attention
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)

    def build(self, inputs_shape):
        hidden_dim = inputs_shape[-1]
        check_heads_divide(hidden_dim, self.num_heads)
        self.hidden_dim = hidden_dim
        self.head_dim = hidden_dim // self.num_heads
        self.qkv_dense = keras.layers.Dense(
            3 * hidden_dim,
            use_bias=self.use_bias,
            kernel_initializer=clone_initializer(self.kernel_initializer),
            bias_initializer=clone_initializer(self.bias_initializer),
            dtype=self.dtype_policy,
            name="qkv",
        )
        self.qkv_dense.build(inputs_shape)
        self.output_dense = keras.layers.Dense(
            hidden_dim,
            use_bias=self.use_bias,
            kernel_initializer=clone_initializer(self.kernel_initializer),
            bias_initializer=clone_initializer(self.bias_initializer),
            dtype=self.dtype_policy,
            name="output",
        )
        self.output_dense.build(inputs_shape)
        self.rotary_embedding = None
        if self.rotary_max_wavelength:
            self.rotary_embedding = RotaryEmbedding(
                max_wavelength=self.rotary_max_wavelength,
                dtype=self.dtype_policy,
                name="rotary_embedding",
            )
        self.dropout_layer = keras.layers.Dropout(
            self.dropout, dtype=self.dtype_policy, name="attention_dropout"
        )
        self.built = True

    def call(
        self,
        inputs,
        padding_mask=None,
        use_causal_mask=False,
        cache=None,
        cache_update_index=0,
        training=None,
        return_attention_scores=False,
        attention_mask=None,
    ):
        shape = ops.shape(inputs)
        batch_size, sequence_length = shape[0], shape[1]
        # (batch, seq, 3 * hidden) -> (batch, seq, 3, heads, head_dim)
        qkv = ops.reshape(
            self.qkv_dense(inputs),
            (batch_size, sequence_length, 3, self.num_heads, self.head_dim),
        )
        # Each (batch, seq, heads, head_dim).
        query, key, value = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
        if self.rotary_embedding is not None:
            query = self.rotary_embedding(query, start_index=cache_update_index)
            key = self.rotary_embedding(key, start_index=cache_update_index)

        if cache is not None:
            # Write this call's keys and values into the cache and attend
            # over all of it; the causal mask hides the unwritten slots.
            start = (0, cache_update_index, 0, 0)
            key = ops.slice_update(cache[:, 0], start, key)
            value = ops.slice_update(cache[:, 1], start, value)
            cache = ops.stack((key, value), axis=1)

        mask = merge_attention_masks(
            sequence_length,
            ops.shape(key)[1],
            padding_mask=padding_mask,
            use_causal_mask=use_causal_mask,
            query_start=cache_update_index,
            attention_mask=attention_mask,
        )
        dropout_active = training and self.dropout > 0
        if (
            self.use_fused_attention
            and not self.bounded_masking
            and not return_attention_scores
            and not dropout_active
        ):
            # (batch, seq, heads, head_dim); the mask gains a heads axis.
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
            outputs, (batch_size, sequence_length, self.hidden_dim)
        )
        outputs = self.output_dense(outputs)
        results = (outputs,)
        if cache is not None:
            results += (cache,)
        if return_attention_scores:
            results += (scores,)
        return results[0] if len(results) == 1 else results

    def _compute_attention(self, query, key, value, mask, training):
        # (batch, heads, query_len, key_len), softmax taken in float32.
        scores = ops.einsum("bqnh,bknh->bnqk", query, key)
        scores = ops.cast(scores, "float32") / math.sqrt(self.head_dim)
        if mask is not None and self.bounded_masking:
            probabilities = self._bounded_masked_softmax(scores, mask)
        else:
            if mask is not None:
                # A large negative instead of -inf keeps fully masked rows
                # (queries at padding) finite rather than NaN.
                scores = ops.where(mask[:, None, :, :], scores, -1e9)
            probabilities = ops.softmax(scores, axis=-1)
        probabilities = ops.cast(probabilities, query.dtype)
        dropped = self.dropout_layer(probabilities, training=training)
        # (batch, query_len, heads, head_dim)
        outputs = ops.einsum("bnqk,bknh->bqnh", dropped, value)
        return outputs, probabilities

    def _bounded_masked_softmax(self, scores, mask):
        # The softmax of the visible scores without the -1e9 of the usual
        # form, which stretches the int8 quantization range of the masked
        # scores until the real ones round to the same value. Hidden scores
        # are replaced by the row's minimum (a value already in range), the
        # visible maximum is subtracted, and hidden weights are zeroed after
        # the exponential: every intermediate stays within the scores'
        # range or in [0, 1]. Used for integer export.
        mask = ops.broadcast_to(mask[:, None, :, :], ops.shape(scores))
        row_min = ops.min(scores, axis=-1, keepdims=True)
        visible = ops.where(mask, scores, row_min)
        shifted = visible - ops.max(visible, axis=-1, keepdims=True)
        weights = ops.where(mask, ops.exp(shifted), 0.0)
        return weights / (ops.sum(weights, axis=-1, keepdims=True) + 1e-9)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "num_heads": self.num_heads,
                "dropout": self.dropout,
                "use_bias": self.use_bias,
                "rotary_max_wavelength": self.rotary_max_wavelength,
                "use_fused_attention": self.use_fused_attention,
                "kernel_initializer": keras.initializers.serialize(
                    self.kernel_initializer
                ),
                "bias_initializer": keras.initializers.serialize(
                    self.bias_initializer
                ),
            }
        )
        return config

    def compute_output_shape(self, inputs_shape):
        return inputs_shape
