"""Exporting a classification run: a SavedModel that TF Serving answers
with labels, and text-in TFLite files, each checked against Keras."""

import json
import os
import random
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_tfm.data.labelled import classification_dataset
from keras_tfm.export import classifier
from keras_tfm.export import tflite
from keras_tfm.export.classifier import export_classifier_run
from keras_tfm.tasks.classification import TASK
from keras_tfm.tasks.config import FinetuneConfig
from keras_tfm.tasks.finetune import finetune
from keras_tfm.tokenizers import load_tokenizer
from keras_tfm.training import make_config

pytestmark = pytest.mark.slow

LABELS = ("negative", "neutral", "positive")
CUES = (("bad", "awful", "dull"), ("okay", "average", "fair"),
        ("good", "great", "lovely"))
FILLER = ("the", "film", "was", "a", "story", "of", "its", "plot", "and")
# Texts to check by: unicode, a long one cut to the sequence length, an
# empty one, layout characters.
TEXTS = [
    "the plot was great",
    "a dull, awful film",
    "naïve café — déjà vu… 東京タワー 🤖 x²",
    " ".join(["okay"] * 50),
    "",
    "tabs\tand\nnew lines\r\n  twice  ",
]
# tensorflow-text's custom ops, the only non-built-in ops a file may hold.
TFTEXT_OPS = {"TFText>ByteSplitWithOffsets", "TFText>ByteSplitByOffsets",
              "FastWordpieceTokenizeWithOffsets"}


def write_labelled(path, count, seed):
    rng = random.Random(seed)
    lines = ["text,label"]
    for i in range(count):
        label = i % len(LABELS)
        words = rng.sample(FILLER, 3) + [rng.choice(CUES[label])]
        rng.shuffle(words)
        lines.append(" ".join(words) + "," + LABELS[label])
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return str(path)


def fine_tuned(tmp, **overrides):
    """A tiny classifier fine-tuned from scratch for a few steps."""
    values = dict(
        task="classification", text_column="text",
        data=(write_labelled(tmp / "train.csv", 90, seed=0),),
        validation_data=(write_labelled(tmp / "dev.csv", 30, seed=1),),
        output_dir=str(tmp / "run"), sequence_length=24, num_layers=1,
        num_heads=2, hidden_dim=32, intermediate_dim=64, batch_size=8,
        max_steps=6, eval_every=6, learning_rate=3e-3, jit_compile="false",
        verbose=0,
    )
    values.update(overrides)
    finetune(make_config(config_class=FinetuneConfig, **values), TASK)
    return values["output_dir"]


@pytest.fixture(scope="module")
def byte_run(tmp_path_factory):
    return fine_tuned(tmp_path_factory.mktemp("byte"))


@pytest.fixture(scope="module")
def report(byte_run):
    # float32 and int8 (float16 and dynamic-range files take the LM
    # export's conversion, tested there).
    return export_classifier_run(byte_run, quantize=["none", "int8"],
                                 log=lambda *a: None)


@pytest.fixture(scope="module")
def wordpiece_run(tmp_path_factory):
    return fine_tuned(tmp_path_factory.mktemp("wordpiece"),
                      tokenizer="wordpiece", vocabulary_size=120,
                      max_steps=2, eval_every=2)


def keras_probabilities(run_dir, texts):
    """The Keras model's probabilities, texts prepared as in training."""
    model = keras.models.load_model(os.path.join(run_dir, "model.keras"))
    tokenizer = load_tokenizer(os.path.join(run_dir, "tokenizer"))
    ids = np.concatenate([batch.numpy() for batch in classification_dataset(
        texts, None, tokenizer, model.max_sequence_length, 8, False)])
    return np.asarray(tf.nn.softmax(model(ids)))


def entry(report, fmt, quantization="none"):
    return next(e for e in report["files"]
                if e["format"] == fmt and e["quantization"] == quantization)


def test_layout_and_report(byte_run, report):
    out = os.path.join(byte_run, "export")
    with open(os.path.join(out, "export_report.json")) as f:
        assert json.load(f)["files"] == report["files"]
    version = os.path.join(out, "savedmodel", "run", "1")
    assert os.path.isfile(os.path.join(version, "saved_model.pb"))
    with open(os.path.join(out, "labels.json")) as f:
        assert json.load(f) == list(LABELS)
    assert os.path.isfile(os.path.join(out, "tokenizer.json"))
    assert report["validation_examples"] == 30
    kept = {(e["format"], e["quantization"]) for e in report["files"]}
    dropped = {(e["format"], e["quantization"]) for e in report["dropped"]}
    assert kept | dropped == {("savedmodel", "none"), ("tflite", "none"),
                              ("tflite", "int8")}
    for e in report["files"]:
        assert os.path.getsize(os.path.join(out, e["path"])) == e["bytes"] or (
            e["format"] == "savedmodel")
        assert e["ops"] and 0 <= e["val_accuracy"] <= 1
        assert e["max_abs_probability_diff"] >= 0
    assert entry(report, "savedmodel")["signatures"] == ["serve_ids",
                                                        "serving_default"]
    assert entry(report, "savedmodel")["max_abs_probability_diff"] < 1e-5
    assert entry(report, "tflite")["max_abs_probability_diff"] < 1e-5


FRESH = r'''
import json, sys
import numpy as np
import tensorflow as tf
import tensorflow_text  # noqa: F401  (registers the tokenizer's ops)

# A server: the SavedModel with tensorflow and tensorflow-text alone.
assert "keras_tfm" not in sys.modules and "ai_edge_litert" not in sys.modules
model = tf.saved_model.load(sys.argv[1])
request = json.loads(sys.argv[3])
# TF Serving's REST predict API, row format: one object per instance.
texts = [instance["text"] for instance in request["instances"]]
out = model.signatures["serving_default"](text=tf.constant(texts))
predictions = [
    {"label": label.decode("utf-8"), "probabilities": p.tolist(),
     "logits": z.tolist()}
    for label, p, z in zip(out["label"].numpy(), out["probabilities"].numpy(),
                           out["logits"].numpy())
]
# "the" as token ids after [EOS] (byte + 4), padded far past its length.
ids = model.signatures["serve_ids"](token_ids=tf.constant(
    [[3, 120, 108, 105] + [0] * 20]))

# An app: the TFLite file under LiteRT, tensorflow-text's ops registered.
from ai_edge_litert.interpreter import InterpreterWithCustomOps
runner = InterpreterWithCustomOps(
    model_path=sys.argv[2],
    custom_op_registerers=tensorflow_text.tflite_registrar.SELECT_TFTEXT_OPS)
run = runner.get_signature_runner("serving_default")
answers = [run(text=np.array([t.encode("utf-8")])) for t in texts]
print(json.dumps({
    "savedmodel": {"predictions": predictions,
                   "ids": ids["probabilities"].numpy().tolist()},
    "tflite": {"label_ids": [int(a["label_id"][0]) for a in answers],
               "probabilities": [a["probabilities"][0].tolist()
                                 for a in answers]},
}))
'''


@pytest.fixture(scope="module")
def fresh(byte_run, report):
    """The SavedModel's answer to a REST-shaped request, then the float32
    TFLite file's answers, from a fresh process."""
    out = os.path.join(byte_run, "export")
    request = {"instances": [{"text": text} for text in TEXTS]}
    result = subprocess.run(
        [sys.executable, "-c", FRESH,
         os.path.join(out, entry(report, "savedmodel")["path"]),
         os.path.join(out, entry(report, "tflite")["path"]),
         json.dumps(request)],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_saved_model_answers_rest_requests_in_a_fresh_process(
    byte_run, fresh
):
    response = fresh["savedmodel"]
    expected = keras_probabilities(byte_run, TEXTS)
    predictions = response["predictions"]
    got = np.array([p["probabilities"] for p in predictions])
    np.testing.assert_allclose(got, expected, atol=1e-5)
    assert [p["label"] for p in predictions] == [
        LABELS[i] for i in expected.argmax(-1)]
    # Padding is ignored: "the" as padded ids answers as the text does.
    np.testing.assert_allclose(
        response["ids"], keras_probabilities(byte_run, ["the"]), atol=1e-5)


def check_tflite_text_file(run_dir, path, answer):
    expected = keras_probabilities(run_dir, TEXTS)
    np.testing.assert_allclose(answer["probabilities"], expected, atol=1e-5)
    assert answer["label_ids"] == expected.argmax(-1).tolist()
    with open(path, "rb") as f:
        ops = tflite.list_ops(f.read())
    # Built-ins (upper case) and tensorflow-text's ops, nothing else.
    assert set(ops) - TFTEXT_OPS == {op for op in ops if op.isupper()}
    return ops


def test_tflite_float32_takes_text_with_builtin_and_tftext_ops(
    byte_run, report, fresh
):
    path = os.path.join(byte_run, "export", entry(report, "tflite")["path"])
    ops = check_tflite_text_file(byte_run, path, fresh["tflite"])
    assert set(ops) & TFTEXT_OPS == {"TFText>ByteSplitWithOffsets"}


def test_quantized_files_within_a_point_or_dropped(byte_run, report):
    out = os.path.join(byte_run, "export")
    float32 = report["keras"]["val_accuracy"]
    for quantization in ("int8",):
        kept = [e for e in report["files"]
                if e["quantization"] == quantization]
        dropped = [e for e in report["dropped"]
                   if e["quantization"] == quantization]
        assert len(kept) + len(dropped) == 1, quantization
        if dropped:
            assert "points below the float32 model's" in dropped[0]["reason"]
            assert not os.path.exists(os.path.join(out, dropped[0]["path"]))
            continue
        e = kept[0]
        assert e["flex_ops"] == [] and e["bytes"] < entry(
            report, "tflite")["bytes"]
        assert e["val_accuracy"] >= float32 - 0.01, quantization


def test_predict_with_the_tflite_backend_matches_keras(byte_run, report):
    texts = TEXTS[:3]
    from keras_tfm.export.tasks import predict_with_tflite

    on_device = predict_with_tflite(byte_run, texts)
    in_keras = TASK.predict_run(byte_run, texts)
    for a, b in zip(on_device, in_keras):
        assert a["label"] == b["label"]
        assert a["probability"] == pytest.approx(b["probability"], abs=1e-5)


def random_texts(count, seed=0):
    """Texts of ASCII, layout characters, accents, marks, CJK, emoji,
    Arabic digits, superscripts and Roman numerals, all mixed."""
    rng = random.Random(seed)
    pool = [chr(c) for c in [*range(32, 127), 9, 10, 12, 13, 11, 0xA0,
                             0xE9, 0x301, 0x4E00, 0x1F600, 0x660, 0x2028,
                             0x3000, 0xB2, 0x2160]]
    return ["".join(rng.choices(pool, k=rng.randrange(30)))
            for _ in range(count)]


def test_wordpiece_pre_split_without_regex_is_the_tokenizers(wordpiece_run):
    tokenizer = load_tokenizer(os.path.join(wordpiece_run, "tokenizer"))
    texts = TEXTS + random_texts(150)
    expected = np.concatenate([
        batch.numpy() for batch in classification_dataset(
            texts, None, tokenizer, 24, 64, False)
    ])
    prepare = tf.function(
        lambda text: classifier.single_text_ids(tokenizer, text, 24),
        input_signature=[tf.TensorSpec([1], tf.string)],
    )
    for text, row in zip(texts, expected):
        assert prepare(tf.constant([text])).numpy()[0].tolist() == (
            row.tolist()), text


def test_wordpiece_run_exports_a_text_tflite_file(wordpiece_run):
    report = export_classifier_run(wordpiece_run, formats=["tflite"],
                                   quantize=["none"], log=lambda *a: None)
    path = os.path.join(report["output"], entry(report, "tflite")["path"])
    runner = classifier.text_interpreter(path)
    answers = [classifier.run_text(runner, text) for text in TEXTS]
    ops = check_tflite_text_file(wordpiece_run, path, {
        "label_ids": [label for label, _ in answers],
        "probabilities": [p.tolist() for _, p in answers],
    })
    assert set(ops) & TFTEXT_OPS == TFTEXT_OPS
    # The pre-split runs in TFLite as in TensorFlow: any text whose ids
    # differed would (almost surely) change its probabilities.
    texts = random_texts(60, seed=1)
    on_device = np.stack([classifier.run_text(runner, text)[1]
                          for text in texts])
    np.testing.assert_allclose(on_device,
                               keras_probabilities(wordpiece_run, texts),
                               atol=1e-5)
