"""`keras-tfm plot`: pictures of runs from their `history.csv`.

    keras-tfm plot runs/tiny                 # runs/tiny/curves.png
    keras-tfm plot runs/a runs/b             # ./comparison.png
    keras-tfm plot runs/a --output a.png     # anywhere

One run gets its full curves (loss and learning rate, plus any other
metrics), the picture a run draws for itself at each evaluation; several
runs get their losses on one chart. The default for several runs is not
`curves.png`, so that plotting from inside a run directory never replaces
that run's own curves with a comparison.
"""

from keras_tfm.cli.common import describe

COMPARISON_FILE = "comparison.png"


def add_parser(commands):
    parser = commands.add_parser(
        "plot",
        help="draw runs' loss and learning-rate curves as a PNG",
        description="Draw a run's curves (train and validation loss, "
        "learning rate) or several runs' losses on one chart, from their "
        "history.csv; works on a run that is still training.",
    )
    parser.add_argument(
        "run_dirs", nargs="+", metavar="RUN",
        help="a run directory (the --output-dir of a keras-tfm run); "
        "give several to compare them",
    )
    parser.add_argument(
        "--output", metavar="PNG",
        help=describe(
            "the PNG to write",
            f"RUN/curves.png for one run, ./{COMPARISON_FILE} for several",
        ),
    )
    return parser


def run(args):
    from keras_tfm.training import plots

    if len(args.run_dirs) == 1:
        path = plots.write_curves(args.run_dirs[0], args.output)
    else:
        path = plots.plot_runs(args.run_dirs,
                               args.output or COMPARISON_FILE)
    print(f"wrote {path}")
