"""Language models built from `keras_tfm.layers`."""

from keras_tfm.models.causal_lm import CausalLM
from keras_tfm.models.masked_lm import MaskedLM
from keras_tfm.models.metrics import default_metrics
from keras_tfm.models.seq2seq_lm import Seq2SeqLM
from keras_tfm.models.text_classifier import TextClassifier
from keras_tfm.models.transformer_lm import TransformerLM
