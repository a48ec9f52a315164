"""Text to batches: corpus readers, windows, masking and `tf.data`."""

from keras_tfm.data.corpus import default_corpus
from keras_tfm.data.corpus import expand_patterns
from keras_tfm.data.corpus import load_corpus
from keras_tfm.data.corpus import read_text_file
from keras_tfm.data.masking import mask_tokens
from keras_tfm.data.pipeline import make_dataset
from keras_tfm.data.prepared import PreparedCorpus
from keras_tfm.data.prepared import is_prepared_directory
from keras_tfm.data.prepared import open_prepared
from keras_tfm.data.readers import read_documents
from keras_tfm.data.windows import LMData
from keras_tfm.data.windows import Windows
from keras_tfm.data.windows import pack_windows
from keras_tfm.data.windows import prepare_lm_data
from keras_tfm.data.windows import split_windows
from keras_tfm.data.windows import tokenize_stream
