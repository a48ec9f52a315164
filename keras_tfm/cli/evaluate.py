"""`keras-tfm evaluate`: a run's figures on any data."""

import json

from keras_tfm.cli.common import positive_int


def add_parser(commands):
    parser = commands.add_parser(
        "evaluate",
        help="score a run: an LM in bits per byte on any text, a "
        "fine-tuned run with its task's metrics",
        description="Score a finished run: a language model in loss, "
        "perplexity and bits per byte (default: on its own validation "
        "split); a classifier in accuracy, macro F1 and the confusion "
        "matrix; a translation run in sacreBLEU; a summarization run in "
        "ROUGE (default: its validation data).",
    )
    parser.add_argument("run_dir", metavar="RUN_DIR",
                        help="a finished run's directory")
    parser.add_argument(
        "--data", action="extend", nargs="+", metavar="FILE",
        help="LM: text files or globs; classification: a labelled file; "
        "translation: SOURCE_FILE TARGET_FILE; summarization: a JSONL file "
        "(default: the run's own validation data)",
    )
    parser.add_argument("--batch-size", type=positive_int, default=32,
                        help="sequences per batch (default: 32)")
    parser.add_argument("--beam-size", type=positive_int, default=None,
                        help="seq2seq: beam width, 1 for greedy (default: "
                        "the run's beam_size)")
    parser.add_argument("--json", action="store_true",
                        help="print one JSON object instead of a line")
    return parser


def run(args):
    from keras_tfm.tasks.language_model import evaluate_run
    from keras_tfm.tasks.registry import get_task
    from keras_tfm.training.run import check_run_directory
    from keras_tfm.training.run import run_kind

    check_run_directory(args.run_dir)
    kind = run_kind(args.run_dir)
    if kind != "pretrain":
        task = get_task(kind)
        results = task.evaluate_run(args.run_dir, args.data,
                                    batch_size=args.batch_size,
                                    beam_size=args.beam_size)
        print(json.dumps(results) if args.json
              else task.format_evaluation(results))
        return

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
