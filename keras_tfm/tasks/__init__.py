"""What a run is for: pre-training's language model and the fine-tuning
tasks, each with its data, model, metric and decoding settings named."""

from keras_tfm.tasks.language_model import evaluate_run
from keras_tfm.tasks.language_model import generate_from_run
from keras_tfm.tasks.language_model import load_run
from keras_tfm.tasks.language_model import run_data
