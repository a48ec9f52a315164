"""Export a trained run: `python export/export.py RUN_DIR [flags]`.

The same as `keras-tfm export RUN_DIR [flags]`; the logic lives in
`keras_tfm.export`, where tests and notebooks can import it.
"""

import sys

from keras_tfm.cli import main

if __name__ == "__main__":
    sys.exit(main(["export", *sys.argv[1:]], allow_restart=True))
