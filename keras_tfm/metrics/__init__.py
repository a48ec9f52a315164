"""The figures keras-tfm reports, each computed one way."""

from keras_tfm.metrics.bits_per_byte import bits_per_byte
from keras_tfm.metrics.classification import classification_metrics
from keras_tfm.metrics.language_model import evaluate_windows
from keras_tfm.metrics.language_model import unigram_bits_per_byte
from keras_tfm.metrics.language_model import unigram_bits_per_byte_from_counts
