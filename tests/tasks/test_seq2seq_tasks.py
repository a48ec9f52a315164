"""Translation and summarization fine-tuning: short real runs, their
metrics.json, `--init` from a pre-training run, and every bad input through
the real command line."""

import csv
import gzip
import json
import os
import random
import subprocess

import numpy as np
import pytest
from conftest import shared_data

from keras_tfm import tokenizers
from keras_tfm.errors import UserError
from keras_tfm.tasks.config import FinetuneConfig
from keras_tfm.tasks.finetune import finetune
from keras_tfm.tasks.finetune import load_init_model
from keras_tfm.tasks.finetune import with_init_architecture
from keras_tfm.tasks.seq2seq import SUMMARIZATION
from keras_tfm.tasks.seq2seq import TRANSLATION
from keras_tfm.training import make_config
from keras_tfm.training import train

pytestmark = pytest.mark.slow

WORDS = ("the a cat dog sat ran on under mat tree big small red blue house "
         "garden").split()
TINY = dict(num_layers=1, num_heads=2, hidden_dim=32, intermediate_dim=64,
            sequence_length=32, jit_compile="false", verbose=0)
COMMON_KEYS = {
    "val_loss", "val_accuracy", "val_cross_entropy", "val_perplexity",
    "decoding", "validation_source", "val_samples", "train_examples",
    "validation_examples", "steps", "task", "init", "train_loss",
    "train_target_unknown_rate", "train_source_truncated", "vocabulary_size",
}


def toy_pairs(count, seed=0):
    """Sentences and their targets: the words reversed, upper-cased."""
    rng = random.Random(seed)
    sources = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 7)))
               for _ in range(count)]
    return sources, [" ".join(reversed(s.split())).upper() for s in sources]


def write_lines(path, lines):
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return str(path)


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    root = tmp_path_factory.mktemp("toy")
    sources, targets = toy_pairs(120)
    summaries = root / "summaries.jsonl"
    with open(summaries, "w", encoding="utf-8") as f:
        for source, target in zip(sources, targets):
            f.write(json.dumps({"source": [source, "That is all."],
                                "target": [target.lower(), source]}) + "\n")
    return {
        "translation": (write_lines(root / "train.src", sources),
                        write_lines(root / "train.tgt", targets)),
        "summarization": (str(summaries),),
        "root": root,
    }


@pytest.fixture(scope="module")
def pretrain_run(tmp_path_factory, shakespeare_path):
    """A tiny causal LM with a WordPiece tokenizer learned on English."""
    path = str(tmp_path_factory.mktemp("pretrain") / "run")
    train(make_config("tiny", data=[shakespeare_path], output_dir=path,
                      tokenizer="wordpiece", max_steps=4, eval_every=2,
                      sample_tokens=0, verbose=0))
    return path


def finetune_config(**values):
    return make_config(config_class=FinetuneConfig, **{
        **TINY, "batch_size": 8, "max_steps": 3, "eval_every": 3,
        "eval_batches": 1, "target_sequence_length": 16, **values,
    })


def history_header(run_dir):
    with open(os.path.join(run_dir, "history.csv")) as f:
        return next(csv.reader(f))


def test_translation_from_scratch(toy, tmp_path):
    run_dir = str(tmp_path / "run")
    config = finetune_config(
        task="translation", data=toy["translation"], output_dir=run_dir,
        tokenizer="wordpiece", vocabulary_size=120, beam_size=2,
    )
    metrics = finetune(config, TRANSLATION)
    with open(os.path.join(run_dir, "metrics.json")) as f:
        saved = json.load(f)
    assert COMMON_KEYS | {"val_bleu", "bleu_signature", "val_bleu_precisions",
                          "val_bleu_brevity_penalty"} <= set(saved)
    assert saved["val_bleu"] == metrics["val_bleu"]
    assert 0 <= saved["val_bleu"] <= 100
    assert saved["bleu_signature"].startswith("nrefs:1|case:mixed|")
    assert saved["decoding"] == {"beam_size": 2, "length_penalty": 0.6,
                                 "max_length": 16}
    # 0.1 of 120 pairs held out.
    assert (saved["train_examples"], saved["validation_examples"]) == (108, 12)
    assert len(saved["val_samples"]) == 5
    assert set(saved["val_samples"][0]) == {"source", "reference", "output"}
    assert history_header(run_dir) == [
        "step", "train_loss", "val_loss", "val_accuracy", "learning_rate",
        "examples_seen", "elapsed_seconds",
    ]
    # One vocabulary learned from sources and targets together.
    tokenizer = tokenizers.load_tokenizer(os.path.join(run_dir, "tokenizer"))
    assert saved["vocabulary_size"] == tokenizer.vocabulary_size
    vocabulary = set(tokenizer.vocabulary)
    assert {"garden", "GARDEN"} <= {w.strip() for w in vocabulary}
    for name in ("model.keras", "curves.png", "config.json"):
        assert os.path.isfile(os.path.join(run_dir, name))
    assert "BLEU" in TRANSLATION.format_metrics(metrics)


def test_summarization_from_scratch(toy, tmp_path):
    run_dir = str(tmp_path / "run")
    config = finetune_config(
        task="summarization", data=toy["summarization"], output_dir=run_dir,
        validation_fraction=0.2, label_smoothing=0.1, beam_size=1,
    )
    metrics = finetune(config, SUMMARIZATION)
    assert COMMON_KEYS | {"val_rouge1", "val_rouge2", "val_rougeL"} <= set(
        metrics)
    assert "val_bleu" not in metrics
    assert 0 <= metrics["val_rouge2"] <= metrics["val_rouge1"] <= 100
    # With label smoothing the loss (the objective) is above the plain
    # cross-entropy.
    assert metrics["val_loss"] > metrics["val_cross_entropy"]
    assert metrics["validation_examples"] == 24
    assert metrics["vocabulary_size"] == 260  # bytes
    # The second reference of each document counts too.
    assert metrics["val_samples"][0]["reference"] == (
        metrics["val_samples"][0]["reference"].lower())


def test_init_starts_encoder_and_decoder_from_the_lm(pretrain_run, toy,
                                                     tmp_path):
    config = with_init_architecture(finetune_config(
        task="translation", data=toy["translation"], init=pretrain_run,
        decoder_from_init=True, output_dir=str(tmp_path / "run"),
    ))
    lm = load_init_model(pretrain_run)
    tokenizer = tokenizers.load_tokenizer(
        os.path.join(pretrain_run, "tokenizer"))
    TRANSLATION.check_inputs(config)
    data = TRANSLATION.load_data(config, tokenizer, None)
    model = TRANSLATION.build_model(config, tokenizer, data, lm)
    # Sized by the tokenizer, not by config.json's WordPiece target.
    assert model.vocabulary_size == tokenizer.vocabulary_size
    assert lm.vocabulary_size == tokenizer.vocabulary_size
    np.testing.assert_array_equal(model.token_embedding.embeddings,
                                  lm.token_embedding.embeddings)
    for ours, theirs in zip(model.encoder.weights, lm.encoder.weights):
        np.testing.assert_array_equal(ours, theirs)
    assert len(model.encoder.weights) == len(lm.encoder.weights)
    for block, lm_block in zip(model.decoder.blocks, lm.encoder.blocks):
        for ours, theirs in zip(block.self_attention.weights,
                                lm_block.attention.weights):
            np.testing.assert_array_equal(ours, theirs)

    # And the whole run, a few steps from there.
    metrics = finetune(config, TRANSLATION)
    assert metrics["init"] == pretrain_run
    assert metrics["vocabulary_size"] == tokenizer.vocabulary_size


def test_multi30k_slice(tmp_path):
    directory = shared_data("multi30k")

    def head(split, language, count):
        # The first lines of a split, gzipped as they come.
        path = tmp_path / f"{split}.{language}.gz"
        with gzip.open(f"{directory}/{split}.{language}.gz", "rt",
                       encoding="utf-8") as f:
            lines = [next(f) for _ in range(count)]
        with gzip.open(path, "wt", encoding="utf-8") as f:
            f.write("".join(lines))
        return str(path)

    metrics = finetune(finetune_config(
        task="translation", data=(head("train", "en", 200),
                                  head("train", "de", 200)),
        validation_data=(head("val", "en", 50), head("val", "de", 50)),
        tokenizer="wordpiece", vocabulary_size=400,
        output_dir=str(tmp_path / "run"), beam_size=1,
        target_sequence_length=8,
    ), TRANSLATION)
    assert metrics["validation_examples"] == 50
    assert metrics["train_examples"] == 200
    assert metrics["validation_source"].endswith("val.en.gz -> " + str(
        tmp_path / "val.de.gz"))
    assert 0 <= metrics["val_bleu"] <= 100


def test_scitldr_slice(tmp_path):
    path = tmp_path / "train.jsonl"
    with open(shared_data("scitldr", "train.jsonl"), encoding="utf-8") as f:
        path.write_text("".join(next(f) for _ in range(40)),
                        encoding="utf-8")
    metrics = finetune(finetune_config(
        task="summarization", data=(str(path),), sequence_length=64,
        output_dir=str(tmp_path / "run"), validation_fraction=0.25,
        beam_size=1, target_sequence_length=8,
    ), SUMMARIZATION)
    assert metrics["validation_examples"] == 10
    # Abstracts are longer than 64 bytes: every source is cut.
    assert metrics["train_source_truncated"] == 1.0
    assert 0 <= metrics["val_rougeL"] <= 100


# --- Bad input through the command line ---


def snapshot(root):
    return sorted(
        (os.path.relpath(os.path.join(d, n), root),
         os.stat(os.path.join(d, n)).st_mtime_ns)
        for d, _, names in os.walk(root) for n in names
    )


BAD_INPUTS = {
    "line counts differ": (
        ["--task", "translation", "--data", "{root}/train.src",
         "{root}/short.tgt"],
        ["has 120 lines", "has 119", "line-aligned"],
    ),
    "jsonl line without target": (
        ["--task", "summarization", "--data", "{root}/no_target.jsonl"],
        ["line 2", "no field 'target'"],
    ),
    "empty split": (
        ["--task", "translation", "--data", "{root}/three.src",
         "{root}/three.tgt"],
        ["3 examples", "0 for validation"],
    ),
    "beam size 0": (
        ["--task", "translation", "--data", "{root}/train.src",
         "{root}/train.tgt", "--beam-size", "0"],
        ["beam_size must be a positive integer"],
    ),
    "init tokenizer cannot code the targets": (
        ["--task", "translation", "--data", "{root}/train.src",
         "{root}/greek.tgt", "--init", "{init}"],
        ["[UNK]", "training targets", "limit is 1%", "without --init"],
    ),
}


@pytest.fixture(scope="module")
def bad_input_results(toy, pretrain_run):
    """Every bad-input case run at once, each in its own directory."""
    root = toy["root"]
    sources, targets = toy_pairs(120)
    write_lines(root / "short.tgt", targets[:-1])
    write_lines(root / "three.src", sources[:3])
    write_lines(root / "three.tgt", targets[:3])
    write_lines(root / "greek.tgt",
                ["η γάτα κάθεται στο χαλί" for _ in targets])
    write_lines(root / "no_target.jsonl", [
        json.dumps({"source": "a", "target": "b"}),
        json.dumps({"source": "c", "summary": "d"}),
    ])
    before = snapshot(root)
    processes = {}
    for name, (arguments, _) in BAD_INPUTS.items():
        output = root / ("out-" + name.replace(" ", "-"))
        command = ["keras-tfm", "finetune"] + [
            a.format(root=root, init=pretrain_run) for a in arguments
        ] + ["--output-dir", str(output), "--max-steps", "2",
             "--jit-compile", "false"]
        processes[name] = (subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True), output)
    results = {}
    for name, (process, output) in processes.items():
        stdout, stderr = process.communicate(timeout=300)
        results[name] = (process.returncode, stderr, output)
    return results, before, snapshot(root)


@pytest.mark.parametrize("name", list(BAD_INPUTS))
def test_bad_input_is_one_line_exit_2_and_creates_nothing(bad_input_results,
                                                          name):
    results, before, after = bad_input_results
    returncode, stderr, output = results[name]
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert returncode == 2, stderr[-2000:]
    assert "Traceback" not in stderr
    assert len(lines) == 1, stderr
    for fragment in BAD_INPUTS[name][1]:
        assert fragment in lines[0]
    assert not os.path.exists(output)
    assert after == before


def test_evaluate_and_predict_refuse_beam_size_0(tmp_path):
    # (The command line's own flag check is argparse's; this is the
    # library's, for callers that bypass it.)
    with pytest.raises(UserError, match="--beam-size must be a positive"):
        TRANSLATION.evaluate_run(str(tmp_path), beam_size=0)
    with pytest.raises(UserError, match="--beam-size must be a positive"):
        SUMMARIZATION.predict_run(str(tmp_path), ["x"], beam_size=0)
    assert os.listdir(tmp_path) == []
