"""`keras-tfm finetune --task classification`: data, model, run, evaluate,
predict, and every bad input as the command line reports it."""

import json
import os
import random
import shutil
import subprocess
import sys

import keras
import numpy as np
import pytest
from conftest import shared_data

from keras_tfm.data.labelled import LabelledData
from keras_tfm.data.labelled import classification_dataset
from keras_tfm.errors import UserError
from keras_tfm.tasks.classification import TASK
from keras_tfm.tasks.classification import format_confusion
from keras_tfm.tasks.classification import read_run_data
from keras_tfm.tasks.classification import scores
from keras_tfm.tasks.classification import split_validation
from keras_tfm.tasks.config import FinetuneConfig
from keras_tfm.tasks.finetune import finetune
from keras_tfm.tasks.finetune import load_init_model
from keras_tfm.tasks.finetune import with_init_architecture
from keras_tfm.tokenizers import load_tokenizer
from keras_tfm.training import make_config
from keras_tfm.training import train

LABELS = ("negative", "positive")
CUES = (("bad", "awful", "dull", "poor"), ("good", "great", "fine", "lovely"))
FILLER = ("the", "film", "was", "a", "story", "of", "its", "plot", "and",
          "cast", "so")
# The tiny architecture, as the `tiny` preset has it.
TINY = dict(sequence_length=32, num_layers=1, num_heads=2, hidden_dim=32,
            intermediate_dim=64)


def write_labelled(path, count, seed=0, labels=LABELS,
                   header="sentence\tlabel"):
    """A TSV of short texts whose label is told by one cue word."""
    rng = random.Random(seed)
    lines = [header]
    for i in range(count):
        label = i % len(labels)
        words = rng.sample(FILLER, 4) + [rng.choice(CUES[label % 2])]
        rng.shuffle(words)
        lines.append(" ".join(words) + "\t" + labels[label])
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return str(path)


def config(tmp_path, **overrides):
    """A tiny fine-tuning config; by default on 64 training and 16
    validation examples written into `tmp_path`."""
    if "data" not in overrides:
        overrides["data"] = (write_labelled(tmp_path / "train.tsv", 64),)
    if "validation_data" not in overrides:
        overrides["validation_data"] = (
            write_labelled(tmp_path / "dev.tsv", 16, seed=1),)
    values = dict(
        task="classification",
        output_dir=str(tmp_path / "run"),
        batch_size=8, max_steps=4, eval_every=2, learning_rate=3e-3,
        jit_compile="false", verbose=0, **TINY,
    )
    values.update(overrides)
    return make_config(config_class=FinetuneConfig, **values)


def strict_json(path):
    def refuse(constant):
        raise ValueError(f"{constant} is not JSON")

    with open(path, encoding="utf-8") as f:
        return json.loads(f.read(), parse_constant=refuse)


# --- Data (fast) ---


def test_validation_split_is_seeded_stratified_and_in_file_order():
    labels = np.array([0] * 30 + [1] * 10 + [2] * 2, np.int32)
    data = LabelledData([f"t{i}" for i in range(42)], labels, ["a", "b", "c"])
    train, held = split_validation(data, 0.25, seed=3)
    again_train, again_held = split_validation(data, 0.25, seed=3)
    assert held.texts == again_held.texts and train.texts == again_train.texts
    assert held.texts != split_validation(data, 0.25, seed=4)[1].texts
    # round(0.25 * count) of each class, but one always stays to train.
    assert np.bincount(held.labels, minlength=3).tolist() == [8, 2, 0]
    assert np.bincount(train.labels, minlength=3).tolist() == [22, 8, 2]
    assert sorted(held.texts + train.texts) == sorted(data.texts)
    order = [int(t[1:]) for t in held.texts]
    assert order == sorted(order)


def test_too_few_examples_to_hold_out(tmp_path):
    data = LabelledData(["a", "b"], np.array([0, 1], np.int32), ["0", "1"])
    with pytest.raises(UserError, match="too few to hold out"):
        split_validation(data, 0.1, seed=0)


def test_run_data_from_a_split_and_from_a_validation_file(tmp_path):
    split = read_run_data(config(tmp_path, validation_data=()))
    assert (split.train_examples, split.validation_examples) == (58, 6)
    assert split.label_names == list(LABELS)
    given = read_run_data(config(tmp_path))
    assert (given.train_examples, given.validation_examples) == (64, 16)


def test_the_validation_labels_must_be_training_labels(tmp_path):
    dev = write_labelled(tmp_path / "odd.tsv", 6, labels=("negative", "meh"))
    with pytest.raises(UserError, match="label 'meh' at line 3 .* not one of "
                       "the training labels"):
        read_run_data(config(tmp_path, validation_data=(dev,)))


def test_one_training_file(tmp_path):
    train = write_labelled(tmp_path / "a.tsv", 8)
    with pytest.raises(UserError, match="one labelled file .* names 2"):
        read_run_data(config(tmp_path, data=(train, train)))


def test_scores_and_their_text():
    logits = np.log(np.array([[0.8, 0.2], [0.4, 0.6], [0.3, 0.7]]))
    figures = scores(logits, [0, 0, 1], 2)
    expected_loss = -(np.log(0.8) + np.log(0.4) + np.log(0.7)) / 3
    assert figures["loss"] == pytest.approx(expected_loss)
    assert figures["accuracy"] == pytest.approx(2 / 3)
    assert figures["confusion_matrix"] == [[1, 1], [0, 1]]
    text = format_confusion(figures["confusion_matrix"], ["neg", "pos"])
    assert text.splitlines()[1].split() == ["neg", "pos"]
    assert text.splitlines()[2].split() == ["neg", "1", "1"]
    answer = {"label": "pos", "probability": 0.61234, "text": "so good"}
    assert TASK.format_prediction(answer) == "pos\t0.6123\tso good"


def test_from_scratch_is_a_bidirectional_mean_pooling_classifier(tmp_path):
    from keras_tfm.tokenizers import WordPieceTokenizer

    settings = config(tmp_path, tokenizer="wordpiece", vocabulary_size=60)
    tokenizer = TASK.build_tokenizer(settings)
    data = TASK.load_data(settings, tokenizer, None)
    assert isinstance(tokenizer, WordPieceTokenizer)
    assert tokenizer.unk_id not in tokenizer.encode("so lovely")
    model = TASK.build_model(settings, tokenizer, data, None)
    assert model.causal is False and model.pooling == "mean"
    assert model.vocabulary_size == tokenizer.vocabulary_size
    assert model.num_classes == 2 and model.max_sequence_length == 32
    frozen = TASK.trainable_model(
        model, config(tmp_path, freeze_backbone=True))
    assert [w.path.split("/")[-2:] for w in frozen.trainable_weights] == [
        ["classifier", "kernel"], ["classifier", "bias"]]


def test_another_tasks_run_is_refused(tmp_path):
    run = tmp_path / "translation"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"task": "translation"}))
    with pytest.raises(UserError, match="a translation run, not a "
                       "classification run"):
        TASK.evaluate_run(str(run))
    with pytest.raises(UserError, match="not a classification run"):
        TASK.predict_run(str(run), ["x"])


# --- Runs (slow) ---


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory, shakespeare_path):
    """Tiny pre-training runs, `{"causal": dir, "masked": dir}`."""
    runs = {}
    for objective in ("causal", "masked"):
        path = str(tmp_path_factory.mktemp("pretrain") / objective)
        train(make_config("tiny", data=[shakespeare_path], output_dir=path,
                          objective=objective, max_steps=2, eval_every=2,
                          sample_tokens=0, verbose=0))
        runs[objective] = path
    return runs


@pytest.fixture(scope="module")
def finished(pretrained, tmp_path_factory):
    """A classification run fine-tuned from the causal run."""
    tmp = tmp_path_factory.mktemp("finetune")
    settings = with_init_architecture(
        config(tmp, init=pretrained["causal"], max_steps=6, eval_every=3)
    )
    metrics = finetune(settings, TASK)
    return settings, metrics


@pytest.mark.slow
def test_a_run_writes_complete_metrics(finished):
    settings, metrics = finished
    run = settings.output_dir
    written = strict_json(os.path.join(run, "metrics.json"))
    for key in ("val_accuracy", "val_loss", "val_macro_f1", "labels",
                "confusion_matrix", "init", "steps", "train_seconds"):
        assert key in written, key
    assert written["labels"] == list(LABELS)
    assert written["init"] == settings.init and written["steps"] == 6
    matrix = np.array(written["confusion_matrix"])
    assert matrix.shape == (2, 2) and matrix.sum() == 16
    assert written["val_accuracy"] == pytest.approx(np.trace(matrix) / 16)
    assert 0 < written["val_loss"] < 5 and written["train_seconds"] > 0
    assert strict_json(os.path.join(run, "labels.json")) == list(LABELS)
    summary = TASK.format_metrics(written).splitlines()
    assert summary[0].startswith(
        f"validation: accuracy {written['val_accuracy']:.4f}, macro F1 ")
    assert summary[1].startswith("confusion matrix")
    with open(os.path.join(run, "history.csv")) as f:
        header, *rows = f.read().splitlines()
    assert header.split(",") == list(TASK.history_columns)
    assert [row.split(",")[0] for row in rows] == ["3", "6"]
    for name in ("model.keras", "config.json", "tokenizer", "curves.png"):
        assert os.path.exists(os.path.join(run, name)), name


@pytest.mark.slow
@pytest.mark.parametrize("objective", ["causal", "masked"])
def test_init_loads_the_backbone_before_the_first_step(
    pretrained, objective, tmp_path
):
    settings = with_init_architecture(
        config(tmp_path, init=pretrained[objective]))
    tokenizer = load_tokenizer(os.path.join(settings.init, "tokenizer"))
    data = TASK.load_data(settings, tokenizer, None)
    lm = load_init_model(settings.init)
    model = TASK.build_model(settings, tokenizer, data, lm)
    assert model.causal is (objective == "causal")
    assert model.pooling == ("last" if objective == "causal" else "mean")
    pairs = [(model.token_embedding.embeddings, lm.token_embedding.embeddings)]
    pairs += list(zip(model.encoder.weights, lm.encoder.weights))
    pairs += list(zip(model.position_layer.weights, lm.position_layer.weights))
    assert len(pairs) > 10
    for own, pre_trained in pairs:
        assert own.path.split("/", 1)[1] == pre_trained.path.split("/", 1)[1]
        np.testing.assert_array_equal(np.asarray(own), np.asarray(pre_trained))
    # The comparison can fail: a classifier from scratch differs.
    scratch = TASK.build_model(settings, tokenizer, data, None)
    assert not np.allclose(np.asarray(scratch.token_embedding.embeddings),
                           np.asarray(lm.token_embedding.embeddings))


@pytest.mark.slow
def test_a_frozen_backbone_is_the_pre_trained_one_after_training(
    pretrained, tmp_path
):
    settings = with_init_architecture(config(
        tmp_path, init=pretrained["masked"], freeze_backbone=True,
        max_steps=2))
    metrics = finetune(settings, TASK)
    assert metrics["trainable_parameters"] == 32 * 2 + 2
    model = keras.models.load_model(os.path.join(settings.output_dir,
                                                 "model.keras"))
    lm = load_init_model(settings.init)
    pairs = [(model.token_embedding.embeddings, lm.token_embedding.embeddings)]
    pairs += list(zip(model.encoder.weights, lm.encoder.weights))
    for own, pre_trained in pairs:
        np.testing.assert_array_equal(np.asarray(own), np.asarray(pre_trained))


@pytest.mark.slow
def test_evaluate_and_predict_a_finished_run(finished):
    settings, metrics = finished
    run = settings.output_dir
    results = TASK.evaluate_run(run)
    assert results["accuracy"] == pytest.approx(metrics["val_accuracy"])
    assert results["loss"] == pytest.approx(metrics["val_loss"], abs=1e-6)
    assert results["confusion_matrix"] == metrics["confusion_matrix"]
    text = TASK.format_evaluation(results)
    assert text.startswith(f"accuracy {metrics['val_accuracy']:.4f}, macro F1")
    assert "confusion matrix" in text
    on_file = TASK.evaluate_run(run, [settings.data[0]])
    assert on_file["examples"] == 64

    texts = ["so good", "the film was awful and dull " * 5, ""]
    answers = TASK.predict_run(run, texts, batch_size=2)
    assert [a["text"] for a in answers] == texts
    for answer in answers:
        assert answer["label"] in LABELS
        assert sum(answer["probabilities"].values()) == pytest.approx(1.0)
        assert answer["probability"] == max(answer["probabilities"].values())


@pytest.mark.slow
def test_padding_never_changes_a_prediction(finished):
    settings, _ = finished
    model = keras.models.load_model(os.path.join(settings.output_dir,
                                                 "model.keras"))
    tokenizer = load_tokenizer(os.path.join(settings.output_dir, "tokenizer"))
    texts = ["so good", "a poor plot"]
    padded = next(iter(classification_dataset(
        texts, None, tokenizer, 32, batch_size=2, training=False))).numpy()
    for row, text in zip(padded, texts):
        ids = [tokenizer.eos_id] + tokenizer.encode(text)
        assert row[len(ids):].tolist() == [0] * (32 - len(ids))
        unpadded = np.asarray(model(np.array([ids], np.int32)))
        np.testing.assert_allclose(np.asarray(model(row[None])), unpadded,
                                   atol=1e-5)


@pytest.mark.slow
def test_a_run_killed_after_its_last_checkpoint_resumes(finished, tmp_path):
    settings, metrics = finished
    copy = str(tmp_path / "copy")
    shutil.copytree(settings.output_dir, copy)
    # Killed while saving the model: no model.keras, no metrics.json.
    os.remove(os.path.join(copy, "metrics.json"))
    os.remove(os.path.join(copy, "model.keras"))
    resumed = finetune(
        make_config(config_class=FinetuneConfig,
                    **{**settings.to_dict(), "output_dir": copy}),
        TASK,
    )
    assert resumed["resumed_from_step"] == 6
    assert resumed["confusion_matrix"] == metrics["confusion_matrix"]
    for key in ("val_accuracy", "val_loss", "val_macro_f1"):
        assert resumed[key] == pytest.approx(metrics[key]), key


@pytest.mark.slow
def test_sst2_slice_from_scratch(tmp_path):
    train_path = shared_data("sst2", "train.tsv")
    dev_path = shared_data("sst2", "dev.tsv")
    for source, name, rows in ((train_path, "train.tsv", 400),
                               (dev_path, "dev.tsv", 100)):
        with open(source, encoding="utf-8") as f:
            lines = [next(f) for _ in range(rows + 1)]
        (tmp_path / name).write_text("".join(lines), encoding="utf-8")
    settings = config(tmp_path, data=(str(tmp_path / "train.tsv"),),
                      validation_data=(str(tmp_path / "dev.tsv"),),
                      max_steps=10, eval_every=10, batch_size=16)
    metrics = finetune(settings, TASK)
    assert metrics["labels"] == ["0", "1"]
    assert np.array(metrics["confusion_matrix"]).sum() == 100
    assert metrics["validation_examples"] == 100
    assert TASK.evaluate_run(settings.output_dir)["accuracy"] == (
        pytest.approx(metrics["val_accuracy"]))


# --- Bad input through the command line (slow: a fresh process) ---


def snapshot(root):
    return sorted(
        (os.path.relpath(os.path.join(directory, name), root),
         os.path.getsize(os.path.join(directory, name)))
        for directory, _, names in os.walk(root) for name in names
    )


# Runs `[case, cwd, argv]` triples through the command line's entry point
# (what the `keras-tfm` script calls) in one fresh process, each case's
# stderr captured at its file descriptor (C++ logs too): the first case
# starts TensorFlow as `keras-tfm` does, and the others save a start each
# (about 10 CPU seconds on two cores).
DRIVER = r'''
import json, os, sys, tempfile, traceback
from keras_tfm.cli import main

results = {}
for case, cwd, argv in json.loads(sys.argv[1]):
    os.chdir(cwd)
    with tempfile.TemporaryFile() as captured:
        sys.stderr.flush()
        saved = os.dup(2)
        os.dup2(captured.fileno(), 2)
        try:
            status = main(argv)
        except SystemExit as e:
            status = e.code
        except BaseException:
            traceback.print_exc()
            status = None
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
        captured.seek(0)
        results[case] = [status, captured.read().decode("utf-8", "replace")]
print(json.dumps(results))
'''


def run_all(commands):
    """Runs `{case: (arguments, cwd)}` as `keras-tfm` commands in a fresh
    process; returns `{case: (status, stderr)}`."""
    cases = [[case, str(cwd), args] for case, (args, cwd) in commands.items()]
    result = subprocess.run([sys.executable, "-c", DRIVER, json.dumps(cases)],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    answers = json.loads(result.stdout.strip().splitlines()[-1])
    return {case: tuple(answer) for case, answer in answers.items()}


def assert_one_line_error(status, stderr, command, fragment):
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert status == 2, stderr[-3000:]
    assert "Traceback" not in stderr
    assert len(lines) == 1, stderr[-3000:]
    assert lines[0].startswith(f"keras-tfm {command}: error: "), lines[0]
    assert fragment in lines[0], lines[0]


BAD_INPUT = {
    "no label column": (
        lambda tmp: write_labelled(tmp / "data.tsv", 6,
                                   header="sentence\tstars"),
        ["--data", "data.tsv"], "has no column 'label'"),
    "one class": (
        lambda tmp: write_labelled(tmp / "data.tsv", 6, labels=("pos",)),
        ["--data", "data.tsv"], "training needs at least two classes"),
    "empty file": (lambda tmp: (tmp / "data.tsv").write_text(""),
                   ["--data", "data.tsv"], "has no rows"),
    "unseen validation label": (
        lambda tmp: (write_labelled(tmp / "data.tsv", 6),
                     write_labelled(tmp / "dev.tsv", 6,
                                    labels=("negative", "meh"))),
        ["--data", "data.tsv", "--validation-data", "dev.tsv"],
        "label 'meh' at line 3 of 'dev.tsv' is not one of the training "
        "labels"),
}


@pytest.fixture(scope="module")
def cli_results(tmp_path_factory, finished):
    """Every bad command's `(status, stderr, files before, files after)`.

    `--init` naming no run and `predict` on a pre-training run go through
    the same checks for classification; tests/cli/test_bad_input.py runs
    them.
    """
    commands, watched = {}, {}
    for case, (setup, args, _) in BAD_INPUT.items():
        tmp = tmp_path_factory.mktemp("bad")
        setup(tmp)
        watched[case] = tmp
        commands[case] = (["finetune", "--task", "classification", *args,
                           "--output-dir", "run"], tmp)
    # A file with a label the run was not trained on.
    tmp = tmp_path_factory.mktemp("other")
    dev = write_labelled(tmp / "dev.tsv", 6, labels=("negative", "meh"))
    commands["evaluate with an unseen label"] = (
        ["evaluate", finished[0].output_dir, "--data", dev], tmp)
    watched["evaluate with an unseen label"] = finished[0].output_dir
    before = {case: snapshot(path) for case, path in watched.items()}
    return {case: (*result, before[case], snapshot(watched[case]))
            for case, result in run_all(commands).items()}


OTHER_COMMANDS = {
    "evaluate with an unseen label": ("evaluate", "label 'meh' at line 3 of"),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", list(BAD_INPUT))
def test_bad_input_is_one_line_and_changes_nothing(case, cli_results):
    status, stderr, before, after = cli_results[case]
    assert_one_line_error(status, stderr, "finetune", BAD_INPUT[case][2])
    assert after == before


@pytest.mark.slow
@pytest.mark.parametrize("case", list(OTHER_COMMANDS))
def test_runs_and_files_of_another_kind_are_refused(case, cli_results):
    status, stderr, before, after = cli_results[case]
    assert_one_line_error(status, stderr, *OTHER_COMMANDS[case])
    assert after == before
