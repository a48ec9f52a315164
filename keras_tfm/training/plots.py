"""Pictures of training runs, drawn from their `history.csv`.

    write_curves(run_dir)           # run_dir/curves.png: loss and learning
                                    # rate against steps
    history.on_record.append(history_hook)   # redraw it at each evaluation
    plot_runs([run_a, run_b], "comparison.png")   # several runs' losses

matplotlib is imported inside the functions, so that importing keras-tfm
stays fast, and only its object-oriented API with the Agg canvas is used:
`pyplot` would switch the process-wide backend (a notebook's, too) and keep
every figure alive in its registry.
"""

import csv
import io
import math
import os
import sys

from keras_tfm import files
from keras_tfm.errors import UserError

CURVES_FILE = "curves.png"
HISTORY_FILE = "history.csv"
DPI = 100
# Columns that are `val_loss` on another scale (exp, or a constant factor
# on a fixed validation set): their curve has the loss's shape, so a panel
# for them would show nothing new.
DERIVED_FROM_LOSS = ("val_perplexity", "val_bits_per_byte")
TRAIN_COLOR = "tab:blue"
VAL_COLOR = "tab:orange"
LEARNING_RATE_COLOR = "tab:green"
METRIC_COLORS = ("tab:red", "tab:purple", "tab:brown", "tab:pink",
                 "tab:olive", "tab:cyan")
# With fewer evaluations than this a curve gets markers: a run with one or
# two rows would otherwise show a dot-less line or nothing at all.
MARKERS_BELOW = 40
# (run directory, message) of the drawing failures already reported.
_warned = set()


def write_curves(run_dir_or_history, path=None):
    """Draws a run's curves and writes them as a PNG, atomically.

    The top panel has the train and validation loss against steps on the
    left axis and the learning rate, dashed and in its own colour, on the
    right axis. Columns a run lacks are left out (a fine-tuning run may
    have no train loss), and values that are empty or not finite (the
    train loss of a row at step 0 is NaN) are skipped. Other `train_` and
    `val_` metrics (e.g. `val_accuracy` of a fine-tuning run) get a second,
    smaller panel below.

    Args:
        run_dir_or_history: a run directory (its `history.csv` is read) or
            a `History` (its rows, as the training loop holds them).
        path: the PNG to write (default: `curves.png` in the run
            directory). Its directory is created if needed.

    Returns:
        The path written.

    Raises:
        UserError: no run directory, no history rows, or `path` is not a
            `.png` file.
    """
    rows, columns, run_dir = _history_of(run_dir_or_history)
    if path is None:
        if run_dir is None:
            raise UserError(
                "this history has no run directory to hold curves.png: "
                "pass path= to write_curves."
            )
        path = os.path.join(run_dir, CURVES_FILE)
    _check_png(path)
    figure = _draw_curves(rows, columns, run_name(run_dir))
    _save(figure, path)
    return path


def history_hook(history):
    """Redraws `curves.png` of `history`'s run; for `History.on_record`.

    Training must never stop over a picture: any failure (matplotlib
    missing, a full disk) is reported as a one-line warning on stderr,
    once per run and message, and training goes on. A history without a
    run directory (a worker other than the chief) draws nothing.

    Args:
        history: the `History` that has just recorded a row.
    """
    if getattr(history, "run_dir", None) is None:
        return
    try:
        write_curves(history)
    except Exception as e:  # a picture never ends a run
        lines = str(e).strip().splitlines()
        message = type(e).__name__
        if lines:
            message += f": {lines[0]}"
        key = (history.run_dir, message)
        if key in _warned:
            return
        _warned.add(key)
        print(
            f"warning: could not draw "
            f"{os.path.join(history.run_dir, CURVES_FILE)} ({message}); "
            "training continues without it",
            file=sys.stderr, flush=True,
        )


def plot_runs(run_dirs, output):
    """Draws several runs' train and validation loss on one chart.

    Each run has one colour (the legend names the runs by their
    directory's name, or by their path when two names are the same);
    validation loss is solid and train loss dashed.

    Args:
        run_dirs: run directories, each with a `history.csv`.
        output: the PNG to write. Its directory is created if needed.

    Returns:
        `output`.

    Raises:
        UserError: no runs, a run without history rows, or `output` is not
            a `.png` file.
    """
    _check_png(output)
    run_dirs = list(run_dirs)
    if not run_dirs:
        raise UserError("no run directories to plot: pass at least one.")
    # Every run is read before drawing, so a bad one fails fast.
    histories = [read_history(run_dir) for run_dir in run_dirs]
    names = [run_name(run_dir) for run_dir in run_dirs]
    if len(set(names)) < len(names):
        names = [os.path.normpath(run_dir) for run_dir in run_dirs]
    figure = _draw_comparison(
        [(name, rows) for name, (rows, _) in zip(names, histories)]
    )
    _save(figure, output)
    return output


def read_history(run_dir):
    """The rows (dicts of strings) and columns of a run's `history.csv`.

    Rows whose step is not a number are skipped: a row the training
    process is appending at this moment may be read half-written.

    Raises:
        UserError: no such directory, or no `history.csv` with a row.
    """
    if not os.path.isdir(run_dir):
        raise UserError(
            f"no run directory '{run_dir}': pass the --output-dir of a "
            "keras-tfm run."
        )
    path = os.path.join(run_dir, HISTORY_FILE)
    rows, columns = [], ()
    if os.path.isfile(path):
        try:
            with open(path, newline="", encoding="utf-8") as f:
                reader = csv.DictReader(f)
                rows = [row for row in reader
                        if (row.get("step") or "").isdigit()]
                columns = tuple(reader.fieldnames or ())
        except (UnicodeDecodeError, csv.Error) as e:
            raise UserError(
                f"'{path}' is not a readable CSV file ({type(e).__name__}"
                f": {str(e).splitlines()[0] if str(e) else 'unreadable'})."
            ) from None
    if not rows:
        raise UserError(
            f"'{run_dir}' has no training history (history.csv is missing "
            "or empty): it gets a row at each evaluation, so pass the "
            "--output-dir of a keras-tfm run that has evaluated at least "
            "once."
        )
    return rows, columns


def run_name(run_dir):
    """The name of a run: its directory's name (`.` becomes the name of
    the current directory)."""
    if run_dir is None:
        return "run"
    return os.path.basename(os.path.abspath(run_dir)) or run_dir


def _history_of(run_dir_or_history):
    """`(rows, columns, run_dir)` of a run directory or a `History`."""
    if isinstance(run_dir_or_history, (str, os.PathLike)):
        run_dir = os.fspath(run_dir_or_history)
        rows, columns = read_history(run_dir)
        return rows, columns, run_dir
    history = run_dir_or_history
    if not history.rows:
        raise UserError(
            f"'{history.run_dir}' has no training history (history.csv is "
            "missing or empty): draw the curves after the first evaluation."
        )
    return list(history.rows), tuple(history.columns), history.run_dir


def _check_png(path):
    if os.path.splitext(os.fspath(path))[1].lower() != ".png":
        raise UserError(
            f"'{path}' is not a .png file: keras-tfm draws PNG images, so "
            "name the output '<name>.png'."
        )


def _number(text):
    try:
        return float(text)
    except (TypeError, ValueError):
        return math.nan


def _series(rows, column):
    """`(steps, values)` of the rows whose `column` is a finite number."""
    steps, values = [], []
    for row in rows:
        step, value = _number(row.get("step")), _number(row.get(column))
        if math.isfinite(step) and math.isfinite(value):
            steps.append(step)
            values.append(value)
    return steps, values


def _metric_columns(columns):
    """The metrics other than the losses, for the second panel."""
    return [
        name for name in columns
        if name.startswith(("train_", "val_"))
        and name not in ("train_loss", "val_loss")
        and name not in DERIVED_FROM_LOSS
    ]


def _label(column):
    """`val_accuracy` -> `validation accuracy`."""
    prefix, _, rest = column.partition("_")
    prefix = {"val": "validation", "train": "train"}.get(prefix, prefix)
    return f"{prefix} {rest.replace('_', ' ')}"


def _line(axis, steps, values, **style):
    marker = "o" if len(steps) < MARKERS_BELOW else None
    return axis.plot(steps, values, marker=marker, markersize=3.5,
                     **style)[0]


def _draw_curves(rows, columns, name):
    """The `Figure` of one run's curves (not yet rendered)."""
    from matplotlib.figure import Figure

    metrics = [c for c in _metric_columns(columns) if _series(rows, c)[0]]
    if metrics:
        figure = Figure(figsize=(9, 7), layout="constrained")
        loss_axis, metric_axis = figure.subplots(
            2, 1, sharex=True, height_ratios=(3, 1.4)
        )
    else:
        figure = Figure(figsize=(9, 5), layout="constrained")
        loss_axis, metric_axis = figure.subplots(), None
    handles = []
    for column, label, color, width in (
        ("train_loss", "train loss", TRAIN_COLOR, 1.4),
        ("val_loss", "validation loss", VAL_COLOR, 2.0),
    ):
        steps, values = _series(rows, column)
        if column in columns and steps:
            handles.append(_line(loss_axis, steps, values, label=label,
                                 color=color, linewidth=width))
    loss_axis.set_ylabel("loss")
    loss_axis.grid(True, alpha=0.3)
    loss_axis.set_xlim(left=0)
    steps, values = _series(rows, "learning_rate")
    if steps:
        # The learning rate is orders of magnitude below the loss: its own
        # axis on the right, dashed and coloured like its axis, so that no
        # one reads it against the loss scale.
        rate_axis = loss_axis.twinx()
        handles.append(rate_axis.plot(
            steps, values, color=LEARNING_RATE_COLOR, linestyle="--",
            linewidth=1.4, label="learning rate (right axis)",
        )[0])
        rate_axis.set_ylabel("learning rate", color=LEARNING_RATE_COLOR)
        rate_axis.tick_params(axis="y", colors=LEARNING_RATE_COLOR)
        rate_axis.spines["right"].set_color(LEARNING_RATE_COLOR)
        rate_axis.set_ylim(bottom=0, top=max(values) * 1.08 or None)
        rate_axis.ticklabel_format(axis="y", style="sci",
                                   scilimits=(-2, 3))
    if handles:
        # Below the figure, in one row: inside the axes it would hide part
        # of a curve (a constant learning rate runs along the top).
        figure.legend(handles=handles, loc="outside lower center",
                      ncol=len(handles), frameon=False)
    loss_axis.set_title(name, loc="left", fontweight="bold")
    loss_axis.set_title(_latest(rows), loc="right", fontsize="small")
    if metric_axis is not None:
        for index, column in enumerate(metrics):
            steps, values = _series(rows, column)
            # Colours after the three of the top panel, so that no metric
            # looks like a loss or the learning rate.
            _line(metric_axis, steps, values, label=_label(column),
                  color=METRIC_COLORS[index % len(METRIC_COLORS)])
        metric_axis.set_ylabel("metric")
        metric_axis.grid(True, alpha=0.3)
        metric_axis.legend(loc="best", fontsize="small", framealpha=0.9)
        metric_axis.set_xlabel("step")
    else:
        loss_axis.set_xlabel("step")
    return figure


def _latest(rows):
    """`step 400: validation loss 2.310` for the last row with figures."""
    row = rows[-1]
    parts = [f"step {row.get('step')}"]
    for column, label in (("val_loss", "validation loss"),
                          ("train_loss", "train loss")):
        value = _number(row.get(column))
        if math.isfinite(value):
            parts.append(f"{label} {value:.3f}")
    return ", ".join(parts)


def _draw_comparison(runs):
    """The `Figure` of several runs' losses; `runs` is `(name, rows)`s."""
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    figure = Figure(figsize=(10, 5.5), layout="constrained")
    axis = figure.subplots()
    run_handles = []
    for index, (name, rows) in enumerate(runs):
        color = f"C{index % 10}"
        steps, values = _series(rows, "val_loss")
        if steps:
            _line(axis, steps, values, color=color, linewidth=2.0)
        # No markers on the train loss: they would hide its dashes.
        steps, values = _series(rows, "train_loss")
        if steps:
            axis.plot(steps, values, color=color, linestyle="--",
                      linewidth=1.2)
        run_handles.append(Line2D([], [], color=color, linewidth=2.5,
                                  label=name))
    axis.set_xlabel("step")
    axis.set_ylabel("loss")
    axis.set_xlim(left=0)
    axis.grid(True, alpha=0.3)
    axis.set_title(f"train and validation loss of {len(runs)} run"
                   f"{'s' if len(runs) != 1 else ''}")
    # One legend beside the chart, where no curve runs: two entries for
    # the line styles, then one per run for its colour, so that N runs
    # need N + 2 entries rather than 2N.
    styles = [
        Line2D([], [], color="0.35", linestyle="-", linewidth=2.0,
               label="validation loss"),
        Line2D([], [], color="0.35", linestyle="--", linewidth=1.2,
               label="train loss"),
        Line2D([], [], linestyle="none", label=" "),
    ]
    figure.legend(handles=styles + run_handles, loc="outside right upper",
                  frameon=False)
    return figure


def _save(figure, path):
    """Renders `figure` to PNG bytes first, so that a failure while
    drawing leaves the file at `path` as it was, then writes atomically.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(figure)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    with files.atomic_write(path, "wb") as f:
        f.write(buffer.getvalue())
