import keras

from keras_tfm.layers.activations import get_activation
from keras_tfm.layers.checks import check_heads_divide
from keras_tfm.layers.cross_attention import CrossAttention
from keras_tfm.layers.initializers import clone_initializer
from keras_tfm.layers.multi_head_attention import MultiHeadAttention


@keras.saving.register_keras_serializable(package="keras_tfm")
class TransformerDecoderBlock(keras.layers.Layer):
    """One decoder block: causal self-attention, cross-attention, feed-forward.

    The block of an encoder-decoder Transformer. Each of the three sublayers
    sits in a residual branch with dropout and layer normalization, either
    before the sublayer (`normalize_first=True`, pre-LN) or after the
    residual sum (`normalize_first=False`, post-LN as in the original
    Transformer), as in `TransformerEncoderBlock`. Self-attention is always
    causal; cross-attention attends to the encoder's outputs, with padded
    source positions hidden.

    For incremental decoding the block takes two caches: the self-attention
    keys and values of the target positions so far (updated by each call
    and returned), and the cross-attention keys and values of the encoder
    outputs (from `compute_cross_attention_cache`, read only).

    The self-attention sublayers are `TransformerEncoderBlock`'s under a
    `self_` prefix (`self_attention`, `self_attention_norm`) and the
    feed-forward ones keep their names, so a causal LM's blocks map onto
    decoder blocks (`Seq2SeqLM.load_encoder_weights`).

    Args:
        num_heads: int. The number of attention heads.
        intermediate_dim: int. The hidden size of the feed-forward network.
        dropout: float. Dropout rate on attention probabilities and on the
            three residual branches. Defaults to `0.0`.
        activation: string or callable. The feed-forward activation.
            Defaults to `"gelu"`.
        layer_norm_epsilon: float. Epsilon of the layer norms. Defaults to
            `1e-5`.
        normalize_first: bool. Pre-LN if true, post-LN if false. Defaults to
            `True`.
        use_bias: bool. Whether dense layers and norms have biases. Defaults
            to `True`.
        rotary_max_wavelength: int or `None`. If set, self-attention applies
            rotary position embeddings (cross-attention never does).
            Defaults to `None`.
        use_fused_attention: bool. Passed to both attention layers. Defaults
            to `True`.
        kernel_initializer: initializer for dense kernels. Defaults to
            `"glorot_uniform"`.
        bias_initializer: initializer for dense biases. Defaults to
            `"zeros"`.
        **kwargs: other keyword arguments passed to `keras.layers.Layer`.

    Call arguments:
        inputs: the target hidden states, `(batch_size, target_length,
            hidden_dim)`.
        encoder_outputs: `(batch_size, source_length, hidden_dim)`. Give
            either this or `cross_attention_cache`.
        decoder_padding_mask: optional `(batch_size, key_length)` tensor, 1
            at real target tokens, 0 at padding; `key_length` is the self-
            attention cache's length when a cache is passed.
        encoder_padding_mask: optional `(batch_size, source_length)` tensor,
            1 at real source tokens, 0 at padding.
        self_attention_cache: optional `(batch_size, 2, max_length,
            num_heads, head_dim)` keys and values of the target positions.
            When given, the call returns `(outputs, self_attention_cache)`.
        cross_attention_cache: optional `(batch_size, 2, source_length,
            num_heads, head_dim)`, from `compute_cross_attention_cache`.
        cache_update_index: int or int tensor. Position of the first input
            token in the self-attention cache.
        training: bool. Whether dropout is active.

    Returns:
        `(batch_size, target_length, hidden_dim)`, and the updated
        self-attention cache if one was passed.

    Example:
    ```python
    block = keras_tfm.layers.TransformerDecoderBlock(
        num_heads=2, intermediate_dim=64
    )
    targets = keras.random.normal((2, 5, 16))
    encoder_outputs = keras.random.normal((2, 7, 16))
    y = block(targets, encoder_outputs=encoder_outputs)  # (2, 5, 16)
    ```

    References:
        - [Vaswani et al., 2017](https://arxiv.org/abs/1706.03762)
        - [Xiong et al., 2020](https://arxiv.org/abs/2002.04745) (pre-LN)
    """

    def __init__(
        self,
        num_heads,
        intermediate_dim,
        dropout=0.0,
        activation="gelu",
        layer_norm_epsilon=1e-5,
        normalize_first=True,
        use_bias=True,
        rotary_max_wavelength=None,
        use_fused_attention=True,
        kernel_initializer="glorot_uniform",
        bias_initializer="zeros",
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.num_heads = num_heads
        self.intermediate_dim = intermediate_dim
        self.dropout = dropout
        self.activation = get_activation(activation)
        self.layer_norm_epsilon = layer_norm_epsilon
        self.normalize_first = normalize_first
        self.use_bias = use_bias
        self.rotary_max_wavelength = rotary_max_wavelength
        self.use_fused_attention = use_fused_attention
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)

    def build(self, inputs_shape):
        # The encoder outputs share the hidden size, so the target states'
        # shape builds every sublayer.
        hidden_dim = inputs_shape[-1]
        check_heads_divide(hidden_dim, self.num_heads)
        attention_kwargs = dict(
            num_heads=self.num_heads,
            dropout=self.dropout,
            use_bias=self.use_bias,
            use_fused_attention=self.use_fused_attention,
            dtype=self.dtype_policy,
        )
        # === Causal self-attention branch ===
        self.self_attention_norm = self._layer_norm(
            "self_attention_norm", inputs_shape
        )
        self.self_attention = MultiHeadAttention(
            rotary_max_wavelength=self.rotary_max_wavelength,
            kernel_initializer=clone_initializer(self.kernel_initializer),
            bias_initializer=clone_initializer(self.bias_initializer),
            name="self_attention",
            **attention_kwargs,
        )
        self.self_attention.build(inputs_shape)
        self.self_attention_dropout = self._dropout("self_attention_dropout")
        # === Cross-attention branch ===
        self.cross_attention_norm = self._layer_norm(
            "cross_attention_norm", inputs_shape
        )
        self.cross_attention = CrossAttention(
            kernel_initializer=clone_initializer(self.kernel_initializer),
            bias_initializer=clone_initializer(self.bias_initializer),
            name="cross_attention",
            **attention_kwargs,
        )
        self.cross_attention.build(inputs_shape)
        self.cross_attention_dropout = self._dropout("cross_attention_dropout")
        # === Feed-forward branch ===
        self.feedforward_norm = self._layer_norm(
            "feedforward_norm", inputs_shape
        )
        self.feedforward_intermediate = keras.layers.Dense(
            self.intermediate_dim,
            activation=self.activation,
            use_bias=self.use_bias,
            kernel_initializer=clone_initializer(self.kernel_initializer),
            bias_initializer=clone_initializer(self.bias_initializer),
            dtype=self.dtype_policy,
            name="feedforward_intermediate",
        )
        self.feedforward_intermediate.build(inputs_shape)
        self.feedforward_output = keras.layers.Dense(
            hidden_dim,
            use_bias=self.use_bias,
            kernel_initializer=clone_initializer(self.kernel_initializer),
            bias_initializer=clone_initializer(self.bias_initializer),
            dtype=self.dtype_policy,
            name="feedforward_output",
        )
        self.feedforward_output.build(
            tuple(inputs_shape[:-1]) + (self.intermediate_dim,)
        )
        self.feedforward_dropout = self._dropout("feedforward_dropout")
        self.built = True

    def _layer_norm(self, name, inputs_shape):
        norm = keras.layers.LayerNormalization(
            epsilon=self.layer_norm_epsilon,
            center=self.use_bias,
            dtype=self.dtype_policy,
            name=name,
        )
        norm.build(inputs_shape)
        return norm

    def _dropout(self, name):
        return keras.layers.Dropout(
            self.dropout, dtype=self.dtype_policy, name=name
        )

    def compute_cross_attention_cache(self, encoder_outputs):
        """Cross-attention keys and values, `(batch_size, 2, source_length,
        num_heads, head_dim)`, to pass as `cross_attention_cache`."""
        return self.cross_attention.compute_cache(encoder_outputs)

    def call(
        self,
        inputs,
        encoder_outputs=None,
        decoder_padding_mask=None,
        encoder_padding_mask=None,
        self_attention_cache=None,
        cross_attention_cache=None,
        cache_update_index=0,
        training=None,
    ):
        # === Causal self-attention ===
        x = inputs
        if self.normalize_first:
            x = self.self_attention_norm(x)
        attention = self.self_attention(
            x,
            padding_mask=decoder_padding_mask,
            use_causal_mask=True,
            cache=self_attention_cache,
            cache_update_index=cache_update_index,
            training=training,
        )
        if self_attention_cache is not None:
            attention, self_attention_cache = attention
        x = inputs + self.self_attention_dropout(attention, training=training)
        if not self.normalize_first:
            x = self.self_attention_norm(x)

        # === Cross-attention ===
        residual = x
        if self.normalize_first:
            x = self.cross_attention_norm(x)
        attention = self.cross_attention(
            x,
            encoder_outputs=encoder_outputs,
            encoder_padding_mask=encoder_padding_mask,
            cache=cross_attention_cache,
            training=training,
        )
        x = residual + self.cross_attention_dropout(
            attention, training=training
        )
        if not self.normalize_first:
            x = self.cross_attention_norm(x)

        # === Feed-forward ===
        residual = x
        if self.normalize_first:
            x = self.feedforward_norm(x)
        x = self.feedforward_output(self.feedforward_intermediate(x))
        x = residual + self.feedforward_dropout(x, training=training)
        if not self.normalize_first:
            x = self.feedforward_norm(x)

        if self_attention_cache is not None:
            return x, self_attention_cache
        return x

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "num_heads": self.num_heads,
                "intermediate_dim": self.intermediate_dim,
                "dropout": self.dropout,
                "activation": keras.activations.serialize(self.activation),
                "layer_norm_epsilon": self.layer_norm_epsilon,
                "normalize_first": self.normalize_first,
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

    def compute_output_spec(
        self,
        inputs,
        encoder_outputs=None,
        decoder_padding_mask=None,
        encoder_padding_mask=None,
        self_attention_cache=None,
        cross_attention_cache=None,
        cache_update_index=0,
        training=None,
    ):
        # Spelled out because the output's structure depends on the cache.
        outputs = keras.KerasTensor(inputs.shape, dtype=self.compute_dtype)
        if self_attention_cache is None:
            return outputs
        cache = keras.KerasTensor(
            self_attention_cache.shape, dtype=self_attention_cache.dtype
        )
        return outputs, cache
