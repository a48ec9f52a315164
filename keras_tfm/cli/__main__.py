import sys

from keras_tfm.cli.main import main

sys.exit(main())
