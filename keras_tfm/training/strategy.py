"""Choosing the `tf.distribute` strategy, and who writes the run."""

import json
import os
import sys

import tensorflow as tf

from keras_tfm import _startup
from keras_tfm.errors import ConfigError
from keras_tfm.errors import UserError

STRATEGIES = ("auto", "default", "mirrored", "multi_worker", "tpu")


def split_cpu(num_devices):
    """Splits the host CPU into `num_devices` logical devices.

    With them MirroredStrategy runs one replica per logical CPU, so
    multi-device code paths can be tried and tested without GPUs. Must run
    before TensorFlow initializes its devices.
    """
    cpus = tf.config.list_physical_devices("CPU")
    configs = [
        tf.config.LogicalDeviceConfiguration() for _ in range(num_devices)
    ]
    try:
        tf.config.set_logical_device_configuration(cpus[0], configs)
    except RuntimeError:
        current = len(tf.config.list_logical_devices("CPU"))
        if current == num_devices:
            return
        raise UserError(
            f"cannot split the CPU into {num_devices} devices: TensorFlow "
            f"already started with {current}; pass --cpu-devices on the "
            "command line, or call keras_tfm.training.strategy.split_cpu() "
            "before anything else."
        ) from None


def get_strategy(name="auto", cpu_devices=0):
    """Returns a `tf.distribute.Strategy` by name.

    Args:
        name: `"auto"`: MirroredStrategy over all GPUs when there are
            several (or over the logical CPUs of `cpu_devices > 1`), else
            the default strategy. `"default"`: one device. `"mirrored"`:
            MirroredStrategy over all GPUs, or over the logical CPUs.
            `"multi_worker"`: MultiWorkerMirroredStrategy configured by the
            `TF_CONFIG` environment variable. `"tpu"`: TPUStrategy on the
            TPU this host is attached to (Colab, Cloud TPU VM).
        cpu_devices: int. If above 1, split the CPU into that many logical
            devices first.
    """
    if name not in STRATEGIES:
        raise UserError(
            f"unknown strategy '{name}': use one of {', '.join(STRATEGIES)}."
        )
    if name == "multi_worker":
        # Created before any other op, as TensorFlow requires.
        if "TF_CONFIG" not in os.environ:
            raise UserError(
                "--strategy multi_worker needs the TF_CONFIG environment "
                "variable (cluster and task): see the README."
            )
        if cpu_devices > 1:
            split_cpu(cpu_devices)
        return tf.distribute.MultiWorkerMirroredStrategy()
    if name == "tpu":
        return _tpu_strategy()
    if cpu_devices > 1:
        split_cpu(cpu_devices)
    gpus = tf.config.list_logical_devices("GPU")
    devices = [d.name for d in gpus]
    if not devices:
        devices = [d.name for d in tf.config.list_logical_devices("CPU")]
    if name == "auto":
        name = "mirrored" if len(devices) > 1 else "default"
    if name == "default":
        return tf.distribute.get_strategy()
    return tf.distribute.MirroredStrategy(devices=devices)


def _tpu_strategy():
    try:
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu="")
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
    except (ValueError, tf.errors.NotFoundError, RuntimeError) as e:
        raise UserError(
            f"no TPU found ({e}): use --strategy tpu on a TPU host, such as "
            "a Colab TPU runtime."
        ) from None
    return tf.distribute.TPUStrategy(resolver)


def is_chief(strategy):
    """Whether this process writes the run directory.

    Single-process strategies: always. Multi-worker: the task of type
    `chief`, or `worker` 0 when the cluster has no chief.
    """
    resolver = getattr(strategy, "cluster_resolver", None)
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return True
    task_type, task_id = resolver.task_type, resolver.task_id
    if task_type in (None, "chief"):
        return True
    cluster = json.loads(os.environ.get("TF_CONFIG", "{}")).get("cluster", {})
    return task_type == "worker" and task_id == 0 and "chief" not in cluster


def num_workers(strategy):
    """The processes of a multi-worker job (1 for single-process ones)."""
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return 1
    cluster = json.loads(os.environ.get("TF_CONFIG", "{}")).get("cluster", {})
    return max(1, len(cluster.get("worker", [])) + len(cluster.get("chief",
                                                                   [])))


def strategy_name(strategy):
    """`"multi_worker"`, `"mirrored"`, `"tpu"` or `"default"`."""
    if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return "multi_worker"
    if isinstance(strategy, tf.distribute.MirroredStrategy):
        return "mirrored"
    if isinstance(strategy, tf.distribute.TPUStrategy):
        return "tpu"
    return "default"


def resolve_jit_compile(setting, strategy):
    """Whether to compile the train step with XLA.

    Keras' own `"auto"` turns XLA off on CPU-only hosts and under every
    strategy. XLA is the largest single speed-up on CPU (it fuses the
    element-wise ops and the attention's backward), so keras-tfm's
    `"auto"` turns it on for a single
    replica, and off across several replicas, where XLA cannot reach
    variables placed on the other devices.
    """
    if setting == "true":
        return True
    if setting in ("false", "autocluster"):
        return False
    return strategy.num_replicas_in_sync == 1


def resolve_batch_splits(config, strategy, jit_compile):
    """The parts each batch is computed in (`batch_splits`, 0 = auto).

    On a CPU, XLA runs each
    element-wise op (GELU, softmax, the steps of a layer norm) on one
    thread while the other cores wait: in a profile of the nano step on
    two cores, one op ran at a time for ~80% of the step (matmuls spread
    over both threads, the other ops did not). Two
    independent halves of the batch in one compiled step let XLA run them
    side by side (docs/performance.md has the gain). Matmuls already use
    every core, and on a GPU the halves would only make kernels smaller,
    so `0` ("auto") splits a single-replica CPU run under XLA (or XLA
    auto-clustering) whose batch divides by 2, and nothing else.
    """
    replicas = strategy.num_replicas_in_sync
    # Each replica's share of one (accumulated) batch.
    micro_batch = config.batch_size // replicas
    splits = config.batch_splits
    if splits == 0:
        on_cpu = not (
            tf.config.list_logical_devices("GPU")
            or tf.config.list_logical_devices("TPU")
        )
        # Auto-clustering fuses element-wise ops with XLA too.
        fused = jit_compile or config.jit_compile == "autocluster"
        splits = (
            2
            if on_cpu and fused and replicas == 1 and micro_batch % 2 == 0
            else 1
        )
    elif micro_batch % splits:
        raise ConfigError(
            f"batch_size per replica ({micro_batch}) must be a multiple of "
            f"batch_splits ({splits}): change --batch-splits or "
            "--batch-size."
        )
    return splits


# XLA's auto-clustering of the ops it fuses well (element-wise, reductions,
# data movement): MatMul is not among them, so matmuls run on TensorFlow's
# oneDNN kernels, which use AMX for bfloat16 where XLA's CPU matmul does
# not. `tf_xla_auto_jit=2` clusters every candidate (the `ON_1` level that
# `tf.config.optimizer.set_jit` sets clusters less and gains less);
# `tf_xla_cpu_global_jit` lets auto-clustering act on CPU.
AUTOCLUSTER_FLAGS = (
    "--tf_xla_auto_jit=2",
    "--tf_xla_cpu_global_jit",
    "--tf_xla_ops_to_cluster=FUSIBLE",
)


def warn_without_autoclustering(setting):
    """Says on stderr that `jit_compile="autocluster"` cannot take effect
    in this process. Not an error: the run trains, XLA fusing less."""
    if setting == "autocluster" and not autoclustering_active():
        print(
            "keras-tfm: jit_compile 'autocluster' needs TF_XLA_FLAGS set "
            "before TensorFlow starts (keras_tfm.training."
            "autoclustering_environment() says how); this process runs "
            "without auto-clustering.",
            file=sys.stderr,
        )


def autoclustering_active():
    """Whether TensorFlow started with auto-clustering's flags."""
    flags = _startup.TF_XLA_FLAGS_AT_IMPORT.split()
    return all(flag in flags for flag in AUTOCLUSTER_FLAGS)


def autoclustering_environment(environ=None):
    """`environ` (default: `os.environ`) with auto-clustering's flags added
    to `TF_XLA_FLAGS`: the environment to start a process in.

    TensorFlow reads `TF_XLA_FLAGS` once, when it starts, so the flags
    must be set before Python imports it: the `keras-tfm` command restarts
    itself with them; in a notebook, set them before importing anything:

    ```python
    import os
    os.environ["TF_XLA_FLAGS"] = (
        "--tf_xla_auto_jit=2 --tf_xla_cpu_global_jit "
        "--tf_xla_ops_to_cluster=FUSIBLE"
    )
    import keras_tfm
    ```

    Functions compiled whole with `jit_compile=True` are not affected.
    """
    environ = dict(os.environ if environ is None else environ)
    flags = environ.get("TF_XLA_FLAGS", "").split()
    environ["TF_XLA_FLAGS"] = " ".join(
        flags + [f for f in AUTOCLUSTER_FLAGS if f not in flags]
    )
    return environ
