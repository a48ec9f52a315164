"""`keras-tfm`: the parser, the dispatch, and how errors end.

Each subcommand module parses its flags and calls a library function. A
user's mistake (`UserError`) is printed as one line and exits with status
2; a run stopped by SIGTERM exits with 143 (128 + 15) after its
checkpoint; Ctrl-C with 130.
"""

import argparse
import os
import sys

from keras_tfm.cli import benchmark
from keras_tfm.cli import evaluate
from keras_tfm.cli import export
from keras_tfm.cli import finetune
from keras_tfm.cli import generate
from keras_tfm.cli import plot
from keras_tfm.cli import predict
from keras_tfm.cli import prepare
from keras_tfm.cli import pretrain
from keras_tfm.errors import UserError

SUBCOMMANDS = {
    "prepare": prepare,
    "pretrain": pretrain,
    "finetune": finetune,
    "evaluate": evaluate,
    "generate": generate,
    "predict": predict,
    "export": export,
    "plot": plot,
    "benchmark": benchmark,
}


class Parser(argparse.ArgumentParser):
    """argparse, with a usage error in one line (naming the flag and the
    value) instead of the usage text, like every other keras-tfm error."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} "
                     "--help`)\n")


def build_parser():
    parser = Parser(
        prog="keras-tfm",
        description="Pre-train, fine-tune, evaluate, export and benchmark "
        "Transformer models (TensorFlow + Keras 3).",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    for module in SUBCOMMANDS.values():
        module.add_parser(commands)
    return parser


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


def _restart_with_autocluster(argv):
    """TensorFlow reads TF_XLA_FLAGS only as it starts: start again with
    them (the new process sees them and does not restart)."""
    from keras_tfm.training import autoclustering_active
    from keras_tfm.training import autoclustering_environment

    if autoclustering_active() or "KERAS_TFM_RESTARTED" in os.environ:
        return
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(
        sys.executable,
        [sys.executable, "-m", "keras_tfm.cli", *argv],
        {**autoclustering_environment(), "KERAS_TFM_RESTARTED": "1"},
    )


def main(argv=None, allow_restart=None):
    """Runs the command; returns its exit status.

    Args:
        argv: the arguments (default: `sys.argv[1:]`).
        allow_restart: whether the process may restart itself with XLA's
            auto-clustering flags (default: only when `argv` is `None`,
            i.e. as the console script; a caller in a notebook or test
            keeps its process).
    """
    if allow_restart is None:
        allow_restart = argv is None
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    if allow_restart and _wants_autocluster(args):
        _restart_with_autocluster(argv)
    from keras_tfm.training.loop import PREEMPTED_EXIT_CODE
    from keras_tfm.training.loop import Preempted

    try:
        SUBCOMMANDS[args.command].run(args)
    except UserError as e:
        print(f"keras-tfm {args.command}: error: {e}", file=sys.stderr)
        return 2
    except Preempted as e:
        print(f"keras-tfm {args.command}: {e}", file=sys.stderr)
        return PREEMPTED_EXIT_CODE
    except KeyboardInterrupt:
        print(f"keras-tfm {args.command}: interrupted", file=sys.stderr)
        return 130
    return 0
