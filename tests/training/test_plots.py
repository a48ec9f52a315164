"""Pictures of runs: `curves.png`, comparisons and `keras-tfm plot`."""

import argparse
import csv
import math

import matplotlib.image
import numpy as np
import pytest

from keras_tfm.cli import plot as plot_command
from keras_tfm.errors import UserError
from keras_tfm.training import plots
from keras_tfm.training.history import History

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PRETRAIN_COLUMNS = ("step", "train_loss", "val_loss", "val_perplexity",
                    "val_bits_per_byte", "learning_rate", "tokens_seen",
                    "elapsed_seconds")


def pretrain_rows(steps=8, every=25):
    """A falling loss under a warmup-then-cosine learning rate; the step-0
    row has a NaN train loss, as the training loop writes it."""
    rows = []
    for index in range(steps + 1):
        step = index * every
        loss = 2.0 + 4.0 * math.exp(-index / 3)
        rate = 1e-3 * min(1.0, index / 2) * (
            0.5 * (1 + math.cos(math.pi * index / steps))
        )
        rows.append({
            "step": step,
            "train_loss": math.nan if step == 0 else loss - 0.1,
            "val_loss": loss,
            "val_perplexity": math.exp(loss),
            "val_bits_per_byte": loss / 3,
            "learning_rate": rate,
            "tokens_seen": step * 512,
            "elapsed_seconds": step / 10,
        })
    return rows


def write_history(run_dir, rows, columns=PRETRAIN_COLUMNS):
    run_dir.mkdir(parents=True, exist_ok=True)
    with open(run_dir / "history.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    return run_dir


def read_png(path):
    """The image at `path`, after checking that it is a real PNG."""
    with open(path, "rb") as f:
        assert f.read(8) == PNG_SIGNATURE
    image = matplotlib.image.imread(path)
    height, width = image.shape[:2]
    assert width >= 400 and height >= 300
    # Not blank: a plot has lines and text on a white background.
    assert np.var(image[..., :3]) > 0
    return image


def test_write_curves_writes_a_png_in_the_run_directory(tmp_path):
    run_dir = write_history(tmp_path / "tiny", pretrain_rows())
    path = plots.write_curves(str(run_dir))
    assert path == str(run_dir / "curves.png")
    read_png(path)
    # Written atomically: no temporary file is left beside it.
    assert sorted(p.name for p in run_dir.iterdir()) == [
        "curves.png", "history.csv"
    ]


def test_fine_tuning_history_gets_a_metrics_panel(tmp_path):
    """No train loss and no learning-rate column still draws; val_accuracy
    adds a second panel, so the picture is taller."""
    rows = [{"step": step, "val_loss": 0.7 - step / 1000,
             "val_accuracy": 0.5 + step / 1000} for step in (0, 100, 200)]
    run_dir = write_history(tmp_path / "fine-tune", rows,
                            ("step", "val_loss", "val_accuracy"))
    with_metrics = read_png(plots.write_curves(run_dir))
    plain = read_png(plots.write_curves(
        write_history(tmp_path / "plain", pretrain_rows())
    ))
    assert with_metrics.shape[0] > plain.shape[0]


def test_a_single_row_and_blank_values_still_draw(tmp_path):
    run_dir = write_history(tmp_path / "one", [
        {"step": 0, "train_loss": "", "val_loss": 5.0, "learning_rate": 0.0}
    ], ("step", "train_loss", "val_loss", "learning_rate"))
    read_png(plots.write_curves(run_dir, tmp_path / "out" / "one.png"))


def test_plot_runs_writes_one_png(tmp_path):
    first = write_history(tmp_path / "a", pretrain_rows())
    second = write_history(tmp_path / "b", pretrain_rows(steps=4))
    output = tmp_path / "comparison.png"
    assert plots.plot_runs([first, second], str(output)) == str(output)
    read_png(output)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "a", "b", "comparison.png"
    ]


def one_line_error(excinfo, *fragments):
    message = str(excinfo.value)
    assert len(message.splitlines()) == 1, message
    for fragment in fragments:
        assert fragment in message
    return message


@pytest.mark.parametrize("history", ["missing", "header only"])
def test_run_without_history_is_a_one_line_user_error(tmp_path, history):
    run_dir = tmp_path / "empty-run"
    if history == "missing":
        run_dir.mkdir()
    else:
        write_history(run_dir, [])
    with pytest.raises(UserError) as excinfo:
        plots.write_curves(run_dir)
    one_line_error(excinfo, f"'{run_dir}' has no training history",
                   "history.csv is missing or empty")
    good = write_history(tmp_path / "good", pretrain_rows())
    with pytest.raises(UserError) as excinfo:
        plots.plot_runs([good, run_dir], tmp_path / "comparison.png")
    one_line_error(excinfo, f"'{run_dir}' has no training history")
    assert not (tmp_path / "comparison.png").exists()


def test_missing_run_directory_and_non_png_output(tmp_path):
    with pytest.raises(UserError) as excinfo:
        plots.write_curves(tmp_path / "nope")
    one_line_error(excinfo, "no run directory")
    run_dir = write_history(tmp_path / "run", pretrain_rows())
    for call in (lambda: plots.write_curves(run_dir, tmp_path / "c.pdf"),
                 lambda: plots.plot_runs([run_dir], tmp_path / "c.jpg")):
        with pytest.raises(UserError) as excinfo:
            call()
        one_line_error(excinfo, "is not a .png file")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_history_hook_redraws_after_each_row(tmp_path):
    history = History(str(tmp_path), PRETRAIN_COLUMNS)
    history.on_record.append(plots.history_hook)
    try:
        rows = pretrain_rows(steps=2)
        history.record(rows[0], log=lambda *a, **k: None)
        first = (tmp_path / "curves.png").read_bytes()
        history.record(rows[1], log=lambda *a, **k: None)
        assert (tmp_path / "curves.png").read_bytes() != first
        read_png(tmp_path / "curves.png")
    finally:
        history.close()


def test_history_hook_without_run_directory_draws_nothing(tmp_path,
                                                          monkeypatch):
    monkeypatch.chdir(tmp_path)
    history = History(None, PRETRAIN_COLUMNS)
    history.rows = [{"step": "1", "val_loss": "2.0"}]
    plots.history_hook(history)
    assert list(tmp_path.iterdir()) == []


def test_hook_failure_warns_once_and_never_raises(tmp_path, monkeypatch,
                                                  capsys):
    def broken(*args, **kwargs):
        raise RuntimeError("no fonts\nsecond line")

    monkeypatch.setattr(plots, "_draw_curves", broken)
    history = History(str(tmp_path), PRETRAIN_COLUMNS)
    try:
        history.rows = [{"step": "1", "val_loss": "2.0"}]
        plots.history_hook(history)
        plots.history_hook(history)  # the same failure is said once
    finally:
        history.close()
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("warning: could not draw")
    assert "RuntimeError: no fonts" in lines[0]
    assert not (tmp_path / "curves.png").exists()


def parse(*argv):
    parser = argparse.ArgumentParser(prog="keras-tfm")
    plot_command.add_parser(parser.add_subparsers(dest="command"))
    return parser.parse_args(["plot", *argv])


def test_cli_one_run_writes_its_curves(tmp_path, capsys):
    run_dir = write_history(tmp_path / "run", pretrain_rows())
    plot_command.run(parse(str(run_dir)))
    read_png(run_dir / "curves.png")
    assert capsys.readouterr().out == f"wrote {run_dir / 'curves.png'}\n"


def test_cli_several_runs_write_a_comparison(tmp_path, monkeypatch):
    first = write_history(tmp_path / "a", pretrain_rows())
    second = write_history(tmp_path / "b", pretrain_rows())
    monkeypatch.chdir(tmp_path)
    plot_command.run(parse("a", "b"))
    read_png(tmp_path / "comparison.png")
    plot_command.run(parse(str(first), str(second), "--output", "x.png"))
    read_png(tmp_path / "x.png")


def test_cli_errors_and_help(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError) as excinfo:
        plot_command.run(parse(str(tmp_path / "empty")))
    one_line_error(excinfo, "has no training history")
    with pytest.raises(SystemExit):
        parse()  # at least one RUN
    with pytest.raises(SystemExit):
        parse("--help")
    help_text = " ".join(capsys.readouterr().out.split())
    assert "default: RUN/curves.png for one run" in help_text
