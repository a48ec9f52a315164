"""Milliseconds per generated token, TFLite decode vs recompute and Keras:
`python export/decode_latency.py [--contexts 64 256]`. The logic (and the
description of what is measured) is in `keras_tfm.benchmarks.latency`."""

from keras_tfm.benchmarks.latency import main

if __name__ == "__main__":
    main()
