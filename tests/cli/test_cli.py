import glob
import json
import os
import signal
import subprocess
import time

import keras
import pytest

from keras_tfm.cli import main


def run_cli(*args, timeout=300):
    """The installed console script, as a user runs it."""
    return subprocess.run(
        ["keras-tfm", *args], capture_output=True, text=True, timeout=timeout
    )


def assert_one_line_error(code, stderr, *fragments):
    assert code == 2
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr and "error:" in lines[0]
    for fragment in fragments:
        assert fragment in lines[0]


@pytest.fixture
def pretrain_args(tmp_path):
    return ["pretrain", "--config", "tiny", "--output-dir",
            str(tmp_path / "run"), "--verbose", "0"]


def test_help_for_every_subcommand(capsys):
    for command in ("pretrain", "evaluate", "generate"):
        with pytest.raises(SystemExit) as exit_info:
            main([command, "--help"])
        assert exit_info.value.code == 0
        assert command in capsys.readouterr().out


def bad_inputs(tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    latin = tmp_path / "latin1.txt"
    latin.write_bytes("na\xefve caf\xe9".encode("latin-1"))
    short = tmp_path / "short.txt"
    short.write_text("Too short for a sequence.")
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"num_layers": 1, "hiden_dim": 32}))
    return {
        "missing": (["--data", str(tmp_path / "nope.txt")], "no such file"),
        "empty": (["--data", str(empty)], "is empty"),
        "not utf-8": (["--data", str(latin)], "not UTF-8"),
        "short": (["--data", str(short)], "shorter than one training"),
        "heads": (["--hidden-dim", "30", "--num-heads", "4"],
                  "divisible by num_heads"),
        "unknown key": (["--config", str(config)],
                        "unknown config key 'hiden_dim'"),
    }


@pytest.mark.parametrize(
    "case", ["missing", "empty", "not utf-8", "short", "heads", "unknown key"]
)
def test_bad_pretrain_input(case, tmp_path, capsys, pretrain_args):
    extra, fragment = bad_inputs(tmp_path)[case]
    code = main(pretrain_args + extra)
    assert_one_line_error(code, capsys.readouterr().err, fragment)
    # Nothing a later run could take for a result.
    run_dir = tmp_path / "run"
    assert not (run_dir / "model.keras").exists()
    assert not (run_dir / "metrics.json").exists()


def test_run_directory_without_a_model(tmp_path, capsys):
    (tmp_path / "config.json").write_text("{}")
    for command in (["evaluate", str(tmp_path)],
                    ["generate", str(tmp_path), "--prompt", "x"]):
        code = main(command)
        assert_one_line_error(code, capsys.readouterr().err, "no model in")


@pytest.mark.slow
def test_pretrain_evaluate_generate_end_to_end(tmp_path, shakespeare_path):
    run_dir = str(tmp_path / "run")
    result = run_cli("pretrain", "--config", "tiny", "--data", shakespeare_path,
                     "--output-dir", run_dir, "--max-steps", "20", "--verbose",
                     "2", "--seed", "3")
    assert result.returncode == 0, result.stderr
    assert "validation: loss" in result.stdout
    assert "bits/byte" in result.stdout and "sample:" in result.stdout
    assert "checkpoint saved at step 20" in result.stdout
    with open(os.path.join(run_dir, "metrics.json")) as f:
        metrics = json.load(f)

    result = run_cli("evaluate", run_dir, "--data", shakespeare_path, "--json")
    assert result.returncode == 0, result.stderr
    evaluation = json.loads(result.stdout.strip().splitlines()[-1])
    for key in ("loss", "perplexity", "bits_per_byte", "tokens", "bytes"):
        assert key in evaluation
    assert evaluation["tokens"] == os.path.getsize(shakespeare_path)
    # The training corpus includes the validation split: similar figures.
    assert abs(evaluation["loss"] - metrics["val_loss"]) < 0.2

    greedy = ["generate", run_dir, "--prompt", "ROMEO:", "--max-new-tokens",
              "24", "--temperature", "0"]
    first, second = run_cli(*greedy), run_cli(*greedy)
    assert first.returncode == 0, first.stderr
    assert first.stdout == second.stdout
    assert first.stdout.startswith("ROMEO:")
    sampled = run_cli("generate", run_dir, "--prompt", "A", "--top-k", "5",
                      "--top-p", "0.9", "--temperature", "0.8", "--seed", "1",
                      "--max-new-tokens", "8")
    assert sampled.returncode == 0, sampled.stderr

    # The console script reports a user's mistake without a traceback.
    bad = run_cli("evaluate", str(tmp_path), "--json")
    assert_one_line_error(bad.returncode, bad.stderr, "is not a keras-tfm run")


@pytest.mark.slow
def test_killed_run_leaves_no_result_and_intact_checkpoints(
    tmp_path, shakespeare_path
):
    run_dir = tmp_path / "run"
    process = subprocess.Popen(
        ["keras-tfm", "pretrain", "--config", "tiny", "--data",
         shakespeare_path, "--output-dir", str(run_dir), "--max-steps",
         "100000", "--eval-every", "5", "--verbose", "0"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.time() + 120
        while len(glob.glob(str(run_dir / "checkpoints" / "step-*"))) < 2:
            assert process.poll() is None, "training ended early"
            assert time.time() < deadline, "no checkpoint within 2 minutes"
            time.sleep(0.2)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    assert not (run_dir / "model.keras").exists()
    assert not (run_dir / "metrics.json").exists()
    for path in glob.glob(str(run_dir / "checkpoints" / "step-*.keras")):
        model = keras.models.load_model(path)
        assert model.optimizer.iterations.numpy() > 0


@pytest.mark.slow
def test_autocluster_restarts_with_the_xla_flags(tmp_path, shakespeare_path):
    # TensorFlow reads TF_XLA_FLAGS only as it starts, so the command
    # restarts itself with them; the run then reports auto-clustering on.
    run_dir = str(tmp_path / "run")
    env = {k: v for k, v in os.environ.items() if k != "TF_XLA_FLAGS"}
    result = subprocess.run(
        ["keras-tfm", "pretrain", "--config", "tiny", "--data",
         shakespeare_path, "--output-dir", run_dir, "--max-steps", "3",
         "--eval-every", "3", "--eval-batches", "1", "--sample-tokens", "0",
         "--verbose", "0", "--jit-compile", "autocluster", "--precision",
         "mixed_bfloat16"],
        capture_output=True, text=True, timeout=300, env=env,
    )
    assert result.returncode == 0, result.stderr
    assert "without auto-clustering" not in result.stderr
    with open(os.path.join(run_dir, "metrics.json")) as f:
        metrics = json.load(f)
    assert metrics["autocluster"] is True
    assert metrics["precision"] == "mixed_bfloat16"
