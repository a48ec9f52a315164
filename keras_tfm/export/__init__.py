"""Export a trained run: SavedModel for TF Serving, TFLite for phones."""

from keras_tfm.export import decoder
from keras_tfm.export import saved_model
from keras_tfm.export import text_tflite
from keras_tfm.export import tflite
from keras_tfm.export.run_export import DECODER_NAME
from keras_tfm.export.run_export import FORMATS
from keras_tfm.export.run_export import QUANTIZATIONS
from keras_tfm.export.run_export import TEXT_NAME
from keras_tfm.export.run_export import TFLITE_NAMES
from keras_tfm.export.run_export import export_run
