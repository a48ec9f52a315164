"""The benchmark's PyTorch reference: nanoGPT at the config's size.

PyTorch is optional; without it these tests skip, except the one that
checks the error a user without it gets.
"""

import json
import math
import sys

import numpy as np
import pytest

from keras_tfm.benchmarks.benchmark import flops_per_token
from keras_tfm.cli import main
from keras_tfm.training.config import make_config

TINY = dict(num_layers=2, hidden_dim=32, num_heads=2, intermediate_dim=128,
            sequence_length=16, batch_size=4, learning_rate=3e-3)
VOCABULARY = 40


def trainer():
    pytest.importorskip("torch")
    from keras_tfm.benchmarks.pytorch_reference import NanoGPTTrainer

    return NanoGPTTrainer(make_config("nano", **TINY), VOCABULARY)


def test_parameters_are_those_the_flops_count():
    config = make_config("nano", **TINY)
    reference = trainer()
    d, n = config.hidden_dim, config.num_layers
    matmul = (
        flops_per_token(config, VOCABULARY)
        - 12 * n * d * config.sequence_length
    ) / 6
    positions = config.sequence_length * d
    layer_norm_scales = (2 * n + 1) * d  # nanoGPT's norms have no bias
    assert reference.count_params() == matmul + positions + layer_norm_scales


def test_a_future_token_never_changes_an_earlier_output():
    torch = pytest.importorskip("torch")
    reference = trainer()
    x = torch.randint(0, VOCABULARY, (2, TINY["sequence_length"]))
    changed = x.clone()
    changed[:, 10:] = (changed[:, 10:] + 1) % VOCABULARY
    with torch.no_grad():
        before, after = reference.model(x), reference.model(changed)
    torch.testing.assert_close(before[:, :10], after[:, :10])
    assert not torch.allclose(before[:, 10:], after[:, 10:])


def test_train_steps_learn_real_text(shakespeare_text):
    reference = trainer()
    ids = np.frombuffer(shakespeare_text[:20000].encode(), np.uint8)
    ids = ids % VOCABULARY
    rng = np.random.default_rng(0)
    length, batch = TINY["sequence_length"], TINY["batch_size"]
    losses = []
    for _ in range(60):
        starts = rng.integers(0, len(ids) - length - 1, batch)
        x = np.stack([ids[s:s + length] for s in starts]).astype(np.int32)
        y = np.stack([ids[s + 1:s + length + 1] for s in starts])
        losses.append(reference.train_on_batch(x, y))
    # Starts at chance (GPT-2's small initialisation), ends well below it.
    assert abs(losses[0] - math.log(VOCABULARY)) < 0.1
    assert np.mean(losses[-10:]) < math.log(VOCABULARY) - 0.5


@pytest.mark.slow
def test_benchmark_smoke_with_the_pytorch_reference(capsys):
    pytest.importorskip("torch")
    code = main(["benchmark", "--smoke", "--json", "--pytorch-reference"])
    assert code == 0
    results = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    t = results["training"]["pytorch_nanogpt"]
    assert t["step_ms_p10"] <= t["step_ms_median"] <= t["step_ms_p90"]
    assert 0 < t["mfu"] < 1 and t["parameters"] > 0
    speedup = results["speedup_vs_pytorch_nanogpt"]
    assert 0 < speedup["p25"] <= speedup["median"] <= speedup["p75"]
    assert results["settings"]["pytorch_threads"] >= 1
    assert results["settings"]["pytorch_version"]
    rates = results["machine"]["matmul_gflops_at_model_shapes"]
    assert set(rates["gflops_per_second"]) == {"xla", "tensorflow", "pytorch"}
    assert min(rates["gflops_per_second"].values()) > 0


def test_without_pytorch_the_flag_is_one_line_error(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` fails
    code = main(["benchmark", "--smoke", "--pytorch-reference"])
    assert code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1
    assert "needs PyTorch" in lines[0] and "pip install torch" in lines[0]
