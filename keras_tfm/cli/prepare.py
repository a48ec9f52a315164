"""`keras-tfm prepare`: tokenize a corpus once into shards for training."""

from keras_tfm.cli.common import describe
from keras_tfm.cli.common import positive_int


def _fraction(text):
    import argparse

    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a number, got {text!r}"
        ) from None
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(
            f"must be between 0 and 1 (exclusive), got {text}"
        )
    return value


def _non_negative_int(text):
    import argparse

    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected an integer, got {text!r}"
        ) from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def add_parser(commands):
    from keras_tfm.data.prepare import DEFAULT_SHARD_TOKENS
    from keras_tfm.data.prepare import DEFAULT_VOCABULARY_SIZE

    parser = commands.add_parser(
        "prepare",
        help="tokenize a corpus once into shards that pretrain streams",
        description="Read text files (plain or gzipped; plain text or JSON "
        "Lines), split them by document into train and validation, "
        "tokenize them and write token shards, the tokenizer and "
        "manifest.json to --output-dir, for `keras-tfm pretrain --data "
        "DIR`. Memory does not grow with the corpus. A rerun of an "
        "unfinished prepare resumes it.",
    )
    parser.add_argument(
        "--data", nargs="+", action="extend", required=True,
        metavar="GLOB",
        help="input files or globs (quote globs); repeatable (required)",
    )
    parser.add_argument(
        "--format", choices=("text", "jsonl"),
        help="input format: text is one document per file, jsonl one per "
        "line (default: jsonl for names ending .jsonl or .jsonl.gz, else "
        "text; choices: text, jsonl)",
    )
    parser.add_argument(
        "--text-field", default="text",
        help=describe("JSON Lines field holding the text", "text"),
    )
    parser.add_argument(
        "--tokenizer", required=True, choices=("byte", "wordpiece"),
        help="byte (260 ids, nothing unknown) or wordpiece (learned from a "
        "sample of the corpus) (required; choices: byte, wordpiece)",
    )
    parser.add_argument(
        "--vocabulary-size", type=positive_int,
        default=DEFAULT_VOCABULARY_SIZE, metavar="N",
        help=describe("target WordPiece vocabulary size, special tokens "
                      "included", DEFAULT_VOCABULARY_SIZE),
    )
    parser.add_argument(
        "--output-dir", required=True, metavar="DIR",
        help="directory to write the shards, tokenizer and manifest to "
        "(required)",
    )
    parser.add_argument(
        "--validation-fraction", type=_fraction, default=0.01, metavar="F",
        help=describe("share of the documents held out for validation",
                      0.01),
    )
    parser.add_argument(
        "--shard-tokens", type=positive_int, default=DEFAULT_SHARD_TOKENS,
        metavar="N",
        help=describe("tokens per shard file", DEFAULT_SHARD_TOKENS),
    )
    parser.add_argument(
        "--seed", type=_non_negative_int, default=0,
        help="seeds the validation split and the vocabulary sample "
        "(default: 0)",
    )
    parser.add_argument(
        "--skip-bad-lines", action="store_true",
        help="skip (and count) JSON Lines lines that are not JSON or lack "
        "the text field, instead of stopping at the first",
    )
    parser.add_argument(
        "--workers", type=positive_int, default=2,
        help=describe("threads tokenizing WordPiece text", 2),
    )
    parser.add_argument(
        "--restart", action="store_true",
        help="discard an earlier prepare in --output-dir and start over; "
        "without it an unfinished prepare resumes",
    )
    return parser


def run(args):
    from keras_tfm.data.prepare import prepare

    manifest = prepare(
        args.data,
        args.output_dir,
        tokenizer=args.tokenizer,
        vocabulary_size=args.vocabulary_size,
        format=args.format or "auto",
        text_field=args.text_field,
        validation_fraction=args.validation_fraction,
        shard_tokens=args.shard_tokens,
        seed=args.seed,
        skip_bad_lines=args.skip_bad_lines,
        workers=args.workers,
        restart=args.restart,
    )
    shards = manifest["shards"]
    print(
        f"\nprepared corpus: {args.output_dir}\n"
        f"{manifest['documents']:,} documents, {manifest['tokens']:,} tokens "
        f"({manifest['bytes']:,} bytes of text); "
        f"{len(shards['train'])} train and {len(shards['validation'])} "
        f"validation shard(s); manifest sha256 "
        f"{manifest['manifest_sha256'][:16]}"
    )
    if manifest["skipped_lines"]:
        print(f"skipped {manifest['skipped_lines']:,} bad line(s)")
