"""Pre-training on a prepared corpus end to end: the run records the
corpus, resumes exactly, and refuses a corpus that changed or a stream
order that did (the stream itself: tests/data/test_prepared.py)."""

import json
import os

import numpy as np
import pytest

from keras_tfm.data.prepare import prepare
from keras_tfm.errors import UserError
from keras_tfm.tasks import evaluate_run
from keras_tfm.training import checkpoints
from keras_tfm.training import make_config
from keras_tfm.training import train

pytestmark = pytest.mark.slow


def write_corpus(path, text, documents=12):
    size = len(text) // documents
    with open(path, "w", encoding="utf-8") as f:
        for i in range(documents):
            f.write(json.dumps({"text": text[i * size:(i + 1) * size]}) + "\n")


def prepare_into(directory, source):
    prepare([str(source)], str(directory), shard_tokens=20_000,
            validation_fraction=0.2, seed=0, log=lambda line: None,
            restart=True)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, shakespeare_text):
    root = tmp_path_factory.mktemp("prepared-run")
    write_corpus(root / "books.jsonl", shakespeare_text[:60_000])
    prepare_into(root / "prepared", root / "books.jsonl")
    return root


def config_for(corpus, run_dir):
    return make_config("tiny", data=[str(corpus / "prepared")],
                       output_dir=str(run_dir), max_steps=6, eval_every=3,
                       checkpoint_every=3, sample_tokens=0, verbose=0)


def unfinish(run_dir, drop_step=None):
    """Makes a finished run look killed (after `drop_step`'s checkpoint
    was lost, if given)."""
    os.remove(run_dir / "metrics.json")
    os.remove(run_dir / "model.keras")
    if drop_step:
        directory = str(run_dir / "checkpoints")
        os.remove(checkpoints.checkpoint_path(directory, drop_step))
        os.remove(checkpoints.manifest_path(directory, drop_step))


def test_a_run_on_a_prepared_corpus_resumes_to_the_same_result(
        corpus, tmp_path):
    whole = train(config_for(corpus, tmp_path / "whole"))
    record = json.loads((tmp_path / "whole" / "corpus.json").read_text())
    manifest = json.loads((corpus / "prepared" / "manifest.json").read_text())
    assert record["manifest_sha256"] == manifest["manifest_sha256"]
    assert whole["data_manifest_sha256"] == manifest["manifest_sha256"]

    run_dir = tmp_path / "killed"
    train(config_for(corpus, run_dir))
    unfinish(run_dir, drop_step=6)
    resumed = train(config_for(corpus, run_dir))
    assert resumed["resumed_from_step"] == 3
    np.testing.assert_allclose(resumed["train_loss"], whole["train_loss"],
                               rtol=1e-5)
    np.testing.assert_allclose(resumed["val_loss"], whole["val_loss"],
                               rtol=1e-5)


def test_a_changed_corpus_or_stream_order_is_refused(corpus, tmp_path):
    run_dir = tmp_path / "run"
    train(config_for(corpus, run_dir))

    # The corpus prepared again from other text: no held-out figures on
    # it, and no resume.
    other = tmp_path / "other.jsonl"
    write_corpus(other, (corpus / "books.jsonl").read_text()[::-1],
                 documents=8)
    prepare_into(tmp_path / "changed", other)
    os.rename(corpus / "prepared", tmp_path / "original")
    os.rename(tmp_path / "changed", corpus / "prepared")
    try:
        for data in (None, [str(corpus / "prepared")]):
            with pytest.raises(UserError, match="changed since"):
                evaluate_run(str(run_dir), data)
        unfinish(run_dir)
        with pytest.raises(UserError, match="changed since"):
            train(config_for(corpus, run_dir))
    finally:
        os.rename(corpus / "prepared", tmp_path / "changed")
        os.rename(tmp_path / "original", corpus / "prepared")

    # The same corpus, but an older stream order (no version recorded):
    # no resume either.
    record_path = run_dir / "corpus.json"
    record = json.loads(record_path.read_text())
    del record["stream_version"]
    record_path.write_text(json.dumps(record))
    with pytest.raises(UserError, match="another order.*--restart"):
        train(config_for(corpus, run_dir))
