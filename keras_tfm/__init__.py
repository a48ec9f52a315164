"""keras-tfm: pre-train Transformer language models with TensorFlow and Keras.

    from keras_tfm import layers, models, data, tokenizers
"""

import os

# keras-tfm is built on TensorFlow ops (tf.data, tensorflow-text,
# tf.distribute).
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

from keras_tfm._startup import import_tensorflow_quietly  # noqa: E402

import_tensorflow_quietly()

from keras_tfm import layers  # noqa: E402
from keras_tfm import models  # noqa: E402

__version__ = "0.1.0"
