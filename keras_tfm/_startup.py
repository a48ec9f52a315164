"""Importing TensorFlow (and converting to TFLite) without noise on stderr.

TensorFlow 2.21 logs from C++ before absl's logging is set up, so
`TF_CPP_MIN_LOG_LEVEL` cannot hide lines such as "oneDNN custom operations
are on" or "Could not find cuda drivers". When that variable is at least 1
(keras-tfm's default is 2), stderr is silenced while TensorFlow loads and,
on hosts without an NVIDIA driver, while it probes for GPUs (whose failure,
"failed call to cuInit", is expected there). Python errors still surface.
Set TF_CPP_MIN_LOG_LEVEL=0 to see everything.

The same switch covers the chatter of TFLite conversion and of the
interpreter (`quiet_stderr()`), and three Python warnings that say nothing
to a keras-tfm user: Keras' "`shuffle=True` ... will be ignored" for a
tf.data stream (keras-tfm's streams are shuffled by step), tqdm's
"IProgress not found" (keras-hub imports tqdm in notebooks without
ipywidgets), and the deprecation notice of `tf.lite.Interpreter`, which
TensorFlow's own quantization debugger uses (keras-tfm runs files with
ai-edge-litert).
"""

import contextlib
import os
import sys
import warnings

# TensorFlow reads TF_XLA_FLAGS once, as it starts: what it saw decides
# whether `jit_compile="autocluster"` can take effect in this process.
TF_XLA_FLAGS_AT_IMPORT = os.environ.get("TF_XLA_FLAGS", "")


def verbose():
    """Whether the user asked for TensorFlow's full output."""
    return os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2") == "0"


@contextlib.contextmanager
def quiet_stderr():
    """Silences native stderr (C++ logs) in the block unless `verbose()`.

    Python exceptions still surface: the file descriptor is restored
    before they propagate.
    """
    if verbose():
        yield
        return
    with _silenced_stderr():
        yield


@contextlib.contextmanager
def _silenced_stderr():
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def _ignore_noise_warnings():
    for message in (
        r"`shuffle=True` was passed, but will be ignored",
        r"IProgress not found",
        r"\s*Warning: tf.lite.Interpreter is deprecated",
    ):
        warnings.filterwarnings("ignore", message=message)


def import_tensorflow_quietly():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if not verbose():
        _ignore_noise_warnings()
        # TensorFlow's Python logger says "Assets written to ..." at INFO
        # on every SavedModel write.
        import logging

        logging.getLogger("tensorflow").setLevel(logging.WARNING)
    if "tensorflow" in sys.modules or os.environ["TF_CPP_MIN_LOG_LEVEL"] == "0":
        return
    with _silenced_stderr():
        import tensorflow as tf

        if not os.path.exists("/proc/driver/nvidia"):
            tf.config.list_physical_devices()
