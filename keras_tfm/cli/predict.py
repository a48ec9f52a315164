"""`keras-tfm predict`: a fine-tuned run's answers for new text."""

import json

from keras_tfm.cli.common import positive_int


def add_parser(commands):
    parser = commands.add_parser(
        "predict",
        help="label, translate or summarize text with a fine-tuned run",
        description="Run a fine-tuned model on text given with --text "
        "(repeatable) or read from --input (one text per line; '-' reads "
        "standard input) and print one answer per line.",
    )
    parser.add_argument("run_dir", metavar="RUN_DIR",
                        help="a finished fine-tuning run's directory")
    parser.add_argument("--text", action="append",
                        help="a text to answer; repeatable")
    parser.add_argument("--input", metavar="FILE",
                        help="a file of texts, one per line ('-': standard "
                        "input)")
    parser.add_argument("--json", action="store_true",
                        help="print one JSON object per text")
    parser.add_argument("--batch-size", type=positive_int, default=32,
                        help="texts per batch (default: 32)")
    parser.add_argument("--beam-size", type=positive_int, default=None,
                        help="seq2seq: beam width, 1 for greedy (default: "
                        "the run's beam_size)")
    parser.add_argument(
        "--backend", choices=("keras", "tflite"), default="keras",
        help="keras: the run's model.keras; tflite: the exported TFLite "
        "files under the LiteRT interpreter (default: keras; choices: "
        "keras, tflite)",
    )
    return parser


def read_texts(args):
    import sys

    from keras_tfm.errors import UserError

    if bool(args.text) == bool(args.input):
        raise UserError("pass the texts with --text or --input (one of "
                        "the two).")
    if args.text:
        return list(args.text)
    if args.input == "-":
        lines = sys.stdin.read().splitlines()
    else:
        try:
            with open(args.input, encoding="utf-8") as f:
                lines = f.read().splitlines()
        except FileNotFoundError:
            raise UserError(f"no such file: '{args.input}': check --input."
                            ) from None
        except UnicodeDecodeError:
            raise UserError(f"'{args.input}' is not UTF-8 text.") from None
    texts = [line for line in lines if line.strip()]
    if not texts:
        raise UserError(f"'{args.input}' holds no text.")
    return texts


def run(args):
    from keras_tfm.errors import UserError
    from keras_tfm.tasks.registry import get_task
    from keras_tfm.training.run import check_run_directory
    from keras_tfm.training.run import run_kind

    check_run_directory(args.run_dir)
    kind = run_kind(args.run_dir)
    if kind == "pretrain":
        raise UserError(
            f"'{args.run_dir}' is a pre-training run, which predicts no "
            "labels or outputs: use `keras-tfm generate` for text, or "
            "fine-tune it first (`keras-tfm finetune --init "
            f"{args.run_dir} ...`)."
        )
    texts = read_texts(args)
    task = get_task(kind)
    if args.backend == "tflite":
        from keras_tfm.export.tasks import predict_with_tflite

        answers = predict_with_tflite(args.run_dir, texts, args.beam_size)
    else:
        answers = task.predict_run(args.run_dir, texts,
                                   batch_size=args.batch_size,
                                   beam_size=args.beam_size)
    for answer in answers:
        print(json.dumps(answer, ensure_ascii=False) if args.json
              else task.format_prediction(answer))
