"""Pre-training: the config, the strategy and `train()`."""

from keras_tfm.training.config import TrainConfig
from keras_tfm.training.config import make_config
from keras_tfm.training.strategy import autoclustering_active
from keras_tfm.training.strategy import autoclustering_environment
from keras_tfm.training.train import TrainingDiverged
from keras_tfm.training.train import train
