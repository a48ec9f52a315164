"""How fast this machine's matmul kernels run: the benchmark's yardsticks.

A train step's time is mostly matmuls, and which library runs them
matters as much as anything the model does: on an Intel Xeon with
AVX-512 here, XLA's CPU matmul (Eigen) ran this package's layer shapes,
forward and backward, at 100-145 GFLOP/s, where TensorFlow's graph-mode
kernel (oneDNN) and PyTorch's ran them at 140-190. So the benchmark
measures both the peak (a large square matmul, MFU's denominator) and the
rate at the model's own shapes, for each library, in the same run.

On a CPU, TensorFlow runs a function to completion before the call
returns, so timing the call times the work.
"""

import math
import time

import tensorflow as tf


def _best_seconds(function, repeats):
    function()  # compiles, and warms caches
    best = math.inf
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        best = min(best, time.perf_counter() - start)
    return best


def matmul_peaks(size=2048, repeats=10, dtype="float32"):
    """The best matmul rates this machine reaches, in GFLOP/s.

    Both of TensorFlow's matmuls are timed, because either can be the
    faster one: XLA's (Eigen) and the graph-mode kernel (oneDNN). On an
    Intel Xeon with AVX-512 here, oneDNN ran fp32 2048^2 at ~170 GFLOP/s
    against XLA's ~130, and bfloat16 (on AMX) at ~420 against XLA's ~140;
    MFU is taken against the better of the two.
    """
    a = tf.cast(tf.random.normal((size, size)), dtype)
    b = tf.cast(tf.random.normal((size, size)), dtype)
    peaks = {}
    for name, jit_compile in (("xla", True), ("tensorflow", False)):
        matmul = tf.function(lambda x, y: tf.matmul(x, y),
                             jit_compile=jit_compile)
        best = _best_seconds(lambda: matmul(a, b).numpy(), repeats)
        peaks[name] = 2 * size**3 / best / 1e9
    return peaks


def model_matmul_shapes(config, vocabulary_size, rows):
    """`(rows, inputs, outputs, count)` for each of a step's dense matmuls.

    `rows` is the tokens one forward pass computes at once (a micro-batch
    times the sequence length); `count` how often the shape occurs.
    """
    d, f, n = config.hidden_dim, config.intermediate_dim, config.num_layers
    return [
        (rows, d, 3 * d, n),  # fused QKV projection
        (rows, d, d, n),  # attention output projection
        (rows, d, f, n),  # feed-forward up
        (rows, f, d, n),  # feed-forward down
        (rows, d, vocabulary_size, 1),  # output head
    ]


# Enough rounds of a shape's products per timed call that the call's own
# overhead (~0.1-0.5 ms for a `tf.function`) is a few percent at most (a
# train step pays it once for all its matmuls, not once per matmul), and
# at most 32, which covers nano's shapes; toy shapes stay cheap to compile.
_FLOPS_PER_CALL = 2e9
_MAX_ROUNDS = 32


def _rounds_per_call(rows, inputs, outputs):
    rounds = math.ceil(_FLOPS_PER_CALL / (6 * rows * inputs * outputs))
    return min(_MAX_ROUNDS, rounds)


def _products(xs, w, dys):
    """A dense layer's forward and backward products, for each `x, dy`.

    Every product is returned, so none is dead code, and each pair is its
    own input, so no two products are the same (which XLA would merge).
    """
    outputs = []
    for x, dy in zip(xs, dys):
        outputs += [
            tf.matmul(x, w),  # forward: (rows, out)
            tf.matmul(dy, w, transpose_b=True),  # d/dx: (rows, in)
            tf.matmul(x, dy, transpose_a=True),  # d/dw: (in, out)
        ]
    return outputs


def model_matmul_rates(shapes, repeats=5, pytorch=False):
    """GFLOP/s of the model's dense matmuls, forward and backward, by library.

    For each shape, times `y = x @ w` with its backward products `dy @ w^T`
    and `x^T @ dy`, under XLA and in TensorFlow's graph mode (oneDNN), and
    with `pytorch=True` in PyTorch too; the rate is all shapes' FLOPs
    (weighted by count) over their summed best times.
    """
    flops = 0
    seconds = {"xla": 0.0, "tensorflow": 0.0}
    if pytorch:
        from keras_tfm.benchmarks.pytorch_reference import matmul_products

        seconds["pytorch"] = 0.0
    for rows, inputs, outputs, count in shapes:
        rounds = _rounds_per_call(rows, inputs, outputs)
        xs = [tf.random.normal((rows, inputs)) for _ in range(rounds)]
        dys = [tf.random.normal((rows, outputs)) for _ in range(rounds)]
        w = tf.random.normal((inputs, outputs))
        # Per round: the forward product and the two backward ones.
        flops += count * 3 * 2 * rows * inputs * outputs
        for name, jit_compile in (("xla", True), ("tensorflow", False)):
            products = tf.function(_products, jit_compile=jit_compile)
            seconds[name] += count * _best_seconds(
                lambda: products(xs, w, dys), repeats
            ) / rounds
        if pytorch:
            run = matmul_products(
                [x.numpy() for x in xs], w.numpy(), [dy.numpy() for dy in dys]
            )
            seconds["pytorch"] += count * _best_seconds(run, repeats) / rounds
    return {name: flops / s / 1e9 for name, s in seconds.items()}
