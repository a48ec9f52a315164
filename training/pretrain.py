"""Pre-train a language model: `python training/pretrain.py [flags]`.

The same as `keras-tfm pretrain [flags]`. This file is intentionally kept
short: the logic lives in `keras_tfm.training`, where tests and notebooks
can import it.
"""

import sys

from keras_tfm.cli import main

if __name__ == "__main__":
    sys.exit(main(["pretrain", *sys.argv[1:]], allow_restart=True))
