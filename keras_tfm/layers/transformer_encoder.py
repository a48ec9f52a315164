import keras
from keras import ops

from keras_tfm.layers.activations import get_activation
from keras_tfm.layers.initializers import clone_initializer
from keras_tfm.layers.transformer_encoder_block import TransformerEncoderBlock


@keras.saving.register_keras_serializable(package="keras_tfm")
class TransformerEncoder(keras.layers.Layer):
    """A stack of `num_layers` `TransformerEncoderBlock`s.

    With pre-LN blocks (`normalize_first=True`) the residual stream leaves
    the last block unnormalized, so the stack ends with a final layer norm
    (as GPT-2 does); post-LN blocks already end normalized and get none.

    Note that keras-hub's `TransformerEncoder` is a single block; here it is
    the whole stack, and `TransformerEncoderBlock` is the block.

    Args:
        num_layers: int. The number of blocks.
        num_heads: int. Attention heads per block.
        intermediate_dim: int. Feed-forward hidden size.
        dropout, activation, layer_norm_epsilon, normalize_first, use_bias,
        rotary_max_wavelength, use_fused_attention, kernel_initializer,
        bias_initializer: passed to every `TransformerEncoderBlock`.
        **kwargs: other keyword arguments passed to `keras.layers.Layer`.

    Call arguments:
        inputs: tensor of shape `(batch_size, sequence_length, hidden_dim)`.
        padding_mask: optional `(batch_size, key_length)` tensor.
        use_causal_mask: bool. Whether tokens only see earlier tokens.
        cache: optional `(batch_size, num_layers, 2, max_length, num_heads,
            head_dim)` key/value cache for all blocks; when given, the call
            returns `(outputs, cache)`.
        cache_update_index: int or int tensor. Position of the first input
            token.
        training: bool. Whether dropout is active.
        attention_mask: optional `(batch_size, query_length, key_length)`
            tensor, true where a token may attend.
    """

    def __init__(
        self,
        num_layers,
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
        self.num_layers = num_layers
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
        self.blocks = []
        for i in range(self.num_layers):
            block = TransformerEncoderBlock(
                num_heads=self.num_heads,
                intermediate_dim=self.intermediate_dim,
                dropout=self.dropout,
                activation=self.activation,
                layer_norm_epsilon=self.layer_norm_epsilon,
                normalize_first=self.normalize_first,
                use_bias=self.use_bias,
                rotary_max_wavelength=self.rotary_max_wavelength,
                use_fused_attention=self.use_fused_attention,
                kernel_initializer=clone_initializer(self.kernel_initializer),
                bias_initializer=clone_initializer(self.bias_initializer),
                dtype=self.dtype_policy,
                name=f"block_{i}",
            )
            block.build(inputs_shape)
            self.blocks.append(block)
        self.final_norm = None
        if self.normalize_first:
            self.final_norm = keras.layers.LayerNormalization(
                epsilon=self.layer_norm_epsilon,
                center=self.use_bias,
                dtype=self.dtype_policy,
                name="final_norm",
            )
            self.final_norm.build(inputs_shape)
        self.built = True

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
        x = inputs
        layer_caches = []
        for i, block in enumerate(self.blocks):
            if cache is None:
                x = block(
                    x,
                    padding_mask=padding_mask,
                    use_causal_mask=use_causal_mask,
                    training=training,
                    attention_mask=attention_mask,
                )
                continue
            # cache[:, i]: (batch, 2, max_length, num_heads, head_dim)
            x, layer_cache = block(
                x,
                padding_mask=padding_mask,
                use_causal_mask=use_causal_mask,
                cache=cache[:, i],
                cache_update_index=cache_update_index,
                training=training,
                attention_mask=attention_mask,
            )
            layer_caches.append(layer_cache)
        if self.final_norm is not None:
            x = self.final_norm(x)
        if cache is not None:
            return x, ops.stack(layer_caches, axis=1)
        return x

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "num_layers": self.num_layers,
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
