"""`keras-tfm evaluate`: a run's figures on any data."""

import json

from keras_tfm.cli.common import positive_int


def add_parser(commands):
    parser = commands.add_parser(
        "evaluate",
        help="loss, perplexity and bits per byte of a run on any text",
        description="Score a finished run: a language model in loss, "
        "perplexity and bits per byte (default: on its own validation "
        "split).",
    )
    parser.add_argument("run_dir", metavar="RUN_DIR",
                        help="a finished run's directory")
    parser.add_argument(
        "--data", action="append", metavar="GLOB",
        help="text file or glob; repeatable (default: the run's own "
        "validation split)",
    )
    parser.add_argument("--batch-size", type=positive_int, default=32,
                        help="sequences per batch (default: 32)")
    parser.add_argument("--json", action="store_true",
                        help="print one JSON object instead of a line")
    return parser


def run(args):
    from keras_tfm.tasks.language_model import evaluate_run

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
