"""Peak memory of a training run, measured in a child process.

A process's peak resident memory only grows, so each measurement is a
fresh `keras-tfm pretrain` in a child process, which reports its own peak
(`VmHWM` of /proc/self/status) as it exits. (`ru_maxrss` from `wait4`
would not do: Linux carries the parent's peak over into a forked child.)
Used for:

- gradient accumulation: `grad_accum_steps` K at a fixed batch against
  K = 1 (activation memory is one batch's, so the peaks should match);
- corpus size: the same run on a small and a large prepared corpus (the
  stream reads shards from disk, so the peaks should match).
"""

import os
import subprocess
import sys
import tempfile


def peak_memory_mb(pretrain_args, timeout=3600):
    """Peak resident memory (MB) of `keras-tfm pretrain *pretrain_args`.

    Raises:
        RuntimeError: the run failed (its stderr's last lines included).
    """
    with tempfile.TemporaryDirectory() as tmp:
        args = ["pretrain", "--output-dir", os.path.join(tmp, "run"),
                "--verbose", "0", "--sample-tokens", "0", *pretrain_args]
        result = subprocess.run(
            [sys.executable, "-c", REPORTING_CHILD, repr(args)],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
            timeout=timeout,
        )
    if result.returncode != 0:
        raise RuntimeError(
            f"pretrain {' '.join(pretrain_args)} failed "
            f"({result.returncode}): {result.stderr[-2000:]}"
        )
    peak = [line for line in result.stderr.splitlines()
            if line.startswith("VmHWM:")][-1]
    return int(peak.split()[1]) / 1024  # kB


# Runs the command, then prints its own peak resident memory at exit.
REPORTING_CHILD = """
import ast, atexit, sys
def report():
    with open("/proc/self/status") as f:
        print(next(l for l in f if l.startswith("VmHWM:")).strip(),
              file=sys.stderr)
atexit.register(report)
from keras_tfm.cli import main
sys.exit(main(ast.literal_eval(sys.argv[1])))
"""


def accumulation_memory(config_name, batch_size, accumulation=4, steps=8,
                        data=None):
    """Peak memory at `grad_accum_steps` 1 and `accumulation`, the same
    batch of `batch_size` sequences per call of the compiled step."""
    common = ["--config", config_name, "--batch-size", str(batch_size),
              "--max-steps", str(steps), "--eval-every", str(steps),
              "--eval-batches", "1"]
    for pattern in data or ():
        common += ["--data", pattern]
    one = peak_memory_mb(common + ["--grad-accum-steps", "1"])
    many = peak_memory_mb(common + ["--grad-accum-steps", str(accumulation)])
    return {
        "batch_size": batch_size,
        "grad_accum_steps": accumulation,
        "peak_mb_without": one,
        "peak_mb_with": many,
        "ratio": many / one,
    }
