import keras
from keras import ops

from keras_tfm.layers.activations import get_activation
from keras_tfm.layers.initializers import clone_initializer
from keras_tfm.layers.transformer_decoder_block import TransformerDecoderBlock


@keras.saving.register_keras_serializable(package="keras_tfm")
class TransformerDecoder(keras.layers.Layer):
    """A stack of `num_layers` `TransformerDecoderBlock`s.

    Every block attends to the same encoder outputs. As in
    `TransformerEncoder`, pre-LN blocks leave the residual stream
    unnormalized, so the stack then ends with a final layer norm; post-LN
    blocks get none.

    Caches are stacked per layer on axis 1, as `TransformerEncoder` stacks
    its KV cache: self-attention `(batch_size, num_layers, 2, max_length,
    num_heads, head_dim)`, cross-attention `(batch_size, num_layers, 2,
    source_length, num_heads, head_dim)`; on the third axis, index 0 holds
    keys and 1 values.

    Note that keras-hub's `TransformerDecoder` is a single block; here it is
    the whole stack, and `TransformerDecoderBlock` is the block.

    Args:
        num_layers: int. The number of blocks.
        num_heads: int. Attention heads per block.
        intermediate_dim: int. Feed-forward hidden size.
        dropout, activation, layer_norm_epsilon, normalize_first, use_bias,
        rotary_max_wavelength, use_fused_attention, kernel_initializer,
        bias_initializer: passed to every `TransformerDecoderBlock`.
        **kwargs: other keyword arguments passed to `keras.layers.Layer`.

    Call arguments:
        inputs: the target hidden states, `(batch_size, target_length,
            hidden_dim)`.
        encoder_outputs: `(batch_size, source_length, hidden_dim)`. Give
            either this or `cross_attention_cache`.
        decoder_padding_mask: optional `(batch_size, key_length)` tensor.
        encoder_padding_mask: optional `(batch_size, source_length)` tensor.
        self_attention_cache: optional stacked self-attention cache; when
            given, the call returns `(outputs, self_attention_cache)`.
        cross_attention_cache: optional stacked cross-attention cache, from
            `compute_cross_attention_cache`.
        cache_update_index: int or int tensor. Position of the first input
            token.
        training: bool. Whether dropout is active.

    Returns:
        `(batch_size, target_length, hidden_dim)`, and the updated
        self-attention cache if one was passed.
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
            block = TransformerDecoderBlock(
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

    def compute_cross_attention_cache(self, encoder_outputs):
        """Every block's cross-attention keys and values, `(batch_size,
        num_layers, 2, source_length, num_heads, head_dim)`."""
        return ops.stack(
            [
                block.compute_cross_attention_cache(encoder_outputs)
                for block in self.blocks
            ],
            axis=1,
        )

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
        x = inputs
        layer_caches = []
        for i, block in enumerate(self.blocks):
            outputs = block(
                x,
                encoder_outputs=encoder_outputs,
                decoder_padding_mask=decoder_padding_mask,
                encoder_padding_mask=encoder_padding_mask,
                # [:, i]: (batch, 2, length, num_heads, head_dim)
                self_attention_cache=(
                    None
                    if self_attention_cache is None
                    else self_attention_cache[:, i]
                ),
                cross_attention_cache=(
                    None
                    if cross_attention_cache is None
                    else cross_attention_cache[:, i]
                ),
                cache_update_index=cache_update_index,
                training=training,
            )
            if self_attention_cache is None:
                x = outputs
            else:
                x, layer_cache = outputs
                layer_caches.append(layer_cache)
        if self.final_norm is not None:
            x = self.final_norm(x)
        if self_attention_cache is not None:
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
