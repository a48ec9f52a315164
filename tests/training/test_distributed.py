"""tf.distribute on CPU: MirroredStrategy over logical CPUs, and two
MultiWorkerMirroredStrategy workers on 127.0.0.1."""

import csv
import json
import os
import socket
import subprocess

import numpy as np
import pytest

# The same small run for every strategy: 6 steps, evaluations at 3 and 6.
RUN = ["pretrain", "--config", "tiny", "--max-steps", "6", "--eval-every", "3",
       "--batch-size", "8", "--jit-compile", "false", "--sample-tokens", "0",
       "--verbose", "2", "--seed", "5"]


def pretrain(output_dir, data, *extra, env=None):
    return subprocess.Popen(
        ["keras-tfm", *RUN, "--data", data, "--output-dir", str(output_dir),
         *extra],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, **(env or {})},
    )


def finish(process, timeout=240):
    try:
        output, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        output, _ = process.communicate()
        pytest.fail(f"timed out:\n{output[-3000:]}")
    assert process.returncode == 0, output[-3000:]
    return output


def history(run_dir):
    with open(os.path.join(run_dir, "history.csv")) as f:
        rows = list(csv.DictReader(f))
    return {k: np.array([float(r[k]) for r in rows])
            for k in ("step", "train_loss", "val_loss")}


@pytest.fixture(scope="module")
def reference(tmp_path_factory, shakespeare_path):
    run_dir = tmp_path_factory.mktemp("single") / "run"
    finish(pretrain(run_dir, shakespeare_path, "--strategy", "default"))
    return history(run_dir)


def assert_same_curve(got, expected):
    np.testing.assert_array_equal(got["step"], expected["step"])
    # Measured here: identical to the last digit (0.0 difference). The
    # tolerance leaves room for float32 rounding on other machines.
    np.testing.assert_allclose(got["train_loss"], expected["train_loss"],
                               rtol=1e-6)
    np.testing.assert_allclose(got["val_loss"], expected["val_loss"],
                               rtol=1e-6)


@pytest.mark.slow
def test_mirrored_over_two_cpus_matches_one_device(
    tmp_path, shakespeare_path, reference
):
    run_dir = tmp_path / "run"
    output = finish(pretrain(run_dir, shakespeare_path, "--strategy",
                             "mirrored", "--cpu-devices", "2"))
    with open(run_dir / "metrics.json") as f:
        metrics = json.load(f)
    assert metrics["replicas"] == 2, output[-2000:]
    assert metrics["strategy"] == "mirrored"
    assert_same_curve(history(run_dir), reference)


def free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


@pytest.mark.slow
def test_two_workers_match_one_worker(tmp_path, shakespeare_path, reference):
    ports = free_ports(2)
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    processes = []
    try:
        for index in range(2):
            tf_config = {"cluster": cluster,
                         "task": {"type": "worker", "index": index}}
            processes.append(pretrain(
                tmp_path / f"run-{index}", shakespeare_path,
                "--strategy", "multi_worker",
                env={"TF_CONFIG": json.dumps(tf_config)},
            ))
        outputs = [finish(p) for p in processes]
    finally:
        for p in processes:  # never leave a worker behind
            if p.poll() is None:
                p.kill()
                p.wait()
    chief_dir, worker_dir = tmp_path / "run-0", tmp_path / "run-1"
    with open(chief_dir / "metrics.json") as f:
        metrics = json.load(f)
    assert metrics["replicas"] == 2, outputs[0][-2000:]
    assert metrics["strategy"] == "multi_worker"
    assert_same_curve(history(chief_dir), reference)
    # Only the chief writes a run directory.
    assert not worker_dir.exists()
    assert "checkpoint saved" not in outputs[1]


@pytest.mark.slow
def test_mirrored_with_accumulation_matches_one_device(
    tmp_path, shakespeare_path, reference
):
    # Two accumulated batches of 4 on two replicas: the accumulators live
    # per replica (no cross-replica merge inside a condition), and the
    # update is one device's on the batch of 8.
    run_dir = tmp_path / "run"
    finish(pretrain(run_dir, shakespeare_path, "--strategy", "mirrored",
                    "--cpu-devices", "2", "--batch-size", "4",
                    "--grad-accum-steps", "2"))
    assert_same_curve(history(run_dir), reference)


def start_workers(run_dir, data, *extra):
    ports = free_ports(2)
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    return [
        pretrain(run_dir, data, "--strategy", "multi_worker", *extra,
                 env={"TF_CONFIG": json.dumps(
                     {"cluster": cluster,
                      "task": {"type": "worker", "index": index}})})
        for index in range(2)
    ]


LONGER = ["--max-steps", "30", "--eval-every", "10", "--checkpoint-every",
          "2"]


@pytest.mark.slow
def test_two_workers_stopped_by_sigterm_resume_to_the_same_result(
    tmp_path, shakespeare_path
):
    import signal
    import time

    whole = tmp_path / "whole"
    finish(pretrain(whole, shakespeare_path, "--strategy", "default",
                    *LONGER))
    # Both workers share the run directory, as on shared storage.
    run_dir = tmp_path / "run"
    processes = start_workers(run_dir, shakespeare_path, *LONGER)
    try:
        deadline = time.time() + 240
        while not (run_dir / "checkpoints" / "step-00000004.json").exists():
            assert all(p.poll() is None for p in processes)
            assert time.time() < deadline, "no checkpoint in time"
            time.sleep(0.1)
        for p in processes:
            p.send_signal(signal.SIGTERM)
        outputs = [p.communicate(timeout=240)[0] for p in processes]
    finally:
        for p in processes:
            if p.poll() is None:
                p.kill()
                p.wait()
    # Both stopped at the same step (they agree on it), exit 143.
    assert [p.returncode for p in processes] == [143, 143], outputs
    steps = [o.split("stopped by SIGTERM at step ")[1].split()[0]
             for o in outputs]
    assert steps[0] == steps[1]
    assert not (run_dir / "metrics.json").exists()
    processes = start_workers(run_dir, shakespeare_path, *LONGER)
    try:
        outputs = [finish(p) for p in processes]
    finally:
        for p in processes:
            if p.poll() is None:
                p.kill()
                p.wait()
    assert f"resumed from step {steps[0]}" in outputs[0]
    assert_same_curve(history(run_dir), history(whole))
