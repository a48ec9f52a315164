"""The `keras-tfm` command: pretrain, evaluate, generate.

Each subcommand parses its flags and calls a library function; a user's
mistake (`UserError`) is printed as one line and exits with status 2.
"""

import argparse
import json
import os
import sys

from keras_tfm.errors import UserError


def _add_config_flags(parser):
    """One flag per `TrainConfig` field, named after it."""
    from keras_tfm.training.config import FIELDS

    explicit = {"data", "output_dir", "preset"}
    for name, field in FIELDS.items():
        if name in explicit:
            continue
        flag = "--" + name.replace("_", "-")
        if field.type is bool:
            parser.add_argument(
                flag, action=argparse.BooleanOptionalAction, default=None
            )
        else:
            parser.add_argument(
                flag, type=field.type, default=None, metavar=name.upper()
            )


def build_parser():
    parser = argparse.ArgumentParser(
        prog="keras-tfm",
        description="Pre-train, evaluate and sample Transformer language "
        "models (TensorFlow + Keras 3).",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    pretrain = commands.add_parser(
        "pretrain",
        help="train a language model and write a run directory",
        description="Train a language model on text files (default: "
        "Python's pydoc_data topics), evaluate it, print a sample and write "
        "a run directory. Every config field can be set with a flag.",
    )
    pretrain.add_argument(
        "--config",
        help="preset name (tiny, small) or JSON config file; default: small",
    )
    pretrain.add_argument(
        "--data",
        action="append",
        metavar="GLOB",
        help="UTF-8 text file or glob; repeatable",
    )
    pretrain.add_argument(
        "--output-dir", help="run directory (default: runs/<preset>-<objective>)"
    )
    pretrain.add_argument(
        "--restart",
        "--overwrite",
        dest="restart",
        action="store_true",
        help="discard the run in the output directory (finished or not) and "
        "start over; without it an unfinished run resumes",
    )
    _add_config_flags(pretrain)

    evaluate = commands.add_parser(
        "evaluate",
        help="loss, perplexity and bits per byte of a run on any text",
    )
    evaluate.add_argument("run_dir", metavar="RUN_DIR")
    evaluate.add_argument(
        "--data",
        action="append",
        metavar="GLOB",
        help="text file or glob; repeatable (default: the run's own "
        "validation split)",
    )
    evaluate.add_argument("--batch-size", type=int, default=32)
    evaluate.add_argument(
        "--json", action="store_true", help="print one JSON object"
    )

    export = commands.add_parser(
        "export",
        help="SavedModel for TF Serving and TFLite files, checked against "
        "the Keras model",
        description="Export a finished run under RUN_DIR/export/ (or "
        "--output) and write export_report.json: each file's size, the "
        "largest difference of its logits from the Keras model's, and its "
        "bits per byte on held-out text.",
    )
    export.add_argument("run_dir", metavar="RUN_DIR")
    export.add_argument(
        "--format", default="savedmodel,tflite",
        help="comma-separated: savedmodel, tflite (default: both)",
    )
    export.add_argument(
        "--quantize", default="none,float16,dynamic,int8",
        help="comma-separated TFLite variants: none (float32), float16, "
        "dynamic (int8 weights), int8 (int8 weights and activations, "
        "calibrated on the corpus); default: all",
    )
    export.add_argument("--output", help="directory (default: RUN_DIR/export)")
    export.add_argument(
        "--model-name", help="TF Serving model name (default: RUN_DIR's name)"
    )
    export.add_argument("--version", type=int, default=1,
                        help="TF Serving version directory (default: 1)")
    export.add_argument("--overwrite", action="store_true",
                        help="replace an earlier export in the output directory")
    export.add_argument(
        "--allow-flex", action="store_true",
        help="accept select TF (Flex) ops in TFLite files; they need a "
        "Flex-enabled runtime",
    )

    benchmark = commands.add_parser(
        "benchmark",
        help="training and inference speed against a keras-hub reference "
        "(and optionally nanoGPT on PyTorch) measured in the same run",
        description="Times keras-tfm's train step against a same-size "
        "model built from keras-hub layers (interleaved, one process), "
        "with MFU against a matmul peak measured in the run, input wait, "
        "cached vs recomputed generation, and step-time scaling.",
    )
    benchmark.add_argument("--config", default="nano",
                           help="preset (nano, compute, small, ...) or JSON "
                           "file; default: nano")
    benchmark.add_argument("--steps", type=int, default=30,
                           help="timed steps per model (after warm-up)")
    benchmark.add_argument("--batch-size", type=int, default=None,
                           help="override the config's batch size")
    benchmark.add_argument("--precision", default=None,
                           choices=("float32", "mixed_bfloat16"),
                           help="override the config's precision")
    benchmark.add_argument("--jit-compile", default=None,
                           choices=("auto", "true", "false", "autocluster"),
                           help="override the config's jit_compile")
    benchmark.add_argument("--batch-splits", type=int, default=None,
                           help="override the config's batch_splits "
                           "(0: auto)")
    benchmark.add_argument(
        "--pytorch-reference", action="store_true",
        help="also time nanoGPT's model and step on PyTorch (float32, "
        "eager, as its CPU recipe runs), interleaved; needs torch",
    )
    benchmark.add_argument("--plot", help="write the scaling plot to this PNG")
    benchmark.add_argument("--no-scaling", action="store_true",
                           help="skip the scaling table (most of the run "
                           "at large batches)")
    benchmark.add_argument("--json", action="store_true",
                           help="print one JSON object")
    benchmark.add_argument("--smoke", action="store_true",
                           help="tiny sizes and a few steps: checks that "
                           "everything runs, in seconds")

    generate = commands.add_parser(
        "generate", help="sample text from a causal LM run"
    )
    generate.add_argument("run_dir", metavar="RUN_DIR")
    generate.add_argument("--prompt", default="", help="text to continue")
    generate.add_argument("--max-new-tokens", type=int, default=200)
    generate.add_argument(
        "--temperature", type=float, default=1.0, help="0 means greedy"
    )
    generate.add_argument("--top-k", type=int, default=None)
    generate.add_argument("--top-p", type=float, default=None)
    generate.add_argument("--seed", type=int, default=None)
    generate.add_argument(
        "--backend", choices=("keras", "tflite"), default="keras",
        help="keras: the run's model.keras; tflite: the exported "
        "prefill/decode TFLite file, run by the LiteRT interpreter",
    )
    generate.add_argument(
        "--tflite-file",
        help="decoder file for --backend tflite (default: "
        "RUN_DIR/export/tflite/decoder_float32.tflite)",
    )
    return parser


def run_pretrain(args):
    from keras_tfm.training import make_config
    from keras_tfm.training import train

    overrides = {
        k: v
        for k, v in vars(args).items()
        if k not in ("command", "config", "restart", "data")
    }
    if args.data:
        overrides["data"] = tuple(args.data)
    config = make_config(args.config or "small", **overrides)
    metrics = train(config, restart=args.restart)
    if metrics.get("preempted"):
        return
    print(f"\nrun directory: {metrics['run_dir']}")
    print(
        f"validation: loss {metrics['val_loss']:.4f} nats/token, "
        f"perplexity {metrics['val_perplexity']:.3f}, "
        f"{metrics['val_bits_per_byte']:.4f} bits/byte "
        f"(unigram baseline {metrics['unigram_bits_per_byte']:.4f})"
    )
    print(
        f"trained {metrics['steps']} steps, {metrics['tokens_seen']:,} "
        f"tokens, {metrics['tokens_per_second']:,.0f} tokens/s"
    )
    if metrics.get("sample"):
        print("sample:\n" + metrics["sample"])


def run_evaluate(args):
    from keras_tfm.runs import evaluate_run

    results = evaluate_run(args.run_dir, args.data, batch_size=args.batch_size)
    if args.json:
        print(json.dumps(results))
        return
    print(
        f"loss {results['loss']:.4f} nats/token, perplexity "
        f"{results['perplexity']:.3f}, {results['bits_per_byte']:.4f} "
        f"bits/byte over {results['tokens']:,} tokens ({results['bytes']:,} "
        f"bytes, unknown rate {results['unknown_rate']:.4f})"
    )


def run_export(args):
    from keras_tfm.export import export_run

    def split(value):
        return [v.strip() for v in value.split(",") if v.strip()]

    report = export_run(
        args.run_dir,
        formats=split(args.format),
        quantize=split(args.quantize),
        output=args.output,
        model_name=args.model_name,
        version=args.version,
        overwrite=args.overwrite,
        allow_flex=args.allow_flex,
    )
    print(f"export written to {report['output']} (export_report.json)")


def run_benchmark(args):
    from keras_tfm.benchmark import main_benchmark

    main_benchmark(args)


def run_generate(args):
    from keras_tfm.runs import generate_from_run

    text = generate_from_run(
        args.run_dir,
        prompt=args.prompt,
        max_new_tokens=args.max_new_tokens,
        temperature=args.temperature,
        top_k=args.top_k,
        top_p=args.top_p,
        seed=args.seed,
        backend=args.backend,
        tflite_file=args.tflite_file,
    )
    print(args.prompt + text)


def _wants_autocluster(args):
    if args.command not in ("pretrain", "benchmark"):
        return False
    from keras_tfm.training import make_config

    try:
        config = make_config(args.config or "small",
                             jit_compile=getattr(args, "jit_compile", None))
    except UserError:
        return False  # reported when the command runs
    return config.jit_compile == "autocluster"


def main(argv=None):
    args = build_parser().parse_args(argv)
    if argv is None and _wants_autocluster(args):
        from keras_tfm.training import autoclustering_active
        from keras_tfm.training import autoclustering_environment

        restarted = "KERAS_TFM_RESTARTED" in os.environ
        if not autoclustering_active() and not restarted:
            # TensorFlow reads TF_XLA_FLAGS only as it starts: start again
            # with them (the new process sees them and does not restart).
            sys.stdout.flush()
            sys.stderr.flush()
            os.execve(
                sys.executable,
                [sys.executable, "-m", "keras_tfm.cli", *sys.argv[1:]],
                {**autoclustering_environment(), "KERAS_TFM_RESTARTED": "1"},
            )
    handlers = {
        "pretrain": run_pretrain,
        "evaluate": run_evaluate,
        "generate": run_generate,
        "export": run_export,
        "benchmark": run_benchmark,
    }
    try:
        handlers[args.command](args)
    except UserError as e:
        print(f"keras-tfm {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"keras-tfm {args.command}: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
