"""`keras-tfm benchmark`: training and inference speed, against references
measured in the same run.

This machine's speed drifts 10-25% over minutes, so every comparison is
made inside one process, variants interleaved step by step, and reported as
a ratio of medians:

- training: keras-tfm's compiled train step (`model.train_on_batch`, the
  step `fit` runs) against a reference model of the same size built from
  keras-hub's layers (`TokenAndPositionEmbedding` + pre-LN
  `TransformerDecoder`s + a dense head) and trained the same way (AdamW,
  the same precision and compilation), on real text batches; with other
  settings than float32 + XLA, also keras-tfm's model in float32 + XLA,
  and, when keras-tfm's step splits the batch (`batch_splits`), the same
  step unsplit; with `--pytorch-reference`, also nanoGPT's model and step
  on PyTorch (`keras_tfm.pytorch_reference`), float32 and eager as in
  nanoGPT's CPU recipe;
- model FLOPs per token as nanoGPT and PaLM count them: 6 x (parameters in
  matmuls) + 12 x layers x hidden x sequence (attention); MFU against the
  best matmul this run measures in the precision the model computes in
  (2048 x 2048, the better of XLA's and TensorFlow's oneDNN kernel);
- kernels: the rate of the model's own dense matmuls, forward and
  backward, at the size keras-tfm's step runs them, under XLA, oneDNN and
  (with `--pytorch-reference`) PyTorch: the part of a gap between
  frameworks that is the matmul library's (`keras_tfm.matmuls`);
- input: the time to fetch a batch from the tf.data pipeline, as a share
  of the step;
- inference: tokens per second of `generate` with the KV cache against
  recomputing the whole sequence for every token; with `--seq2seq`, a
  `Seq2SeqLM`'s milliseconds per generated token with its caches against
  recomputing, at Multi30k's and SciTLDR's lengths
  (`keras_tfm.benchmarks.seq2seq_latency`);
- scaling: step time against sequence length and model width, as a table
  and a PNG plot.
"""

import dataclasses
import json
import math
import os
import resource
import time

import keras
import numpy as np
import tensorflow as tf

from keras_tfm import data
from keras_tfm import generation
from keras_tfm import tokenizers
from keras_tfm.benchmarks.input_pipeline import input_rates
from keras_tfm.benchmarks.matmuls import matmul_peaks
from keras_tfm.benchmarks.matmuls import model_matmul_rates
from keras_tfm.benchmarks.matmuls import model_matmul_shapes
from keras_tfm.benchmarks.memory import accumulation_memory
from keras_tfm.errors import UserError
from keras_tfm.training.config import make_config
from keras_tfm.training.precision import dtype_policy
from keras_tfm.training.strategy import autoclustering_active
from keras_tfm.training.strategy import resolve_jit_compile
from keras_tfm.training.train import build_model
from keras_tfm.training.train import build_trainer


def flops_per_token(config, vocabulary_size):
    """6 x matmul parameters + 12 x layers x hidden x sequence (PaLM)."""
    # The matmul parameters are the dense layers' weights, one row's worth
    # of the shapes whose rates the benchmark also measures.
    matmul_parameters = sum(
        inputs * outputs * count
        for _, inputs, outputs, count in model_matmul_shapes(
            config, vocabulary_size, rows=1
        )
    )
    attention = 12 * config.num_layers * config.hidden_dim * (
        config.sequence_length
    )
    return 6 * matmul_parameters + attention


def keras_hub_reference(config, vocabulary_size):
    """The same-size GPT built from keras-hub's layers, with keras-tfm's
    activation (like for like; the activation's own gain is measured as
    `keras_tfm_exact_gelu`)."""
    import keras_hub

    from keras_tfm.layers.activations import get_activation

    token_ids = keras.Input((None,), dtype="int32")
    x = keras_hub.layers.TokenAndPositionEmbedding(
        vocabulary_size, config.sequence_length, config.hidden_dim
    )(token_ids)
    for _ in range(config.num_layers):
        x = keras_hub.layers.TransformerDecoder(
            config.intermediate_dim,
            config.num_heads,
            activation=get_activation(config.activation),
            normalize_first=True,
        )(x)
    x = keras.layers.LayerNormalization(epsilon=1e-5)(x)
    logits = keras.layers.Dense(vocabulary_size)(x)
    return keras.Model(token_ids, logits)


def _compiled(model, config, jit_compile):
    from keras_tfm.training.optimizer import build_optimizer

    model.compile(
        optimizer=build_optimizer(config),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        jit_compile=jit_compile,
    )
    return model


def _keras_tfm_trainer(config, vocabulary, precision, jit_compile):
    """keras-tfm's model in the `TrainingModel` `keras-tfm pretrain`
    trains it with."""
    with dtype_policy(precision):
        model = build_model(config, vocabulary)
        return build_trainer(
            config, model, tf.distribute.get_strategy(), jit_compile,
            with_metrics=False,
        )


def _batches(config, tokenizer, texts, seed=0):
    lm_data = data.prepare_lm_data(
        tokenizer, texts, config.sequence_length, seed=seed
    )
    dataset = data.make_dataset(lm_data.train, config.batch_size, seed=seed)
    return iter(dataset)


def time_training(config, texts, steps, warmup, jit_compile=True,
                  pytorch_reference=False, packing=False):
    """Interleaved train steps: keras-tfm's model and the keras-hub one.

    Both use the config's precision, compilation and activation. When the
    activation is the tanh GELU, keras-tfm's model with exact GELU runs
    alongside (`keras_tfm_exact_gelu`). When precision and compilation are not
    float32 with XLA, keras-tfm's model in float32 with XLA runs alongside
    as a third entry, `keras_tfm_fp32_xla`, so the settings' own gain is
    measured in the same run; likewise `keras_tfm_unsplit`, the step
    without `batch_splits`, when keras-tfm's step splits the batch, and
    `pytorch_nanogpt` with `pytorch_reference`.
    """
    tokenizer = tokenizers.ByteTokenizer()
    vocabulary = tokenizer.vocabulary_size

    def ours(precision, jit, variant=config):
        return _keras_tfm_trainer(variant, vocabulary, precision, jit)

    with dtype_policy(config.precision):
        hub = keras_hub_reference(config, vocabulary)
    models = {
        "keras_tfm": ours(config.precision, jit_compile),
        "keras_hub": _compiled(hub, config, jit_compile),
    }
    if (config.precision, jit_compile) != ("float32", True):
        models["keras_tfm_fp32_xla"] = ours("float32", True)
    if config.activation == "gelu_approximate":
        # What the tanh approximation gains over exact GELU.
        models["keras_tfm_exact_gelu"] = ours(
            config.precision, jit_compile,
            dataclasses.replace(config, activation="gelu"),
        )
    if packing:
        # What attending within documents costs over attending across.
        models["keras_tfm_documents"] = ours(
            config.precision, jit_compile,
            dataclasses.replace(config, packing="documents"),
        )
    if models["keras_tfm"].batch_splits > 1:
        models["keras_tfm_unsplit"] = ours(
            config.precision, jit_compile,
            dataclasses.replace(config, batch_splits=1),
        )
    if pytorch_reference:
        from keras_tfm.benchmarks.pytorch_reference import NanoGPTTrainer

        models["pytorch_nanogpt"] = NanoGPTTrainer(config, vocabulary)
    batches = _batches(config, tokenizer, texts)
    fetch_seconds = []
    times = {name: [] for name in models}
    first_step = {}
    for step in range(warmup + steps):
        start = time.perf_counter()
        x, y = next(batches)
        fetch_seconds.append(time.perf_counter() - start)
        order = list(models) if step % 2 == 0 else list(models)[::-1]
        for name in order:
            start = time.perf_counter()
            loss = models[name].train_on_batch(x, y)
            elapsed = time.perf_counter() - start
            if not math.isfinite(float(np.asarray(loss).ravel()[0])):
                raise RuntimeError(f"{name}: loss is not finite")
            if step == 0:
                first_step[name] = elapsed
            if step >= warmup:
                times[name].append(elapsed)
    return models, times, first_step, fetch_seconds[warmup:]


def _summary(seconds, tokens_per_step):
    seconds = np.asarray(seconds)
    median = float(np.median(seconds))
    return {
        "step_ms_median": median * 1000,
        "step_ms_p10": float(np.percentile(seconds, 10)) * 1000,
        "step_ms_p90": float(np.percentile(seconds, 90)) * 1000,
        "tokens_per_second": tokens_per_step / median,
    }


def _ratio_summary(reference_seconds, seconds):
    ratios = np.asarray(reference_seconds) / np.asarray(seconds)
    return {
        "median": float(np.median(ratios)),
        "p25": float(np.percentile(ratios, 25)),
        "p75": float(np.percentile(ratios, 75)),
        "faster_steps": float(np.mean(ratios > 1)),
    }


def time_generation(config, contexts, new_tokens=32):
    """Tokens/s of cached generation against recomputing every token.

    The model has the config's size and room for the longest context plus
    the new tokens (random weights: speed does not depend on them).
    """
    longest = max(contexts) + new_tokens
    model = build_model(
        make_config(**{**config.to_dict(), "sequence_length": longest}),
        tokenizers.ByteTokenizer().vocabulary_size,
    )
    results = {}
    for context in contexts:
        prompt = list(range(4, 4 + context))
        recompute = tf.function(
            lambda x: model(x, training=False),
            input_signature=[tf.TensorSpec([1, None], tf.int32)],
        )
        generation.generate_ids(model, prompt, 2)  # trace
        recompute(tf.constant([prompt], tf.int32))
        start = time.perf_counter()
        generation.generate_ids(model, prompt, new_tokens)
        cached = time.perf_counter() - start
        tokens = list(prompt)
        start = time.perf_counter()
        for _ in range(new_tokens):
            logits = recompute(
                tf.constant([tokens[-model.max_sequence_length:]], tf.int32)
            )
            tokens.append(int(np.argmax(logits[0, -1])))
        recomputed = time.perf_counter() - start
        results[context] = {
            "cached_tokens_per_second": new_tokens / cached,
            "recompute_tokens_per_second": new_tokens / recomputed,
            "speedup": recomputed / cached,
        }
    return results


def time_scaling(config, texts, lengths, widths, steps, jit_compile=True):
    """Median step time of keras-tfm's model per sequence length / width."""
    rows = []
    for kind, values in (("sequence_length", lengths), ("hidden_dim", widths)):
        for value in values:
            overrides = {kind: value}
            if kind == "hidden_dim":
                overrides["intermediate_dim"] = 4 * value
                overrides["num_heads"] = max(1, value // 32)
            variant = make_config(**{**config.to_dict(), **overrides})
            tokenizer = tokenizers.ByteTokenizer()
            model = _keras_tfm_trainer(
                variant, tokenizer.vocabulary_size, variant.precision,
                jit_compile,
            )
            batches = _batches(variant, tokenizer, texts)
            seconds = []
            for step in range(steps + 1):
                x, y = next(batches)
                start = time.perf_counter()
                model.train_on_batch(x, y)
                if step:
                    seconds.append(time.perf_counter() - start)
            rows.append({
                "vary": kind,
                "sequence_length": variant.sequence_length,
                "hidden_dim": variant.hidden_dim,
                "step_ms": float(np.median(seconds)) * 1000,
                "flops_per_token": flops_per_token(
                    variant, tokenizer.vocabulary_size
                ),
            })
    return rows


def plot_scaling(rows, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(10, 4))
    for axis, kind in zip(axes, ("sequence_length", "hidden_dim")):
        chosen = [r for r in rows if r["vary"] == kind]
        axis.plot([r[kind] for r in chosen], [r["step_ms"] for r in chosen],
                  marker="o")
        axis.set_xscale("log", base=2)
        axis.set_yscale("log")
        axis.set_xlabel(kind)
        axis.set_ylabel("train step (ms)")
        axis.grid(True, which="both", alpha=0.3)
    axes[0].set_title("step time vs sequence length")
    axes[1].set_title("step time vs model width")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def run_benchmark(config, steps=30, warmup=3, smoke=False, plot_path=None,
                  data_patterns=None, texts=None, pytorch_reference=False,
                  scaling=True, packing=False, memory=False, prepared=None):
    """Measures everything above; returns a dict (the `--json` output).

    `scaling=False` skips the scaling table (`results["scaling"]` is then
    empty), which at large batches takes most of the run.
    """
    if pytorch_reference:
        from keras_tfm.benchmarks.pytorch_reference import import_torch

        import_torch()  # a missing PyTorch is said before minutes of work
    if texts is not None:
        source = "given"
    elif data_patterns:
        texts = [t for _, t in data.load_corpus(data_patterns)]
        source = ", ".join(data_patterns)
    else:
        texts = [t for _, t in data.default_corpus()]
        source = "pydoc_data"
    jit_compile = resolve_jit_compile(
        config.jit_compile, tf.distribute.get_strategy()
    )
    tokens_per_step = config.batch_size * config.sequence_length
    size, repeats = (512, 3) if smoke else (2048, 10)
    peaks = matmul_peaks(size, repeats)
    peak = max(peaks.values())
    # MFU is against the peak of the precision the matmuls run in.
    compute_peaks = {"float32": peak}
    if config.precision == "mixed_bfloat16":
        peaks_bf16 = matmul_peaks(size, repeats, "bfloat16")
        peaks.update({f"{k}_bfloat16": v for k, v in peaks_bf16.items()})
        compute_peaks["mixed_bfloat16"] = max(peaks_bf16.values())
    models, times, first_step, fetch = time_training(
        config, texts, steps, warmup, jit_compile, pytorch_reference,
        packing,
    )
    vocabulary = tokenizers.ByteTokenizer().vocabulary_size
    model_flops = flops_per_token(config, vocabulary)
    # The tokens one forward pass of keras-tfm's step computes at once.
    rows = (
        config.batch_size // models["keras_tfm"].batch_splits
        * config.sequence_length
    )
    matmul_rates = {
        "rows": rows,
        "gflops_per_second": model_matmul_rates(
            model_matmul_shapes(config, vocabulary, rows),
            repeats=2 if smoke else 5,
            pytorch=pytorch_reference,
        ),
    }
    training = {}
    for name, seconds in times.items():
        summary = _summary(seconds, tokens_per_step)
        summary["gflops_per_second"] = (
            summary["tokens_per_second"] * model_flops / 1e9
        )
        # nanoGPT's CPU recipe computes in float32 whatever the config says.
        precision = (
            "float32" if name in ("keras_tfm_fp32_xla", "pytorch_nanogpt")
            else config.precision
        )
        summary["mfu"] = summary["gflops_per_second"] / compute_peaks.get(
            precision, peak
        )
        summary["first_step_seconds"] = first_step[name]
        summary["parameters"] = models[name].count_params()
        training[name] = summary
    ours, reference = training["keras_tfm"], training["keras_hub"]
    step_median = ours["step_ms_median"] / 1000
    contexts = (64, 256)
    results = {
        "config": config.preset,
        "data": source,
        "machine": {
            "cpus": os.cpu_count(),
            "matmul_peak_gflops": peak,
            "matmul_peak_gflops_by_backend": peaks,
            # The model's own dense matmuls (forward and backward) at the
            # size keras-tfm's step runs them, in float32, by library.
            "matmul_gflops_at_model_shapes": matmul_rates,
        },
        "settings": {
            "xla": jit_compile,
            "jit_compile": config.jit_compile,
            "autocluster_active": autoclustering_active(),
            "precision": config.precision,
            "intra_op_threads": (
                tf.config.threading.get_intra_op_parallelism_threads()
            ),
            "inter_op_threads": (
                tf.config.threading.get_inter_op_parallelism_threads()
            ),
            "steps_per_execution": 1,
            # Parts of the batch keras-tfm's step runs side by side.
            "batch_splits": models["keras_tfm"].batch_splits,
            "batch_size": config.batch_size,
            "sequence_length": config.sequence_length,
            "steps": steps,
            "warmup_steps": warmup,
            **(
                {"pytorch_version": models["pytorch_nanogpt"].torch_version,
                 "pytorch_threads": models["pytorch_nanogpt"].torch_threads}
                if pytorch_reference else {}
            ),
        },
        "flops_per_token": model_flops,
        "flops_formula": (
            "6 * matmul_parameters + 12 * layers * hidden * sequence"
        ),
        "training": training,
        "tokens_per_second_ratio_vs_keras_hub": (
            ours["tokens_per_second"] / reference["tokens_per_second"]
        ),
        # The same ratio taken step by step (both models ran the same batch
        # back to back), which the machine's drift disturbs least.
        "per_step_ratio_vs_keras_hub": _ratio_summary(
            times["keras_hub"], times["keras_tfm"]
        ),
        **(
            {"tokens_per_second_ratio_vs_pytorch_nanogpt": (
                ours["tokens_per_second"]
                / training["pytorch_nanogpt"]["tokens_per_second"]
            )}
            if pytorch_reference else {}
        ),
        **{
            f"speedup_vs_{name}": _ratio_summary(
                times[name], times["keras_tfm"]
            )
            for name in ("keras_tfm_fp32_xla", "keras_tfm_unsplit",
                         "keras_tfm_exact_gelu", "keras_tfm_documents",
                         "pytorch_nanogpt")
            if name in times
        },
        "input_wait_fraction": float(np.median(fetch)) / step_median,
        "peak_memory_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        / 1024,
        "generation": (
            time_generation(config, [8], new_tokens=4)
            if smoke
            else time_generation(config, contexts)
        ),
    }
    # The input pipeline alone, against what the step consumes.
    rates = input_rates(config, texts, prepared, batches=20 if smoke else 200)
    results["input_pipeline"] = {
        **{f"{k}_tokens_per_second": v for k, v in rates.items()},
        "train_step_tokens_per_second": ours["tokens_per_second"],
        **{f"{k}_vs_train_step": v / ours["tokens_per_second"]
           for k, v in rates.items()},
    }
    if memory:
        # Accumulation bounds activation memory: 4 accumulated batches
        # against 1, each a child process at the config's batch.
        results["accumulation_memory"] = accumulation_memory(
            "tiny" if smoke else config.preset, config.batch_size,
            steps=4 if smoke else 12, data=data_patterns,
        )
    results["scaling"] = []
    if scaling:
        lengths = [16] if smoke else [64, 128, 256, 512, 1024]
        widths = [32] if smoke else [64, 128, 256, 512]
        results["scaling"] = time_scaling(
            config, texts, lengths, widths, 2 if smoke else 5, jit_compile
        )
    if plot_path:
        plot_scaling(results["scaling"], plot_path)
        results["scaling_plot"] = plot_path
    return results


def format_results(results):
    lines = []
    training = results["training"]
    lines.append(
        f"config {results['config']} on {results['data']}: batch "
        f"{results['settings']['batch_size']} x "
        f"{results['settings']['sequence_length']}, jit_compile "
        f"{results['settings']['jit_compile']}, batch splits "
        f"{results['settings']['batch_splits']}, precision "
        f"{results['settings']['precision']}; matmul peaks (GFLOP/s) "
        + ", ".join(
            f"{name.replace('_', ' ')} {value:.0f}" for name, value in
            results["machine"]["matmul_peak_gflops_by_backend"].items()
        )
    )
    lines.append(f"model FLOPs/token {results['flops_per_token']:,} "
                 f"({results['flops_formula']})")
    shapes = results["machine"]["matmul_gflops_at_model_shapes"]
    lines.append(
        "the model's dense matmuls, forward and backward, "
        f"{shapes['rows']} rows (GFLOP/s): "
        + ", ".join(
            f"{name} {value:.0f}"
            for name, value in shapes["gflops_per_second"].items()
        )
    )
    lines.append(f"{'model':>18} {'median ms':>10} {'p10':>8} {'p90':>8} "
                 f"{'tokens/s':>10} {'GFLOP/s':>8} {'MFU':>6}")
    for name, t in training.items():
        lines.append(
            f"{name:>18} {t['step_ms_median']:>10.1f} {t['step_ms_p10']:>8.1f} "
            f"{t['step_ms_p90']:>8.1f} {t['tokens_per_second']:>10,.0f} "
            f"{t['gflops_per_second']:>8.1f} {t['mfu']:>6.1%}"
        )
    per_step = results["per_step_ratio_vs_keras_hub"]
    lines.append(
        "keras-tfm / keras-hub tokens/s: "
        f"{results['tokens_per_second_ratio_vs_keras_hub']:.2f}x (step by "
        f"step: median {per_step['median']:.2f}x, faster in "
        f"{per_step['faster_steps']:.0%} of "
        f"steps); input wait "
        f"{results['input_wait_fraction']:.1%} of a step; peak memory "
        f"{results['peak_memory_mb']:.0f} MB"
    )
    for reference, label in (
        ("keras_tfm_fp32_xla",
         "these settings against keras-tfm in float32 with XLA"),
        ("keras_tfm_unsplit",
         f"batch split in {results['settings']['batch_splits']} against "
         "unsplit"),
        ("keras_tfm_exact_gelu", "tanh GELU against exact GELU"),
        ("keras_tfm_documents",
         "attending across documents (concat) against within them"),
        ("pytorch_nanogpt",
         "keras-tfm against nanoGPT on PyTorch "
         f"{results['settings'].get('pytorch_version')}"),
    ):
        speedup = results.get(f"speedup_vs_{reference}")
        if speedup:
            lines.append(
                f"{label}: {speedup['median']:.2f}x step by step (p25-p75 "
                f"{speedup['p25']:.2f}-{speedup['p75']:.2f})"
            )
    for context, g in results["generation"].items():
        lines.append(
            f"generate at context {context}: "
            f"{g['cached_tokens_per_second']:.0f} "
            f"tokens/s with the cache, {g['recompute_tokens_per_second']:.0f} "
            f"recomputing ({g['speedup']:.1f}x)"
        )
    pipeline = results.get("input_pipeline", {})
    for source in ("memory", "prepared"):
        if f"{source}_tokens_per_second" in pipeline:
            lines.append(
                f"input pipeline ({source}): "
                f"{pipeline[source + '_tokens_per_second']:,.0f} tokens/s, "
                f"{pipeline[source + '_vs_train_step']:.0f}x what the train "
                "step consumes"
            )
    for row in results.get("seq2seq_decoding", []):
        ms = row["ms_per_token"]
        lines.append(
            f"seq2seq decoding, source {row['source_length']}, "
            f"{row['new_tokens']} tokens: {ms['cached']:.2f} ms/token with "
            f"the caches ({ms['cached_loop']:.2f} in one compiled loop), "
            f"{ms['recompute']:.2f} recomputing the decoder "
            f"({row['speedup_vs_recompute']['cached']:.1f}x), "
            f"{ms['recompute_all']:.2f} recomputing all"
        )
    if results.get("accumulation_memory"):
        m = results["accumulation_memory"]
        lines.append(
            f"peak memory, batch {m['batch_size']}: "
            f"{m['peak_mb_with']:.0f} MB accumulating "
            f"{m['grad_accum_steps']} batches against "
            f"{m['peak_mb_without']:.0f} MB without ({m['ratio']:.2f}x)"
        )
    if results["scaling"]:
        lines.append(f"{'vary':>16} {'seq':>6} {'width':>6} {'step ms':>9} "
                     f"{'FLOPs/token':>12}")
    for row in results["scaling"]:
        lines.append(
            f"{row['vary']:>16} {row['sequence_length']:>6} "
            f"{row['hidden_dim']:>6} {row['step_ms']:>9.1f} "
            f"{row['flops_per_token']:>12,}"
        )
    if results.get("scaling_plot"):
        lines.append(f"scaling plot: {results['scaling_plot']}")
    return "\n".join(lines)


def main_benchmark(args):
    if args.plot and args.no_scaling:
        raise UserError(
            "--plot draws the scaling table, which --no-scaling skips: "
            "drop one of the two."
        )
    overrides = {
        "batch_size": args.batch_size or None,
        "precision": args.precision,
        "jit_compile": args.jit_compile,
        "batch_splits": args.batch_splits,
    }
    config = make_config(args.config, **overrides)
    if args.smoke:
        config = make_config(
            args.config, **{**overrides, "num_layers": 1, "hidden_dim": 32,
                            "num_heads": 2, "intermediate_dim": 64,
                            "batch_size": 2, "sequence_length": 16},
        )
    results = run_benchmark(
        config,
        steps=args.steps if not args.smoke else 3,
        warmup=2 if args.smoke else 3,
        smoke=args.smoke,
        plot_path=args.plot,
        data_patterns=args.data,
        pytorch_reference=args.pytorch_reference,
        scaling=not args.no_scaling,
        packing=args.packing_cost,
        memory=args.memory,
        prepared=args.prepared,
    )
    if args.seq2seq:
        from keras_tfm.benchmarks import seq2seq_latency

        results["seq2seq_decoding"] = seq2seq_latency.at_task_lengths(
            rounds=1 if args.smoke else 5,
            model_kwargs=seq2seq_latency.TINY if args.smoke else None,
        )
    print(json.dumps(results) if args.json else format_results(results))
    return results
