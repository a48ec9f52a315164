"""Export: SavedModel (TF Serving layout and signatures) and TFLite files,
each checked against the Keras model."""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

from keras_tfm.cli import main
from keras_tfm.errors import UserError
from keras_tfm.export import export_run
from keras_tfm.training import make_config
from keras_tfm.training import train

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, shakespeare_path):
    path = str(tmp_path_factory.mktemp("export") / "run")
    # Wider than `tiny`, so that quantization (which skips small tensors)
    # meets most of the weights, as in real models.
    train(make_config("tiny", data=[shakespeare_path], output_dir=path,
                      hidden_dim=128, intermediate_dim=512, num_layers=2,
                      max_steps=40, eval_every=20, sample_tokens=0, verbose=0))
    return path


@pytest.fixture(scope="module")
def report(run_dir):
    return export_run(run_dir, log=lambda *a: None)


def run_fresh_python(code, *args):
    """Runs `code` in a new interpreter, as an app or a server would."""
    result = subprocess.run([sys.executable, "-c", code, *args],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout.strip().splitlines()[-1]


def entry(report, fmt, quantization="none"):
    return next(e for e in report["files"]
                if e["format"] == fmt and e["quantization"] == quantization)


def test_layout_and_report(run_dir, report):
    out = os.path.join(run_dir, "export")
    with open(os.path.join(out, "export_report.json")) as f:
        assert json.load(f)["files"] == report["files"]
    version_dir = os.path.join(out, "savedmodel", "run", "1")
    assert os.path.isfile(os.path.join(version_dir, "saved_model.pb"))
    assert os.path.isdir(os.path.join(version_dir, "variables"))
    assert os.path.isfile(os.path.join(out, "tokenizer.json"))
    for e in report["files"]:
        assert os.path.exists(os.path.join(out, e["path"]))
        assert e["bytes"] > 0 and "max_abs_logit_diff" in e
    assert not os.path.exists(out + ".partial")


def test_float32_files_match_keras(report):
    assert entry(report, "savedmodel")["max_abs_logit_diff"] < 1e-4
    assert entry(report, "tflite")["max_abs_logit_diff"] < 1e-4
    assert "serving_default" in entry(report, "savedmodel")["signatures"]
    assert "next_token" in entry(report, "savedmodel")["signatures"]


def tflite_bits_per_byte(path, windows):
    """Bits per byte of a logits TFLite file on `windows`, computed here
    with numpy from the interpreter's logits (not the export's code)."""
    from ai_edge_litert.interpreter import Interpreter

    run = Interpreter(model_path=path).get_signature_runner("serving_default")
    nats = 0.0
    for row in windows.tokens:
        logits = run(token_ids=row[None, :-1].astype(np.int32))["logits"][0]
        logits = logits.astype(np.float64)
        log_z = np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1))
        log_z += logits.max(-1)
        nats += float((log_z - logits[np.arange(len(row) - 1), row[1:]]).sum())
    return nats / np.log(2) / windows.target_bytes.sum()


def test_quantized_files_are_small_builtin_only_and_within_bounds(
    run_dir, report
):
    from keras_tfm.tasks import load_run
    from keras_tfm.tasks import run_data

    config, tokenizer, _ = load_run(run_dir)
    held_out = run_data(config, tokenizer).validation
    held_out = held_out.subset(np.arange(report["held_out_windows"]))
    out = os.path.join(run_dir, "export")
    float32_path = os.path.join(out, entry(report, "tflite")["path"])
    float32 = tflite_bits_per_byte(float32_path, held_out)
    bounds = {"float16": 0.01, "dynamic": 0.01, "int8": 0.02}
    for quantization, bound in bounds.items():
        kept = [e for e in report["files"]
                if e.get("quantization") == quantization]
        dropped = [e for e in report["dropped"]
                   if e.get("quantization") == quantization]
        # Each variant is either kept and within its bound, or dropped
        # with the reason (and then not on disk).
        assert len(kept) + len(dropped) == 1, quantization
        if dropped:
            assert "outside the" in dropped[0]["reason"]
            assert not os.path.exists(os.path.join(out, dropped[0]["path"]))
            continue
        e = kept[0]
        path = os.path.join(out, e["path"])
        assert e["flex_ops"] == []
        assert os.path.getsize(path) < {"float16": 0.6, "dynamic": 0.35,
                                        "int8": 0.35}[quantization] * (
            os.path.getsize(float32_path))
        ratio = tflite_bits_per_byte(path, held_out) / float32
        assert ratio - 1 <= bound, (quantization, ratio)


SERVE = r'''
import json, sys
import numpy as np
import tensorflow as tf
import tensorflow_text  # noqa: F401  (registers the tokenizer ops)
assert "keras_tfm" not in sys.modules and "keras_hub" not in sys.modules
model = tf.saved_model.load(sys.argv[1])
request = json.loads(sys.argv[2])
# TF Serving's REST predict API: row ("instances") or columnar ("inputs").
if "instances" in request:
    ids = np.array(request["instances"], np.int32)
else:
    ids = np.array(request["inputs"]["token_ids"], np.int32)
logits = model.signatures["serving_default"](token_ids=tf.constant(ids))
text = model.signatures["next_token"](text=tf.constant(["To be, or "]))
print(json.dumps({
    "predictions": logits["logits"].numpy().tolist(),
    "next": text["tokens"].numpy()[0].tolist() and
            [t.decode("utf-8", "replace") for t in text["tokens"].numpy()[0]],
    "log_probs": text["log_probs"].numpy()[0].tolist(),
}))
'''


def test_saved_model_serves_rest_requests_in_a_fresh_process(run_dir, report):
    path = os.path.join(run_dir, "export", entry(report, "savedmodel")["path"])
    model = keras.models.load_model(os.path.join(run_dir, "model.keras"))
    ids = np.random.default_rng(0).integers(4, 260, size=(2, 9)).tolist()
    expected = np.asarray(model(np.array(ids, np.int32)))
    for request in ({"instances": ids}, {"inputs": {"token_ids": ids}}):
        answer = json.loads(run_fresh_python(SERVE, path, json.dumps(request)))
        np.testing.assert_allclose(answer["predictions"], expected, atol=1e-4)
        log_probs = answer["log_probs"]
        assert len(answer["next"]) == 5
        assert log_probs == sorted(log_probs, reverse=True)
        assert all(p <= 0 for p in log_probs)


def test_saved_model_cli_lists_named_signatures(run_dir, report):
    path = os.path.join(run_dir, "export", entry(report, "savedmodel")["path"])
    result = subprocess.run(["saved_model_cli", "show", "--dir", path, "--all"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    for name in ("serving_default", "next_token", "token_ids", "logits",
                 "text", "log_probs"):
        assert name in result.stdout


def test_tflite_runs_in_a_fresh_process_with_litert(run_dir, report):
    path = os.path.join(run_dir, "export", entry(report, "tflite")["path"])
    code = (
        "import sys, numpy as np\n"
        "from ai_edge_litert.interpreter import Interpreter\n"
        "runner = Interpreter(model_path=sys.argv[1])\n"
        "run = runner.get_signature_runner('serving_default')\n"
        "ids = np.full((1, 32), 70, np.int32)\n"
        "print(run(token_ids=ids)['logits'].shape)\n"
    )
    assert run_fresh_python(code, path) == "(1, 32, 260)"


def test_refuses_an_earlier_export_unless_overwrite(run_dir, capsys):
    code = main(["export", run_dir, "--quantize", "none", "--format", "tflite"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "already holds an export" in err
    assert len(err.splitlines()) == 1


@pytest.mark.parametrize("args, message", [
    (["--format", "onnx"], "unknown format 'onnx'"),
    (["--quantize", "int4"], "unknown quantization 'int4'"),
])
def test_bad_choices(run_dir, capsys, args, message, tmp_path):
    code = main(["export", run_dir, "--output", str(tmp_path / "x"), *args])
    err = capsys.readouterr().err.strip()
    assert code == 2 and message in err and len(err.splitlines()) == 1


def test_run_directory_without_a_model(tmp_path, capsys):
    code = main(["export", str(tmp_path)])
    assert code == 2 and "is not a keras-tfm run" in capsys.readouterr().err


def test_failed_conversion_leaves_nothing(run_dir, tmp_path, monkeypatch):
    from keras_tfm.export import tflite

    def broken(*args, **kwargs):
        raise UserError("conversion failed on purpose")

    monkeypatch.setattr(tflite, "convert_logits_model", broken)
    output = tmp_path / "out"
    with pytest.raises(UserError, match="on purpose"):
        export_run(run_dir, output=str(output), log=lambda *a: None)
    assert not output.exists()
    assert not (tmp_path / "out.partial").exists()


def test_decoder_file_has_prefill_and_decode(run_dir, report):
    e = next(e for e in report["files"] if "signatures" in e
             and e["format"] == "tflite")
    assert e["signatures"] == ["decode", "prefill"]
    assert e["flex_ops"] == [] and "DYNAMIC_UPDATE_SLICE" in e["ops"]


def test_generate_with_the_tflite_backend_equals_keras(run_dir, report):
    # Longer than the model's context (32), so the window slides too.
    args = ["generate", run_dir, "--prompt", "KING RICHARD:", "--temperature",
            "0", "--max-new-tokens", "50"]
    keras_out = subprocess.run(["keras-tfm", *args], capture_output=True,
                               text=True, timeout=120)
    tflite_out = subprocess.run(["keras-tfm", *args, "--backend", "tflite"],
                                capture_output=True, text=True, timeout=120)
    assert keras_out.returncode == 0, keras_out.stderr[-2000:]
    assert tflite_out.returncode == 0, tflite_out.stderr[-2000:]
    assert tflite_out.stdout == keras_out.stdout
    sampled = subprocess.run(
        ["keras-tfm", *args[:-4], "--backend", "tflite", "--temperature",
         "0.9", "--top-k", "10", "--top-p", "0.9", "--seed", "2",
         "--max-new-tokens", "20"],
        capture_output=True, text=True, timeout=120,
    )
    assert sampled.returncode == 0, sampled.stderr[-2000:]


def test_tflite_backend_without_an_export(tmp_path, run_dir, capsys):
    code = main(["generate", run_dir, "--backend", "tflite", "--tflite-file",
                 str(tmp_path / "missing.tflite")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "no TFLite decoder" in err


def test_decoder_prefill_logits_match_keras(report):
    e = next(e for e in report["files"] if "signatures" in e
             and e["format"] == "tflite")
    assert e["max_abs_logit_diff"] < 1e-4
    np.testing.assert_allclose(e["val_bits_per_byte"],
                               report["keras"]["val_bits_per_byte"], rtol=1e-4)


def test_text_tflite_takes_raw_strings(run_dir, report):
    e = next(e for e in report["files"] if e.get("input") == "text")
    assert e["custom_ops"] == ["TFText>ByteSplitWithOffsets"]
    assert e["flex_ops"] == []
    path = os.path.join(run_dir, "export", e["path"])
    code = (
        "import sys, numpy as np, tensorflow_text as tf_text\n"
        "from ai_edge_litert.interpreter import InterpreterWithCustomOps\n"
        "runner = InterpreterWithCustomOps(model_path=sys.argv[1],\n"
        "    custom_op_registerers="
        "tf_text.tflite_registrar.SELECT_TFTEXT_OPS)\n"
        "out = runner.get_signature_runner('serving_default')(\n"
        "    text=np.array([b'To be, or not'] ))\n"
        "import json\n"
        "print(json.dumps([out['token_ids'].tolist(),\n"
        "                  out['log_probs'].tolist()]))\n"
    )
    ids, log_probs = json.loads(run_fresh_python(code, path))
    # Keras, independently: [EOS] then the bytes (id = byte + 4).
    model = keras.models.load_model(os.path.join(run_dir, "model.keras"))
    context = [3] + [b + 4 for b in b"To be, or not"]
    logits = np.asarray(model(np.array([context], np.int32)))[0, -1]
    logits = logits.astype(np.float64)
    expected = logits - logits.max() - np.log(
        np.exp(logits - logits.max()).sum())
    top = np.argsort(-expected)[:5]
    assert ids == top.tolist()
    np.testing.assert_allclose(log_probs, expected[top], atol=1e-4)


def test_decode_latency_benchmark_smoke(capsys):
    from keras_tfm.benchmarks import latency

    results = latency.main(["--tiny", "--contexts", "8", "--rounds", "1",
                            "--repeats", "1", "--json"])
    assert set(results[8]) == {"tflite_decode", "tflite_recompute",
                               "keras_cached", "keras_recompute"}
    assert all(ms > 0 for ms in results[8].values())
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_a_quantized_file_alone_is_still_checked(run_dir, tmp_path):
    # Without the float32 file in the same export, the bound is against
    # the Keras model's held-out loss, computed here independently.
    from keras_tfm.tasks import load_run
    from keras_tfm.tasks import run_data

    report = export_run(run_dir, formats=["tflite"], quantize=["int8"],
                        output=str(tmp_path / "x"), log=lambda *a: None)
    (entry_,) = [e for e in report["files"] + report["dropped"]
                 if e["path"] == "tflite/model_int8.tflite"]
    config, tokenizer, model = load_run(run_dir)
    held_out = run_data(config, tokenizer).validation.subset(
        np.arange(report["held_out_windows"]))
    logits = np.asarray(model(held_out.tokens[:, :-1])).astype(np.float64)
    targets = held_out.tokens[:, 1:]
    log_z = np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1))
    log_z += logits.max(-1)
    picked = np.take_along_axis(logits, targets[..., None], -1)[..., 0]
    keras_nll = float((log_z - picked).mean())
    np.testing.assert_allclose(report["keras"]["held_out_nll"], keras_nll,
                               rtol=1e-4)
    if entry_ in report["files"]:
        assert entry_["held_out_nll"] / keras_nll - 1 <= 0.02
    else:
        assert "outside the 2% bound" in entry_["reason"]


def test_every_file_reports_size_parity_and_bits_per_byte(report):
    for e in report["files"]:
        assert {"path", "bytes", "max_abs_logit_diff",
                "val_bits_per_byte"} <= set(e), e["path"]
    np.testing.assert_allclose(
        entry(report, "savedmodel")["val_bits_per_byte"],
        report["keras"]["val_bits_per_byte"], rtol=1e-5,
    )


@pytest.fixture(scope="module")
def masked_run(tmp_path_factory, shakespeare_path):
    path = str(tmp_path_factory.mktemp("masked") / "run")
    train(make_config("tiny", data=[shakespeare_path], output_dir=path,
                      objective="masked", max_steps=6, eval_every=6,
                      sample_tokens=0, verbose=0))
    return path


FILL_MASK = r'''
import json, sys
import tensorflow as tf
import tensorflow_text  # noqa: F401
assert "keras_tfm" not in sys.modules
model = tf.saved_model.load(sys.argv[1])
out = model.signatures["fill_mask"](
    text=tf.constant(["To be, or [MASK] to be", "no blank here"]))
print(json.dumps({k: out[k].numpy().tolist() for k in ("token_ids",
                                                      "log_probs")}))
'''


def test_masked_lm_export_fills_blanks_like_keras(masked_run, tmp_path):
    from keras_tfm.tasks import load_run

    output = str(tmp_path / "export")
    report = export_run(masked_run, formats=["savedmodel", "tflite"],
                        quantize=["none", "dynamic"], output=output,
                        log=lambda *a: None)
    # A masked LM's quantized file is checked too (its loss on held-out
    # text against the Keras model's): kept within its bound, or dropped.
    dynamic = [e for e in report["files"] + report["dropped"]
               if e.get("quantization") == "dynamic"]
    assert len(dynamic) == 1 and "held_out_nll_vs_keras" in dynamic[0]
    report["files"] = [e for e in report["files"]
                       if e.get("quantization") != "dynamic"]
    saved = entry(report, "savedmodel")
    assert "fill_mask" in saved["signatures"]
    # Masked LMs get no decoder or text file: they do not generate.
    assert {e["path"] for e in report["files"]} == {
        saved["path"], "tflite/model_float32.tflite"}
    answer = json.loads(run_fresh_python(
        FILL_MASK, os.path.join(output, saved["path"])))
    # Keras, independently: the blank's log-softmax at its position.
    _, tokenizer, model = load_run(masked_run)
    ids = tokenizer.encode("To be, or ") + [tokenizer.mask_id] + (
        tokenizer.encode(" to be"))
    logits = np.asarray(model(np.array([ids], np.int32)))[0, ids.index(
        tokenizer.mask_id)].astype(np.float64)
    log_probs = logits - np.log(np.exp(logits - logits.max()).sum()) - (
        logits.max())
    top = np.argsort(-log_probs)[:5]
    assert answer["token_ids"][0][0] == top.tolist()
    np.testing.assert_allclose(answer["log_probs"][0][0], log_probs[top],
                               atol=1e-4)
    # A text without a blank gets padding rows, not an error.
    assert len(answer["token_ids"]) == 2
