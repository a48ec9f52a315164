import keras

from keras_tfm.layers.activations import get_activation
from keras_tfm.layers.checks import check_heads_divide
from keras_tfm.layers.initializers import clone_initializer
from keras_tfm.layers.multi_head_attention import MultiHeadAttention


@keras.saving.register_keras_serializable(package="keras_tfm")
class TransformerEncoderBlock(keras.layers.Layer):
    """One Transformer block: self-attention, then a feed-forward network.

    Each sublayer sits in a residual branch with dropout and layer
    normalization, either before the sublayer (`normalize_first=True`,
    pre-LN as in GPT-2, which trains stably without warmup tricks) or after
    the residual sum (`normalize_first=False`, post-LN as in the original
    Transformer and BERT). With `use_causal_mask=True` at call time the
    block is a GPT decoder block; without it, a BERT encoder block.

    This is keras-hub's `TransformerEncoder` (which is a single block) under
    Model Garden's name; the stack of blocks is `TransformerEncoder`.

    Args:
        num_heads: int. The number of attention heads.
        intermediate_dim: int. The hidden size of the feed-forward network.
        dropout: float. Dropout rate on attention probabilities and on both
            residual branches. Defaults to `0.0`.
        activation: string or callable. The feed-forward activation.
            Defaults to `"gelu"`.
        layer_norm_epsilon: float. Epsilon of the layer norms. Defaults to
            `1e-5`.
        normalize_first: bool. Pre-LN if true, post-LN if false. Defaults to
            `True`.
        use_bias: bool. Whether dense layers and norms have biases. Defaults
            to `True`.
        rotary_max_wavelength: int or `None`. If set, attention applies
            rotary position embeddings. Defaults to `None`.
        use_fused_attention: bool. Passed to `MultiHeadAttention`. Defaults
            to `True`.
        kernel_initializer: initializer for dense kernels. Defaults to
            `"glorot_uniform"`.
        bias_initializer: initializer for dense biases. Defaults to
            `"zeros"`.
        **kwargs: other keyword arguments passed to `keras.layers.Layer`.

    Call arguments:
        inputs: tensor of shape `(batch_size, sequence_length, hidden_dim)`.
        padding_mask: optional `(batch_size, key_length)` tensor, 1 at real
            tokens and 0 at padding.
        use_causal_mask: bool. Whether tokens only see earlier tokens.
        cache: optional `(batch_size, 2, max_length, num_heads, head_dim)`
            key/value cache; when given, returns `(outputs, cache)`.
        cache_update_index: int or int tensor. Position of the first input
            token in the cache.
        training: bool. Whether dropout is active.
        attention_mask: optional `(batch_size, query_length, key_length)`
            tensor, true where a token may attend (e.g. within its
            document).

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
        # Infer the hidden size from the input, as keras-hub does.
        hidden_dim = inputs_shape[-1]
        check_heads_divide(hidden_dim, self.num_heads)
        dense_kwargs = dict(
            use_bias=self.use_bias,
            dtype=self.dtype_policy,
        )
        # === Attention branch ===
        self.attention_norm = self._layer_norm("attention_norm", inputs_shape)
        self.attention = MultiHeadAttention(
            num_heads=self.num_heads,
            dropout=self.dropout,
            use_bias=self.use_bias,
            rotary_max_wavelength=self.rotary_max_wavelength,
            use_fused_attention=self.use_fused_attention,
            kernel_initializer=clone_initializer(self.kernel_initializer),
            bias_initializer=clone_initializer(self.bias_initializer),
            dtype=self.dtype_policy,
            name="attention",
        )
        self.attention.build(inputs_shape)
        self.attention_dropout = keras.layers.Dropout(
            self.dropout, dtype=self.dtype_policy, name="attention_dropout"
        )
        # === Feed-forward branch ===
        self.feedforward_norm = self._layer_norm(
            "feedforward_norm", inputs_shape
        )
        self.feedforward_intermediate = keras.layers.Dense(
            self.intermediate_dim,
            activation=self.activation,
            kernel_initializer=clone_initializer(self.kernel_initializer),
            bias_initializer=clone_initializer(self.bias_initializer),
            name="feedforward_intermediate",
            **dense_kwargs,
        )
        self.feedforward_intermediate.build(inputs_shape)
        self.feedforward_output = keras.layers.Dense(
            hidden_dim,
            kernel_initializer=clone_initializer(self.kernel_initializer),
            bias_initializer=clone_initializer(self.bias_initializer),
            name="feedforward_output",
            **dense_kwargs,
        )
        self.feedforward_output.build(
            tuple(inputs_shape[:-1]) + (self.intermediate_dim,)
        )
        self.feedforward_dropout = keras.layers.Dropout(
            self.dropout, dtype=self.dtype_policy, name="feedforward_dropout"
        )
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

    def call(
        self,
        inputs,
        padding_mask=None,
        use_causal_mask=False,
        cache=None,
        cache_update_index=0,
        training=None,
        attention_mask=None,
    ):
        # === Self-attention ===
        x = inputs
        if self.normalize_first:
            x = self.attention_norm(x)
        attention = self.attention(
            x,
            padding_mask=padding_mask,
            use_causal_mask=use_causal_mask,
            cache=cache,
            cache_update_index=cache_update_index,
            training=training,
            attention_mask=attention_mask,
        )
        if cache is not None:
            attention, cache = attention
        x = inputs + self.attention_dropout(attention, training=training)
        if not self.normalize_first:
            x = self.attention_norm(x)

        # === Feed-forward ===
        residual = x
        if self.normalize_first:
            x = self.feedforward_norm(x)
        x = self.feedforward_output(self.feedforward_intermediate(x))
        x = residual + self.feedforward_dropout(x, training=training)
        if not self.normalize_first:
            x = self.feedforward_norm(x)

        if cache is not None:
            return x, cache
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

    def compute_output_shape(self, inputs_shape):
        return inputs_shape
