"""Benchmark: milliseconds per generated token of a `Seq2SeqLM`, with and
without its caches.

For each source length S and output length N, a `Seq2SeqLM` of the size
recommended for Multi30k (random weights: latency does not depend on them)
encodes a source of S tokens and produces N tokens four ways, interleaved
round by round in one process (this machine's speed drifts by 10-25% over
minutes, so only ratios measured together are compared):

- `cached`: one token per step through `call_decoder_with_cache`: the
  self-attention cache grows by one position, the cross-attention keys and
  values were projected once; a Python loop over a `tf.function` step, as
  the TFLite step file is driven;
- `cached_loop`: the same steps inside one `tf.while_loop`
  (`generation.seq2seq.greedy_search`, never stopping early), encoder
  included: what `keras-tfm predict` and the SavedModel run;
- `recompute`: the decoder over the whole target prefix at every step
  (encoder outputs kept, no self-attention cache), as a decoder without a
  KV cache generates (the reference, 1.00x);
- `recompute_all`: the whole model (encoder too) at every step, as a loop
  calling the Keras model does.

Each figure is the time to produce all N tokens divided by N, the median
over rounds; the last step's logits of the cached and recomputing ways
are checked equal first. `keras-tfm benchmark --seq2seq` runs it at the
applications' lengths (`TASK_LENGTHS`); alone: `python -m
keras_tfm.benchmarks.seq2seq_latency [--sources 32 256] [--tokens 20 60]`.
"""

import argparse
import json
import time

import numpy as np
import tensorflow as tf

from keras_tfm.generation import seq2seq as decoding
from keras_tfm.models import Seq2SeqLM

# The architecture recommended for Multi30k En->De (README): 3 + 3 blocks,
# 256 wide, a shared 8000-token WordPiece vocabulary.
MULTI30K = dict(
    vocabulary_size=8000,
    num_layers=3,
    num_heads=4,
    hidden_dim=256,
    intermediate_dim=1024,
    activation="gelu_approximate",
)
TINY = dict(vocabulary_size=260, num_layers=1, num_heads=2, hidden_dim=16,
            intermediate_dim=32)
VARIANTS = ("cached", "cached_loop", "recompute", "recompute_all")


def measure(source_length, new_tokens, rounds=5, model_kwargs=None,
            seed=0):
    """Per-variant median milliseconds per generated token."""
    kwargs = dict(model_kwargs or MULTI30K)
    model = Seq2SeqLM(max_sequence_length=source_length,
                      max_decoder_sequence_length=new_tokens, **kwargs)
    rng = np.random.default_rng(seed)
    vocabulary = kwargs["vocabulary_size"]
    source = tf.constant(rng.integers(4, vocabulary, (1, source_length)),
                         tf.int32)
    # The tokens fed back: fixed, so every variant does the same work.
    tokens = rng.integers(4, vocabulary, (1, new_tokens)).astype(np.int32)
    tokens[0, 0] = decoding.EOS_ID
    encoder_outputs, padding_mask = model.encode(source)
    empty = model.init_cache(1, encoder_outputs)

    @tf.function(autograph=False)
    def step(token, cache, index):
        logits, _, cache = model.call_decoder_with_cache(
            token, cache, index, padding_mask)
        return logits, cache

    @tf.function(autograph=False, input_signature=[
        tf.TensorSpec([1, None], tf.int32)])
    def recompute(prefix):
        logits, _, _ = model.call_decoder_with_cache(
            prefix, empty, 0, padding_mask)
        return logits[:, -1]

    @tf.function(autograph=False, input_signature=[
        tf.TensorSpec([1, None], tf.int32)])
    def recompute_all(prefix):
        logits = model({"encoder_token_ids": source,
                        "decoder_token_ids": prefix}, training=False)
        return logits[:, -1]

    # end_id -1: never ends, exactly new_tokens steps.
    loop = decoding.make_decoder(model, "greedy", max_length=new_tokens,
                                 end_id=-1)

    def run_cached():
        cache = empty
        for index in range(new_tokens):
            logits, cache = step(tf.constant(tokens[:, index : index + 1]),
                                 cache, tf.constant(index))
        return logits.numpy()

    def run_recompute(function):
        def run():
            for index in range(new_tokens):
                logits = function(tf.constant(tokens[:, : index + 1]))
            return logits.numpy()

        return run

    variants = {
        "cached": run_cached,
        "cached_loop": lambda: loop(source)["token_ids"].numpy(),
        "recompute": run_recompute(recompute),
        "recompute_all": run_recompute(recompute_all),
    }
    # Warm up (tracing), and check that the ways agree: the last step's
    # logits with the caches equal those recomputed over the prefix.
    outputs = {name: run() for name, run in variants.items()}
    for name in ("recompute", "recompute_all"):
        if not np.allclose(outputs["cached"][:, -1], outputs[name],
                           atol=1e-3, rtol=1e-3):
            raise RuntimeError(
                f"cached decoding disagrees with {name}: the benchmark "
                "would compare different computations")
    # The compiled loop feeds back its own argmax: the Python-driven
    # steps, fed back the same way, must choose the same tokens.
    cache, token, chosen = empty, tokens[:, :1], []
    for index in range(new_tokens):
        logits, cache = step(tf.constant(token), cache, tf.constant(index))
        token = np.argmax(logits.numpy()[:, -1], axis=-1)[:, None]
        chosen.append(int(token[0, 0]))
    if outputs["cached_loop"][0, :new_tokens].tolist() != chosen:
        raise RuntimeError(
            "the compiled greedy loop disagrees with the cached steps: "
            "the benchmark would compare different computations")
    samples = {name: [] for name in variants}
    for _ in range(rounds):
        for name, run in variants.items():
            start = time.perf_counter()
            run()
            elapsed = time.perf_counter() - start
            samples[name].append(elapsed / new_tokens * 1000.0)
    return {name: float(np.median(values))
            for name, values in samples.items()}


# The lengths the applications decode at: Multi30k (sources and targets up
# to 32 tokens) and SciTLDR (abstracts cut to 256, summaries to 56).
TASK_LENGTHS = ((32, 32), (256, 56))


def benchmark(sources=(32, 256), tokens=(20, 60), rounds=5,
              model_kwargs=None):
    """`{(source_length, new_tokens): {variant: ms per token}}`."""
    return {
        (source_length, count): measure(source_length, count, rounds,
                                        model_kwargs)
        for source_length in sources
        for count in tokens
    }


def at_task_lengths(rounds=5, model_kwargs=None):
    """`benchmark` at the applications' `(source, target)` lengths, as
    JSON-ready rows."""
    rows = []
    for source_length, count in TASK_LENGTHS:
        timings = measure(source_length, count, rounds, model_kwargs)
        rows.append({
            "model": describe_model(model_kwargs or MULTI30K),
            "source_length": source_length,
            "new_tokens": count,
            "ms_per_token": timings,
            "speedup_vs_recompute": {
                name: timings["recompute"] / ms
                for name, ms in timings.items()
            },
        })
    return rows


def describe_model(kwargs):
    return (f"Seq2SeqLM {kwargs['num_layers']}+{kwargs['num_layers']} x "
            f"{kwargs['hidden_dim']}, vocabulary {kwargs['vocabulary_size']},"
            " float32, batch 1")


def format_results(results):
    lines = [f"{'source':>6} {'tokens':>6} {'variant':>14} {'ms/token':>9} "
             f"{'vs recompute':>13}"]
    for (source_length, count), timings in results.items():
        reference = timings["recompute"]
        for name in VARIANTS:
            ms = timings[name]
            lines.append(f"{source_length:>6} {count:>6} {name:>14} "
                         f"{ms:>9.3f} {ms / reference:>12.2f}x")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sources", type=int, nargs="+", default=[32, 256],
                        help="source lengths in tokens (default: 32 256)")
    parser.add_argument("--tokens", type=int, nargs="+", default=[20, 60],
                        help="tokens generated (default: 20 60)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--tiny", action="store_true",
                        help="a tiny model, for a seconds-long smoke run")
    args = parser.parse_args(argv)
    results = benchmark(args.sources, args.tokens, args.rounds,
                        TINY if args.tiny else None)
    if args.json:
        print(json.dumps([
            {"source_length": s, "new_tokens": n, "ms_per_token": timings}
            for (s, n), timings in results.items()
        ]))
    else:
        print(format_results(results))
    return results


if __name__ == "__main__":
    main()
