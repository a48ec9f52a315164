"""Importing TensorFlow without its start-up noise on stderr.

TensorFlow 2.21 logs from C++ before absl's logging is set up, so
`TF_CPP_MIN_LOG_LEVEL` cannot hide lines such as "oneDNN custom operations
are on" or "Could not find cuda drivers". When that variable is at least 1
(keras-tfm's default is 2), stderr is silenced while TensorFlow loads and,
on hosts without an NVIDIA driver, while it probes for GPUs (whose failure,
"failed call to cuInit", is expected there). Python errors still surface.
Set TF_CPP_MIN_LOG_LEVEL=0 to see everything.
"""

import contextlib
import os
import sys

# TensorFlow reads TF_XLA_FLAGS once, as it starts: what it saw decides
# whether `jit_compile="autocluster"` can take effect in this process.
TF_XLA_FLAGS_AT_IMPORT = os.environ.get("TF_XLA_FLAGS", "")


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


def import_tensorflow_quietly():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if "tensorflow" in sys.modules or os.environ["TF_CPP_MIN_LOG_LEVEL"] == "0":
        return
    with _silenced_stderr():
        import tensorflow as tf

        if not os.path.exists("/proc/driver/nvidia"):
            tf.config.list_physical_devices()
