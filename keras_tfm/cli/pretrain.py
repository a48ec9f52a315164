"""`keras-tfm pretrain`: train a language model, write a run directory."""

import argparse

from keras_tfm.cli.common import add_config_flags
from keras_tfm.cli.common import describe


def add_parser(commands):
    from keras_tfm.training.config import TrainConfig
    from keras_tfm.training.config import preset_names

    parser = commands.add_parser(
        "pretrain",
        help="train a language model and write a run directory",
        description="Train a language model on text (default: Python's "
        "pydoc_data topics), evaluate it, print a sample and write a run "
        "directory. Every config field is a flag; the defaults shown are "
        "the small preset's, which --config may change. A rerun of an "
        "unfinished run resumes it.",
    )
    parser.add_argument(
        "--config",
        help=describe("preset name or JSON config file", "small",
                      preset_names()),
    )
    parser.add_argument(
        "--data", action="append", metavar="GLOB",
        help="text file or glob (UTF-8; .gz and JSON Lines too), or a "
        "directory written by `keras-tfm prepare`; repeatable (default: "
        "Python's pydoc_data topics)",
    )
    parser.add_argument(
        "--output-dir",
        help="run directory (default: runs/<data or preset>-<objective>)",
    )
    parser.add_argument(
        "--restart", action="store_true",
        help="discard the run in the output directory (finished or not) and "
        "start over; without it an unfinished run resumes",
    )
    # The older name of --restart, kept for scripts that use it.
    parser.add_argument("--overwrite", dest="restart", action="store_true",
                        help=argparse.SUPPRESS)
    add_config_flags(parser, TrainConfig,
                     skip=("data", "output_dir", "preset"))
    return parser


def run(args):
    from keras_tfm.training import make_config
    from keras_tfm.training import train

    overrides = {
        k: v
        for k, v in vars(args).items()
        if k not in ("command", "config", "restart", "data")
    }
    if args.data:
        overrides["data"] = tuple(args.data)
        check_prepared_tokenizer(args)
    config = make_config(args.config or "small", **overrides)
    metrics = train(config, restart=args.restart)
    print(f"\nrun directory: {metrics['run_dir']}")
    print(
        f"validation: loss {metrics['val_loss']:.4f} nats/token, "
        f"perplexity {metrics['val_perplexity']:.3f}, "
        f"{metrics['val_bits_per_byte']:.4f} bits/byte "
        f"(unigram baseline {metrics['unigram_bits_per_byte']:.4f})"
    )
    speed = metrics.get("tokens_per_second")
    print(
        f"trained {metrics['steps']} steps, {metrics['tokens_seen']:,} "
        "tokens"
        + (f", {speed:,.0f} tokens/s" if speed else "")
    )
    if metrics.get("sample"):
        print("sample:\n" + metrics["sample"])


def check_prepared_tokenizer(args):
    """A prepared corpus fixes the tokenizer: a --tokenizer that
    contradicts it is an error (one that agrees is fine)."""
    from keras_tfm.data.prepared import open_prepared
    from keras_tfm.errors import UserError
    from keras_tfm.training.lm_corpus import prepared_directory

    directory = prepared_directory(args.data)
    if not directory:
        return
    fixed = open_prepared(directory, verify=False).manifest["tokenizer"][
        "type"]
    if args.tokenizer is not None and args.tokenizer != fixed:
        raise UserError(
            f"--tokenizer {args.tokenizer} contradicts the prepared corpus "
            f"'{directory}', tokenized with {fixed}: drop the flag, or "
            "prepare the corpus again with the tokenizer you want."
        )
