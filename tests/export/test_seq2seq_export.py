"""Seq2seq export: the SavedModel translates text in a process that has
only tensorflow and tensorflow_text, the TFLite encoder and decoder step
reproduce Keras' greedy search token for token, and `keras-tfm predict
--backend tflite` prints what `--backend keras` prints."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from keras_tfm.errors import UserError
from keras_tfm.export import seq2seq as exported
from keras_tfm.export import tflite
from keras_tfm.generation import seq2seq as decoding
from keras_tfm.tasks import seq2seq as tasks
from keras_tfm.tasks.config import FinetuneConfig
from keras_tfm.tasks.finetune import finetune
from keras_tfm.training import make_config

pytestmark = pytest.mark.slow

WORDS = "the a cat dog sat ran on under mat tree big small red".split()
TEXTS = ["the cat sat on the mat", "a big red dog ran", "tree",
         "small dog under a tree on the mat"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("seq2seq_export")
    rng = np.random.default_rng(0)
    sources = [" ".join(rng.choice(WORDS, rng.integers(2, 6)))
               for _ in range(200)]
    targets = [" ".join(reversed(s.split())).upper() for s in sources]
    for name, lines in (("train.src", sources), ("train.tgt", targets)):
        (root / name).write_text("\n".join(lines) + "\n", encoding="utf-8")
    path = str(root / "run")
    finetune(make_config(
        config_class=FinetuneConfig, task="translation",
        data=(str(root / "train.src"), str(root / "train.tgt")),
        output_dir=path, tokenizer="wordpiece", vocabulary_size=100,
        num_layers=1, num_heads=2, hidden_dim=32, intermediate_dim=64,
        sequence_length=16, target_sequence_length=12, beam_size=3,
        batch_size=16, max_steps=40, eval_every=40, learning_rate=3e-3,
        jit_compile="false", verbose=0,
    ), tasks.TRANSLATION)
    return path


@pytest.fixture(scope="module")
def report(run_dir):
    return exported.export_seq2seq_run(
        run_dir, quantize=["none", "int8"], log=lambda *a: None)


@pytest.fixture(scope="module")
def keras_run(run_dir):
    return tasks.load_run(run_dir, "translation")


def keras_outputs(keras_run, texts, beam_size):
    config, tokenizer, model = keras_run
    return tasks.generate_texts(
        model, tokenizer, tasks.source_ids(tokenizer, texts,
                                           config.sequence_length),
        beam_size=beam_size, length_penalty=config.length_penalty,
        max_length=config.target_sequence_length, batch_size=len(texts),
    )


def test_layout_and_report(run_dir, report):
    out = os.path.join(run_dir, "export")
    with open(os.path.join(out, "export_report.json")) as f:
        assert json.load(f)["files"] == report["files"]
    version = os.path.join(out, "savedmodel", "run", "1")
    assert os.path.isfile(os.path.join(version, "saved_model.pb"))
    for name in ("tokenizer.json", "decoding.json",
                 "tflite/encoder_float32.tflite",
                 "tflite/decoder_step_float32.tflite"):
        assert os.path.isfile(os.path.join(out, name)), name
    saved, pair = report["files"]
    assert saved["signatures"] == ["greedy", "serve_ids", "serving_default"]
    assert saved["beam_matches_keras"] == saved["greedy_matches_keras"] == 1.0
    assert 0 <= saved["val_bleu"] <= 100 and saved["bytes"] > 0
    assert pair["max_abs_logit_diff"] < 1e-4
    assert pair["greedy_agreement"] == 1.0
    assert pair["greedy_examples"] == report["validation_examples"] == 20
    for part in ("encoder", "decoder_step"):
        ops = pair[part]["ops"]
        # Builtin ops only: no Flex, no custom ops.
        assert ops and all(op.isupper() and op.isidentifier() for op in ops)
        assert pair[part]["bytes"] == os.path.getsize(
            os.path.join(out, pair[part]["path"]))
    assert [s["quantization"] for s in report["skipped"]] == ["int8"]
    with open(os.path.join(out, "decoding.json")) as f:
        assert json.load(f) == {
            "start_id": 3, "end_id": 3, "pad_id": 0, "source_length": 16,
            "max_length": 12, "beam_size": 3, "length_penalty": 0.6,
            "source_prefix": "[EOS]",
        }


SERVE = r'''
import json, sys
import tensorflow as tf
import tensorflow_text  # noqa: F401  (registers the tokenizer's ops)
loaded = tf.saved_model.load(sys.argv[1])
texts = tf.constant(json.loads(sys.argv[2]))
signatures = loaded.signatures
beam = signatures["serving_default"](text=texts)["output"].numpy()
greedy = signatures["greedy"](text=texts)["output"].numpy()
ids = signatures["serve_ids"](
    encoder_token_ids=tf.constant(json.loads(sys.argv[3]), tf.int32)
)["token_ids"].numpy()
print(json.dumps({
    "beam": [t.decode("utf-8") for t in beam],
    "greedy": [t.decode("utf-8") for t in greedy],
    "ids": ids.tolist(),
    "keras_tfm_loaded": "keras_tfm" in sys.modules,
}))
'''


@pytest.fixture(scope="module")
def subprocess_results(run_dir, report, keras_run):
    """The fresh-process SavedModel client and both predict backends, run
    side by side."""
    config, tokenizer, _ = keras_run
    path = os.path.join(run_dir, "export", report["files"][0]["path"])
    ids = tasks.source_ids(tokenizer, TEXTS, config.sequence_length)
    predict = ["keras-tfm", "predict", run_dir, "--beam-size", "1"]
    for text in TEXTS:
        predict += ["--text", text]
    commands = {
        "serve": [sys.executable, "-c", SERVE, path, json.dumps(TEXTS),
                  json.dumps(ids.tolist())],
        "keras": predict + ["--backend", "keras"],
        "tflite": predict + ["--backend", "tflite"],
    }
    processes = {
        name: subprocess.Popen(command, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
        for name, command in commands.items()
    }
    results = {}
    for name, process in processes.items():
        stdout, stderr = process.communicate(timeout=300)
        assert process.returncode == 0, stderr[-3000:]
        results[name] = stdout
    return results


def test_saved_model_translates_in_a_fresh_process(subprocess_results,
                                                   keras_run):
    answer = json.loads(subprocess_results["serve"].strip().splitlines()[-1])
    assert not answer["keras_tfm_loaded"]
    # The whole decoding loop and the tokenizer ran in the graph, with
    # the Keras model's output for the same batch.
    assert answer["beam"] == keras_outputs(keras_run, TEXTS, beam_size=3)
    assert answer["greedy"] == keras_outputs(keras_run, TEXTS, beam_size=1)
    assert any(answer["greedy"])
    config, tokenizer, model = keras_run
    ids, _ = decoding.beam_search(
        model, tasks.source_ids(tokenizer, TEXTS, config.sequence_length),
        beam_size=3, max_length=12, length_penalty=0.6)
    assert answer["ids"] == ids.numpy().tolist()


def test_predict_tflite_backend_prints_what_keras_prints(subprocess_results,
                                                         keras_run):
    keras_lines = subprocess_results["keras"].splitlines()
    assert subprocess_results["tflite"].splitlines() == keras_lines
    assert keras_lines == keras_outputs(keras_run, TEXTS, beam_size=1)


def keras_ids(keras_run, texts, beam_size):
    config, tokenizer, model = keras_run
    ids = tasks.source_ids(tokenizer, texts, config.sequence_length)
    if beam_size == 1:
        out = decoding.greedy_search(model, ids, 12)
    else:
        out = decoding.beam_search(model, ids, beam_size, 12, 0.6)[0]
    return [[t for t in row if t] for row in out.numpy().tolist()], ids


@pytest.mark.parametrize("beam_size", [1, 3])
def test_tflite_pair_equals_keras_token_for_token(run_dir, report, keras_run,
                                                  beam_size):
    encoder, step = exported.load_tflite_pair(
        os.path.join(run_dir, "export", "tflite"), run_dir)
    # The LiteRT interpreter, as an app runs the files.
    assert type(encoder).__module__.startswith("ai_edge_litert")
    texts = TEXTS + [f"{a} {b}" for a in WORDS[:4] for b in WORDS[4:8]]
    expected, sources = keras_ids(keras_run, texts, beam_size)
    on_device = [
        exported.generate_ids(encoder, step, row[row != 0], 12,
                              beam_size=beam_size, length_penalty=0.6)
        for row in sources
    ]
    assert on_device == expected


def test_step_logits_match_keras(run_dir, keras_run):
    config, tokenizer, model = keras_run
    encoder = tflite.interpreter(
        os.path.join(run_dir, "export", "tflite", "encoder_float32.tflite"))
    step = tflite.interpreter(os.path.join(
        run_dir, "export", "tflite", "decoder_step_float32.tflite"))
    source = [3] + tokenizer.encode("the big cat")
    target = [3] + tokenizer.encode("CAT BIG THE")
    expected = np.asarray(model({
        "encoder_token_ids": np.array([source], np.int32),
        "decoder_token_ids": np.array([target], np.int32),
    }))[0]
    padded, cross_cache = exported.encode_source(encoder, source)
    assert padded.shape == (1, 16) and cross_cache.shape == (1, 1, 2, 16, 2,
                                                              16)
    decode = step.get_signature_runner("decode")
    cache = np.zeros((1, 1, 2, 12, 2, 16), np.float32)
    for index, token in enumerate(target):
        out = decode(token_id=np.array([[token]], np.int32),
                     index=np.array(index, np.int32), self_cache=cache,
                     cross_cache=cross_cache, source_ids=padded)
        cache = out["self_cache"]
        np.testing.assert_allclose(out["logits"][0], expected[index],
                                   atol=1e-4)


def test_tflite_backend_without_an_export(tmp_path, run_dir):
    import shutil

    from keras_tfm.export.tasks import predict_with_tflite

    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy, ignore=shutil.ignore_patterns("export"))
    with pytest.raises(UserError, match="run `keras-tfm export"):
        predict_with_tflite(str(copy), ["x"])


def test_evaluate_run_scores_given_files(run_dir, tmp_path, keras_run):
    source = tmp_path / "test.src"
    target = tmp_path / "test.tgt"
    source.write_text("\n".join(TEXTS) + "\n", encoding="utf-8")
    target.write_text("\n".join(
        " ".join(reversed(t.split())).upper() for t in TEXTS) + "\n",
        encoding="utf-8")
    results = tasks.TRANSLATION.evaluate_run(
        run_dir, [str(source), str(target)], beam_size=1)
    assert results["examples"] == 4
    assert results["decoding"]["beam_size"] == 1
    outputs = keras_outputs(keras_run, TEXTS, beam_size=1)
    from keras_tfm.metrics.generation import bleu

    references = [" ".join(reversed(t.split())).upper() for t in TEXTS]
    assert results["bleu"] == pytest.approx(bleu(outputs, references)["bleu"])
    assert "sacreBLEU signature: nrefs:1|" in (
        tasks.TRANSLATION.format_evaluation(results))
