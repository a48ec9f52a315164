"""Where a pre-training run's text comes from: files in memory, or a
directory written by `keras-tfm prepare`, streamed.

Both give the loop the same things: the training stream from a step on,
the validation windows, and the corpus figures for `metrics.json`.
"""

import os

import numpy as np

from keras_tfm import data
from keras_tfm import files
from keras_tfm.data.prepared import STREAM_VERSION
from keras_tfm.data.prepared import is_prepared_directory
from keras_tfm.data.prepared import open_prepared
from keras_tfm.errors import UserError
from keras_tfm.metrics import unigram_bits_per_byte
from keras_tfm.metrics import unigram_bits_per_byte_from_counts

# A run trained on a prepared corpus records it here: evaluation and
# export refuse held-out figures on a corpus that changed since.
CORPUS_FILE = "corpus.json"
# Tokens of the training split the unigram baseline of a prepared corpus
# is counted on (the whole split for smaller corpora).
UNIGRAM_SAMPLE_TOKENS = 20_000_000


def prepared_directory(patterns):
    """The prepared directory `patterns` names, or `None` for text files.

    A prepared directory must be the only `--data` entry.
    """
    directories = [p for p in patterns if is_prepared_directory(p)]
    if not directories:
        return None
    if len(patterns) > 1:
        raise UserError(
            f"'{directories[0]}' is a prepared corpus: pass it as the only "
            "--data (prepare other files into it with `keras-tfm prepare`)."
        )
    return directories[0]


class MemoryCorpus:
    """Text files (or strings) tokenized in memory and split by blocks."""

    record = None

    def __init__(self, config, tokenizer, texts):
        self.lm_data = data.prepare_lm_data(
            tokenizer,
            texts,
            config.sequence_length,
            config.validation_fraction,
            config.seed,
        )
        self.validation = self.lm_data.validation
        self.calibration = self.lm_data.train

    def train_dataset(self, config, tokenizer, start_batch, num_workers=1):
        return data.make_dataset(
            self.lm_data.train,
            config.batch_size,
            config.objective,
            tokenizer,
            training=True,
            seed=config.seed,
            start_step=start_batch,
        )

    def stats(self, tokenizer):
        stats = self.lm_data.stats
        return {
            "corpus_tokens": stats["corpus_tokens"],
            "corpus_bytes": stats["corpus_bytes"],
            "train_sequences": stats["train_sequences"],
            "validation_sequences": stats["validation_sequences"],
            "unigram_bits_per_byte": unigram_bits_per_byte(
                self.lm_data.train, self.validation,
                tokenizer.vocabulary_size,
            ),
        }


class PreparedSource:
    """A prepared corpus: shards streamed from disk, memory flat in its
    size; its validation split is the one `prepare` chose."""

    def __init__(self, directory, sequence_length, verify=True):
        self.directory = directory
        self.corpus = open_prepared(directory, verify=verify)
        self.sequence_length = sequence_length
        self.validation = self.corpus.validation_windows(sequence_length)
        self.record = {
            "directory": os.path.abspath(directory),
            "manifest_sha256": self.corpus.manifest_hash,
            "stream_version": STREAM_VERSION,
        }

    def tokenizer(self):
        return self.corpus.tokenizer()

    @property
    def calibration(self):
        """The first windows of the first training shard (export's int8
        calibration text)."""
        shard = self.corpus.shards("train")[0]
        ids = np.fromfile(os.path.join(self.directory, shard["file"]),
                          self.corpus.token_dtype, count=64 * (
                              self.sequence_length + 1)).astype(np.int32)
        return data.pack_windows(ids, np.ones_like(ids), self.sequence_length,
                                 self.corpus.manifest["tokenizer"]["unk_id"])

    def train_dataset(self, config, tokenizer, start_batch, num_workers=1):
        return self.corpus.train_dataset(
            config.sequence_length,
            config.batch_size,
            seed=config.seed,
            start_step=start_batch,
            objective=config.objective,
            num_workers=num_workers,
        )

    def stats(self, tokenizer):
        stats = self.corpus.stats
        return {
            "corpus_tokens": stats["tokens"],
            "corpus_bytes": stats["bytes"],
            "corpus_documents": stats["documents"],
            "validation_sequences": len(self.validation),
            "unigram_bits_per_byte": self._unigram(tokenizer),
            "data_manifest_sha256": self.corpus.manifest_hash,
        }

    def _unigram(self, tokenizer):
        counts = np.zeros(tokenizer.vocabulary_size, np.float64)
        remaining = UNIGRAM_SAMPLE_TOKENS
        for shard in self.corpus.shards("train"):
            ids = np.fromfile(os.path.join(self.directory, shard["file"]),
                              self.corpus.token_dtype, count=remaining)
            counts += np.bincount(ids, minlength=len(counts))[: len(counts)]
            remaining -= len(ids)
            if remaining <= 0:
                break
        return unigram_bits_per_byte_from_counts(counts, self.validation)


def check_resumable_stream(run_dir):
    """Raises `UserError` if the run began streaming its prepared corpus
    in an order this keras-tfm no longer produces (see
    `keras_tfm.data.prepared.STREAM_VERSION`): resumed, it would see
    other windows than a run that was never stopped."""
    recorded = _read_record(run_dir)
    if recorded is None:
        return
    version = recorded.get("stream_version", 1)
    if version != STREAM_VERSION:
        raise UserError(
            f"'{run_dir}' was started by a keras-tfm that streams prepared "
            f"corpora in another order (version {version}, this one "
            f"{STREAM_VERSION}): resuming would not continue its data "
            "order; finish it with that keras-tfm, or start over with "
            "--restart."
        )


def _read_record(run_dir):
    path = os.path.join(run_dir, CORPUS_FILE)
    if not os.path.isfile(path):
        return None
    try:
        return files.read_json(path, "corpus record")
    except (OSError, ValueError) as e:
        raise UserError(
            f"{e}: the run directory '{run_dir}' is damaged; restore "
            f"{CORPUS_FILE} or retrain with --restart."
        ) from None


def check_recorded_corpus(run_dir, corpus):
    """Raises `UserError` if the run was trained on the prepared corpus
    `corpus` (an opened, verified `PreparedCorpus`) and its files changed
    since. (Another prepared corpus is not checked: its validation split
    is as held out as it ever was.)"""
    recorded = _read_record(run_dir)
    if recorded is None:
        return
    directory = corpus.directory
    if os.path.realpath(directory) != os.path.realpath(
        recorded.get("directory", "")
    ):
        return
    if corpus.manifest_hash != recorded.get("manifest_sha256"):
        raise UserError(
            f"the prepared corpus '{directory}' changed since '{run_dir}' "
            "trained on it (its manifest hash differs): held-out figures on "
            "it would not be held out; prepare a fresh evaluation corpus or "
            "restore the original."
        )
