"""Training: the config, the strategy, the train step, the loop, `train()`."""

from keras_tfm.training.config import TrainConfig
from keras_tfm.training.config import make_config
from keras_tfm.training.loop import PREEMPTED_EXIT_CODE
from keras_tfm.training.loop import Preempted
from keras_tfm.training.loop import TrainingDiverged
from keras_tfm.training.strategy import autoclustering_active
from keras_tfm.training.strategy import autoclustering_environment
from keras_tfm.training.train import train
from keras_tfm.training.training_model import TrainingModel
