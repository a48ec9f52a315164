"""The benchmark's smoke mode: complete, sane output (no timing asserts)."""

import json

import pytest

from keras_tfm.benchmarks.benchmark import flops_per_token
from keras_tfm.benchmarks.benchmark import format_results
from keras_tfm.benchmarks.matmuls import model_matmul_shapes
from keras_tfm.cli import main
from keras_tfm.training.config import make_config


@pytest.mark.slow
def test_benchmark_smoke(tmp_path, capsys):
    plot = tmp_path / "scaling.png"
    code = main(["benchmark", "--smoke", "--json", "--plot", str(plot),
                 "--seq2seq"])
    assert code == 0
    results = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    for name in ("keras_tfm", "keras_hub"):
        t = results["training"][name]
        assert t["step_ms_p10"] <= t["step_ms_median"] <= t["step_ms_p90"]
        assert t["tokens_per_second"] > 0 and 0 < t["mfu"] < 1
        assert t["parameters"] > 0
    peaks = results["machine"]["matmul_peak_gflops_by_backend"]
    assert set(peaks) == {"xla", "tensorflow"} and min(peaks.values()) > 0
    # The model's own matmuls at the rows one forward pass computes (the
    # smoke config: batch 2 split in 2, sequence 16).
    shapes = results["machine"]["matmul_gflops_at_model_shapes"]
    assert shapes["rows"] == 1 * 16
    assert set(shapes["gflops_per_second"]) == {"xla", "tensorflow"}
    assert min(shapes["gflops_per_second"].values()) > 0
    per_step = results["per_step_ratio_vs_keras_hub"]
    assert 0 < per_step["p25"] <= per_step["median"] <= per_step["p75"]
    assert 0 <= per_step["faster_steps"] <= 1
    assert results["flops_per_token"] > 0 and "12 * layers" in results[
        "flops_formula"]
    assert 0 <= results["input_wait_fraction"]
    assert results["peak_memory_mb"] > 0
    generation = results["generation"]["8"]
    assert generation["cached_tokens_per_second"] > 0
    assert generation["recompute_tokens_per_second"] > 0
    kinds = {row["vary"] for row in results["scaling"]}
    assert kinds == {"sequence_length", "hidden_dim"}
    assert all(row["step_ms"] > 0 for row in results["scaling"])
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert set(results["settings"]) >= {"xla", "intra_op_threads",
                                        "precision", "steps_per_execution"}
    # On one CPU under XLA keras-tfm's step splits the batch; the same step
    # unsplit runs alongside, so the split's gain is measured in the run.
    assert results["settings"]["batch_splits"] == 2
    # The activation's gain is measured apart from the keras-hub ratio,
    # whose reference uses keras-tfm's activation.
    assert set(results["training"]) == {"keras_tfm", "keras_hub",
                                        "keras_tfm_unsplit",
                                        "keras_tfm_exact_gelu"}
    assert results["speedup_vs_keras_tfm_unsplit"]["median"] > 0
    assert results["speedup_vs_keras_tfm_exact_gelu"]["median"] > 0
    # Seq2seq decoding at Multi30k's and SciTLDR's lengths, four ways.
    rows = results["seq2seq_decoding"]
    assert [(r["source_length"], r["new_tokens"]) for r in rows] == [
        (32, 32), (256, 56)]
    for row in rows:
        assert set(row["ms_per_token"]) == {"cached", "cached_loop",
                                            "recompute", "recompute_all"}
        ms = row["ms_per_token"]
        assert min(ms.values()) > 0
        for name in ("cached", "cached_loop", "recompute_all"):
            assert row["speedup_vs_recompute"][name] == pytest.approx(
                ms["recompute"] / ms[name])
        assert row["model"].startswith("Seq2SeqLM 1+1 x 16")


@pytest.mark.slow
def test_benchmark_smoke_bfloat16_autocluster(capsys):
    code = main(["benchmark", "--smoke", "--json", "--precision",
                 "mixed_bfloat16", "--jit-compile", "autocluster",
                 "--no-scaling"])
    assert code == 0
    results = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    # --no-scaling leaves the table out of the results and the report.
    assert results["scaling"] == []
    report = format_results(results)
    assert "FLOPs/token" in report and "vary" not in report
    assert results["settings"]["precision"] == "mixed_bfloat16"
    assert results["settings"]["jit_compile"] == "autocluster"
    # The settings' own gain is measured against float32 with XLA, and
    # the batch split's against the same settings unsplit.
    assert set(results["training"]) == {"keras_tfm", "keras_hub",
                                        "keras_tfm_fp32_xla",
                                        "keras_tfm_unsplit",
                                        "keras_tfm_exact_gelu"}
    assert results["speedup_vs_keras_tfm_fp32_xla"]["median"] > 0
    assert results["speedup_vs_keras_tfm_unsplit"]["median"] > 0
    peaks = results["machine"]["matmul_peak_gflops_by_backend"]
    assert {"tensorflow_bfloat16", "xla_bfloat16"} <= set(peaks)
    for t in results["training"].values():
        assert 0 < t["mfu"] < 1


def test_model_matmul_shapes_are_the_flop_counts_matmuls():
    # The shapes whose rates the benchmark reports are the matmuls the
    # FLOP count counts: 6 x matmul parameters per token, the rest being
    # attention's 12 x layers x hidden x sequence.
    config = make_config("nano")
    shapes = model_matmul_shapes(config, 259, rows=384)
    assert all(rows == 384 for rows, _, _, _ in shapes)
    matmul_flops = sum(6 * k * n * count for _, k, n, count in shapes)
    attention = 12 * config.num_layers * config.hidden_dim * 64
    assert matmul_flops + attention == flops_per_token(config, 259)
    # Against the closed form: per layer QKV and output (4 d^2) and the
    # MLP (2 d f), plus the tied head (d x vocabulary).
    d, f = config.hidden_dim, config.intermediate_dim
    closed_form = 6 * (4 * (4 * d * d + 2 * d * f) + d * 259) + attention
    assert flops_per_token(config, 259) == closed_form == 5_310_720


def test_plot_without_scaling_is_a_one_line_error(tmp_path, capsys):
    plot = tmp_path / "scaling.png"
    code = main(["benchmark", "--smoke", "--no-scaling", "--plot", str(plot)])
    assert code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "--no-scaling" in lines[0]
    assert not plot.exists()


def test_seq2seq_decoding_benchmark_refuses_ways_that_disagree(monkeypatch):
    # The timed ways must compute the same logits; a decoder step that
    # differs from recomputation is caught before anything is timed.
    from keras_tfm.benchmarks import seq2seq_latency
    from keras_tfm.models import Seq2SeqLM

    real = Seq2SeqLM.call_decoder_with_cache

    def off_by_one(self, token_ids, *args, **kwargs):
        logits, hidden, cache = real(self, token_ids, *args, **kwargs)
        if token_ids.shape[1] == 1:  # only the one-token cached step
            logits = logits + 1.0
        return logits, hidden, cache

    monkeypatch.setattr(Seq2SeqLM, "call_decoder_with_cache", off_by_one)
    with pytest.raises(RuntimeError, match="disagrees with recompute"):
        seq2seq_latency.measure(8, 4, rounds=1,
                                model_kwargs=seq2seq_latency.TINY)


def test_seq2seq_decoding_benchmark_checks_the_compiled_loop(monkeypatch):
    from keras_tfm.benchmarks import seq2seq_latency

    real = seq2seq_latency.decoding.make_decoder

    def shifted(*args, **kwargs):
        decode = real(*args, **kwargs)
        return lambda source: {"token_ids": decode(source)["token_ids"] + 1}

    monkeypatch.setattr(seq2seq_latency.decoding, "make_decoder", shifted)
    with pytest.raises(RuntimeError, match="compiled greedy loop disagrees"):
        seq2seq_latency.measure(8, 4, rounds=1,
                                model_kwargs=seq2seq_latency.TINY)
