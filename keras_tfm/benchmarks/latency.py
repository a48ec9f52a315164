"""Benchmark: milliseconds per generated token, with and without a cache.

For each context length C, a causal LM of the default small size with
`max_sequence_length = C` (random weights: latency does not depend on
them) is exported, and the cost of producing the token at position C is
measured four ways, interleaved round by round in one process (this
machine's speed drifts by 10-25% over minutes, so only ratios measured
together are compared):

- TFLite `decode`: one token through the prefill/decode file's cache;
- TFLite recompute: the whole context through the logits-only file, as a
  cache-less generator must do for every token (the reference, 1.00x);
- Keras cached: `CausalLM.call_with_cache` for one token, in a
  `tf.function`;
- Keras recompute: the whole context through the Keras model.

Run: `python export/decode_latency.py [--contexts 64 256] [--rounds 15]`.
"""

import argparse
import json
import time

import numpy as np
import tensorflow as tf

from keras_tfm.export import decoder
from keras_tfm.export import tflite
from keras_tfm.models import CausalLM

SMALL = dict(
    vocabulary_size=260,
    num_layers=4,
    num_heads=4,
    hidden_dim=128,
    intermediate_dim=512,
    activation="gelu_approximate",
)


def _time(function, repeats):
    start = time.perf_counter()
    for _ in range(repeats):
        function()
    return (time.perf_counter() - start) / repeats * 1000.0


def measure(context, rounds=15, repeats=5, threads=None, model_kwargs=None):
    """Per-variant median milliseconds per token at one context length."""
    model = CausalLM(max_sequence_length=context, **(model_kwargs or SMALL))
    ids = np.random.default_rng(0).integers(
        4, 260, (1, context)
    ).astype(np.int32)
    position = context - 1

    logits_content, _ = tflite.convert_logits_model(model, context)
    decoder_content, _ = decoder.convert_decoder(model)
    full = tflite.interpreter(logits_content, threads)
    full_run = full.get_signature_runner("serving_default")
    cached = tflite.interpreter(decoder_content, threads)
    decode = cached.get_signature_runner("decode")
    cache = cached.get_signature_runner("prefill")(token_ids=ids)["cache"]
    token = ids[:, position : position + 1]
    index = np.array(position, np.int32)

    keras_full = tf.function(lambda x: model(x, training=False))
    keras_step = tf.function(
        lambda t, c, i: model.call_with_cache(t, c, i)[0]
    )
    keras_cache = model.init_cache(1)
    _, _, keras_cache = model.call_with_cache(ids, keras_cache, 0)

    variants = {
        "tflite_decode": lambda: decode(
            token_id=token, index=index, cache=cache
        ),
        "tflite_recompute": lambda: full_run(token_ids=ids),
        "keras_cached": lambda: keras_step(
            tf.constant(token), keras_cache, tf.constant(position)
        ).numpy(),
        "keras_recompute": lambda: keras_full(tf.constant(ids)).numpy(),
    }
    for run in variants.values():  # warm up: tracing, delegate setup
        run()
        run()
    samples = {name: [] for name in variants}
    for _ in range(rounds):
        for name, run in variants.items():
            samples[name].append(_time(run, repeats))
    return {name: float(np.median(values)) for name, values in samples.items()}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--contexts", type=int, nargs="+", default=[64, 256])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None,
                        help="interpreter threads (default: LiteRT's)")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--tiny", action="store_true",
                        help="a tiny model, for a seconds-long smoke run")
    args = parser.parse_args(argv)
    model_kwargs = None
    if args.tiny:
        model_kwargs = dict(vocabulary_size=260, num_layers=1, num_heads=2,
                            hidden_dim=16, intermediate_dim=32)
    results = {}
    for context in args.contexts:
        results[context] = measure(context, args.rounds, args.repeats,
                                   args.threads, model_kwargs)
    if args.json:
        print(json.dumps(results))
        return results
    print(f"{'context':>7} {'variant':>17} {'ms/token':>9} "
          f"{'vs recompute':>13}")
    for context, timings in results.items():
        reference = timings["tflite_recompute"]
        for name, ms in timings.items():
            print(f"{context:>7} {name:>17} {ms:>9.3f} "
                  f"{ms / reference:>12.2f}x")
    return results


if __name__ == "__main__":
    main()
