"""`keras-tfm benchmark`: speed against references in the same run."""

from keras_tfm.cli.common import describe
from keras_tfm.cli.common import positive_int


def add_parser(commands):
    parser = commands.add_parser(
        "benchmark",
        help="training and inference speed against a keras-hub reference "
        "(and optionally nanoGPT on PyTorch) measured in the same run",
        description="Times keras-tfm's train step against a same-size "
        "model built from keras-hub layers (interleaved, one process), "
        "with MFU against a matmul peak measured in the run, input wait, "
        "cached vs recomputed generation, and step-time scaling.",
    )
    parser.add_argument("--config", default="nano",
                        help="preset or JSON file (default: nano)")
    parser.add_argument(
        "--data", action="append", metavar="GLOB",
        help="text to train on; repeatable (default: Python's pydoc_data "
        "topics)",
    )
    parser.add_argument("--steps", type=positive_int, default=30,
                        help="timed steps per model, after warm-up "
                        "(default: 30)")
    parser.add_argument("--batch-size", type=positive_int, default=None,
                        help="override the config's batch size")
    parser.add_argument(
        "--precision", default=None, choices=("float32", "mixed_bfloat16"),
        help=describe("override the config's precision",
                      choices=("float32", "mixed_bfloat16")),
    )
    parser.add_argument(
        "--jit-compile", default=None,
        choices=("auto", "true", "false", "autocluster"),
        help=describe("override the config's jit_compile",
                      choices=("auto", "true", "false", "autocluster")),
    )
    parser.add_argument("--batch-splits", type=int, default=None,
                        help="override the config's batch_splits (0: auto)")
    parser.add_argument(
        "--pytorch-reference", action="store_true",
        help="also time nanoGPT's model and step on PyTorch (float32, "
        "eager, as its CPU recipe runs), interleaved; needs torch",
    )
    parser.add_argument(
        "--prepared", metavar="DIR",
        help="also time the input pipeline reading this prepared corpus "
        "(keras-tfm prepare)",
    )
    parser.add_argument(
        "--packing-cost", action="store_true",
        help="also time the step with --packing documents, interleaved",
    )
    parser.add_argument(
        "--seq2seq", action="store_true",
        help="also time Seq2SeqLM decoding, ms per generated token with "
        "the caches against recomputing, at Multi30k's and SciTLDR's "
        "lengths (a 3+3 x 256 model)",
    )
    parser.add_argument(
        "--memory", action="store_true",
        help="peak memory with 4 accumulated batches against 1 (two "
        "training processes)",
    )
    parser.add_argument("--plot", metavar="PNG",
                        help="write the scaling plot to this PNG")
    parser.add_argument("--no-scaling", action="store_true",
                        help="skip the scaling table (most of the run at "
                        "large batches)")
    parser.add_argument("--json", action="store_true",
                        help="print one JSON object")
    parser.add_argument("--smoke", action="store_true",
                        help="tiny sizes and a few steps: checks that "
                        "everything runs, in seconds")
    return parser


def run(args):
    from keras_tfm.benchmarks.benchmark import main_benchmark

    main_benchmark(args)
