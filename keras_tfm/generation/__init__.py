"""Generating text: samplers and the cached decoding loop."""

from keras_tfm.generation.causal import generate
from keras_tfm.generation.causal import generate_ids
from keras_tfm.generation.samplers import check_sampling
from keras_tfm.generation.samplers import make_sampler
