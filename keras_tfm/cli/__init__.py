"""The `keras-tfm` command: one module per subcommand."""

from keras_tfm.cli.main import main
