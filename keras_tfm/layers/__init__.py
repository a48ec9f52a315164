"""Transformer layers: serializable Keras 3 layers written with `keras.ops`."""

from keras_tfm.layers.activations import gelu_approximate
from keras_tfm.layers.cross_attention import CrossAttention
from keras_tfm.layers.masks import compute_causal_mask
from keras_tfm.layers.masks import merge_attention_masks
from keras_tfm.layers.multi_head_attention import MultiHeadAttention
from keras_tfm.layers.position_embedding import PositionEmbedding
from keras_tfm.layers.rotary_embedding import RotaryEmbedding
from keras_tfm.layers.sine_position_encoding import SinePositionEncoding
from keras_tfm.layers.transformer_decoder import TransformerDecoder
from keras_tfm.layers.transformer_decoder_block import TransformerDecoderBlock
from keras_tfm.layers.transformer_encoder import TransformerEncoder
from keras_tfm.layers.transformer_encoder_block import TransformerEncoderBlock
