"""Every mistake a user can make: one line naming the problem, a non-zero
exit, no traceback, and nothing created or changed.

Each case runs the command in a directory prepared for it (a finished
tiny run is copied in as `run/`); the directory tree (names, sizes,
modification times) must be the same after the command as before. The
cases run in this process through `keras_tfm.cli.main`, which is all the
console script calls; a few also run as the installed `keras-tfm` command
in a subprocess, to show the script adds nothing to the one line (no
traceback, the same exit status).
"""

import os
import shutil
import signal
import subprocess
import time

import pytest

pytestmark = pytest.mark.slow

SHAKESPEARE = os.path.join(os.path.dirname(__file__), os.pardir, "fixtures",
                           "shakespeare.txt")


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, shakespeare_path):
    run_dir = tmp_path_factory.mktemp("finished") / "run"
    result = subprocess.run(
        ["keras-tfm", "pretrain", "--config", "tiny", "--data",
         os.path.abspath(SHAKESPEARE), "--output-dir", str(run_dir),
         "--max-steps", "4", "--eval-every", "2", "--sample-tokens", "0",
         "--verbose", "0"],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return run_dir


def snapshot(root):
    state = {}
    for directory, _, names in os.walk(root):
        for name in names:
            path = os.path.join(directory, name)
            info = os.stat(path)
            state[os.path.relpath(path, root)] = (info.st_size,
                                                  info.st_mtime_ns)
        state[os.path.relpath(directory, root) + "/"] = None
    return state


def truncate(path, keep=200):
    with open(path, "r+b") as f:
        f.truncate(keep)


def cut_in_half(path):
    with open(path, encoding="utf-8") as f:
        text = f.read()
    with open(path, "w", encoding="utf-8") as f:
        f.write(text[: len(text) // 2])


def unfinished(run):
    os.remove(run / "metrics.json")
    os.remove(run / "model.keras")


def lambda_model(run):
    # A model.keras with a Lambda layer: Keras' safe mode refuses it.
    import keras

    inputs = keras.Input((None,), dtype="int32")
    outputs = keras.layers.Lambda(lambda x: x * 2)(inputs)
    keras.Model(inputs, outputs).save(str(run / "model.keras"))


RUN = "run"
# Every case fails before a run touches process-wide state (determinism,
# seeds, signal handlers), which is what lets them share one process.
# name: (setup(tmp) -> None, arguments, fragment of the one error line)
CASES = {
    "output-dir is a file": (
        lambda tmp: (tmp / "taken").write_text("x"),
        ["pretrain", "--config", "tiny", "--output-dir", "taken"],
        "is a file"),
    "output-dir under a file": (
        lambda tmp: (tmp / "taken").write_text("x"),
        ["pretrain", "--config", "tiny", "--output-dir", "taken/run"],
        "which is a file"),
    "output-dir under /proc": (
        None,
        ["pretrain", "--config", "tiny", "--output-dir",
         "/proc/keras-tfm-test/run"],
        "cannot write --output-dir"),
    "truncated model.keras (evaluate)": (
        lambda tmp: truncate(tmp / RUN / "model.keras"),
        ["evaluate", RUN], "is damaged"),
    "truncated model.keras (generate)": (
        lambda tmp: truncate(tmp / RUN / "model.keras"),
        ["generate", RUN, "--max-new-tokens", "2"], "is damaged"),
    "truncated model.keras (export)": (
        lambda tmp: truncate(tmp / RUN / "model.keras"),
        ["export", RUN], "is damaged"),
    "config.json cut in half (evaluate)": (
        lambda tmp: cut_in_half(tmp / RUN / "config.json"),
        ["evaluate", RUN], "not valid JSON"),
    "config.json cut in half (generate)": (
        lambda tmp: cut_in_half(tmp / RUN / "config.json"),
        ["generate", RUN], "not valid JSON"),
    "config.json cut in half (export)": (
        lambda tmp: cut_in_half(tmp / RUN / "config.json"),
        ["export", RUN], "not valid JSON"),
    "config.json cut in half (resume)": (
        lambda tmp: (unfinished(tmp / RUN),
                     cut_in_half(tmp / RUN / "config.json")),
        ["pretrain", "--config", "tiny", "--output-dir", RUN],
        "not valid JSON"),
    "tokenizer.json cut in half (evaluate)": (
        lambda tmp: cut_in_half(tmp / RUN / "tokenizer" / "tokenizer.json"),
        ["evaluate", RUN], "not valid JSON"),
    "tokenizer.json cut in half (resume)": (
        lambda tmp: (unfinished(tmp / RUN),
                     cut_in_half(tmp / RUN / "tokenizer" / "tokenizer.json")),
        ["pretrain", "--config", "tiny", "--data", os.path.abspath(SHAKESPEARE),
         "--output-dir", RUN, "--max-steps", "4", "--eval-every", "2",
         "--sample-tokens", "0"],
        "not valid JSON"),
    "evaluate --batch-size 0": (
        None, ["evaluate", RUN, "--batch-size", "0"], "--batch-size"),
    "export --output names a file": (
        lambda tmp: (tmp / "taken").write_text("x"),
        ["export", RUN, "--output", "taken"], "is a file"),
    "--activation bogus": (
        None, ["pretrain", "--config", "tiny", "--output-dir", "new",
               "--activation", "bogus"], "unknown activation 'bogus'"),
    "model.keras refused by safe mode": (
        lambda tmp: lambda_model(tmp / RUN),
        ["evaluate", RUN], "safe mode"),
    "--clipnorm -1": (
        None, ["pretrain", "--config", "tiny", "--output-dir", "new",
               "--clipnorm", "-1"], "clipnorm must be >= 0"),
    "export --format ,": (
        None, ["export", RUN, "--format", ","], "--format names no format"),
    "export --version -1": (
        None, ["export", RUN, "--version", "-1"], "--version must be"),
    "evaluate an unfinished run": (
        lambda tmp: unfinished(tmp / RUN),
        ["evaluate", RUN], "to resume it"),
    "missing --data beside a finished run": (
        lambda tmp: shutil.copytree(tmp / RUN, tmp / "runs" / "small-causal"),
        ["pretrain", "--data", "missing.txt"], "no such file: 'missing.txt'"),
    "export --overwrite into the working directory": (
        lambda tmp: (tmp / "notes.txt").write_text("mine"),
        ["export", RUN, "--output", ".", "--overwrite"],
        "is the run directory or holds it"),
    "export --overwrite into a directory that is no export": (
        lambda tmp: (tmp / "mine").mkdir() or (tmp / "mine" / "a.txt")
        .write_text("mine"),
        ["export", RUN, "--output", "mine", "--overwrite"],
        "holds no earlier export"),
    "export --output into the run directory": (
        None, ["export", RUN, "--output", RUN, "--overwrite"],
        "is the run directory or holds it"),
    "warmup longer than the run": (
        None, ["pretrain", "--config", "tiny", "--output-dir", "new",
               "--max-steps", "20", "--warmup-steps", "30"],
        "warmup_steps (30) must be below max_steps (20)"),
    "generate --top-p 1.5": (
        None, ["generate", RUN, "--top-p", "1.5"], "--top-p"),
    "generate --temperature -1": (
        None, ["generate", RUN, "--temperature", "-1"], "--temperature"),
    "evaluate --data missing": (
        None, ["evaluate", RUN, "--data", "missing.txt"], "no such file"),
    "unknown preset": (
        None, ["pretrain", "--config", "huge"], "no config file or preset"),
    "predict with a pre-training run": (
        None, ["predict", RUN, "--text", "good"], "pre-training run"),
    "finetune --init that is not a run": (
        lambda tmp: (tmp / "data.tsv").write_text("sentence\tlabel\na\t0\n"),
        ["finetune", "--task", "classification", "--data", "data.tsv",
         "--init", "nowhere"], "--init 'nowhere' is not a directory"),
    "plot a run without history": (
        lambda tmp: (tmp / "empty").mkdir(),
        ["plot", "empty"], "no training history"),
    "unknown flag": (
        None, ["pretrain", "--hidden-dimm", "3"],
        "unrecognized arguments: --hidden-dimm"),
}


# One of each kind: a usage error (argparse), an error found while
# loading a run, one found while validating a new run's config.
IN_A_SUBPROCESS = ("unknown flag", "truncated model.keras (evaluate)",
                   "--activation bogus")


def run_command(args, cwd, capfd, monkeypatch):
    """`keras-tfm ARGS` in this process: (exit status, stderr), stderr
    captured at the file descriptor, so TensorFlow's own logs count."""
    import tensorflow as tf

    from keras_tfm.cli import main

    # TensorFlow's one-time device start-up lines (which the console
    # script silences as it imports TensorFlow) come before the capture.
    tf.config.list_logical_devices("CPU")
    monkeypatch.chdir(cwd)
    capfd.readouterr()
    try:
        code = main(list(args))
    except SystemExit as e:  # argparse's usage errors
        code = e.code
    return code, capfd.readouterr().err


def run_script(args, cwd):
    """`keras-tfm ARGS` as the installed console script."""
    result = subprocess.run(["keras-tfm", *args], cwd=cwd,
                            capture_output=True, text=True, timeout=300)
    return result.returncode, result.stderr


@pytest.mark.parametrize(
    "case, how",
    [(case, "main") for case in CASES]
    + [(case, "script") for case in IN_A_SUBPROCESS],
)
def test_bad_input(case, how, tmp_path, finished_run, capfd, monkeypatch):
    setup, args, fragment = CASES[case]
    shutil.copytree(finished_run, tmp_path / RUN)
    if setup:
        setup(tmp_path)
    before = snapshot(tmp_path)
    if how == "script":
        code, stderr = run_script(args, tmp_path)
    else:
        code, stderr = run_command(args, tmp_path, capfd, monkeypatch)
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert code == 2, (code, stderr[-3000:])
    assert "Traceback" not in stderr
    assert len(lines) == 1, stderr[-3000:]
    assert "error:" in lines[0] and fragment in lines[0], lines[0]
    assert snapshot(tmp_path) == before


def test_a_second_writer_is_refused_and_names_the_first(
    tmp_path, shakespeare_path
):
    run_dir = tmp_path / "run"
    args = ["keras-tfm", "pretrain", "--config", "tiny", "--data",
            shakespeare_path, "--output-dir", str(run_dir), "--max-steps",
            "100000", "--eval-every", "50", "--verbose", "0"]
    first = subprocess.Popen(args, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 120
        while not (run_dir / "config.json").exists():
            assert first.poll() is None, first.stderr.read()
            assert time.time() < deadline
            time.sleep(0.2)
        second = subprocess.run(args, capture_output=True, text=True,
                                timeout=300)
        assert second.returncode == 2
        lines = [line for line in second.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and "in use by another keras-tfm process" in (
            lines[0])
        assert f"pid {first.pid}" in lines[0]
        assert first.poll() is None  # the first writer goes on
    finally:
        first.send_signal(signal.SIGTERM)
        first.communicate(timeout=120)
    assert first.returncode == 143
    # The first run's lock is gone: a rerun resumes it.
    assert not (run_dir / ".keras-tfm.lock").exists()


def test_a_stale_lock_is_taken_over(tmp_path, shakespeare_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    dead = subprocess.Popen(["true"])
    dead.wait()
    import json
    import socket

    (run_dir / ".keras-tfm.lock").write_text(json.dumps(
        {"pid": dead.pid, "host": socket.gethostname(), "started": "then"}))
    old = time.time() - 3600
    os.utime(run_dir / ".keras-tfm.lock", (old, old))
    result = subprocess.run(
        ["keras-tfm", "pretrain", "--config", "tiny", "--data",
         shakespeare_path, "--output-dir", str(run_dir), "--max-steps", "2",
         "--eval-every", "2", "--sample-tokens", "0", "--verbose", "0"],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert (run_dir / "metrics.json").exists()
    assert not (run_dir / ".keras-tfm.lock").exists()


def test_two_exports_to_one_directory(tmp_path, finished_run):
    # The lock beside the export directory: held, a second export is
    # refused without touching the directory.
    from keras_tfm.directories import DirectoryLock

    output = tmp_path / "export"
    with DirectoryLock(str(tmp_path / ".export.keras-tfm.lock")):
        result = subprocess.run(
            ["keras-tfm", "export", str(finished_run), "--output",
             str(output), "--format", "tflite", "--quantize", "none"],
            capture_output=True, text=True, timeout=300,
        )
    assert result.returncode == 2
    assert "in use by another keras-tfm process" in result.stderr
    assert not output.exists()
