"""Reading a corpus written by `keras-tfm prepare`: shards to batches.

A prepared directory holds `manifest.json`, `tokenizer.json` and shards:
`train-00000.tokens`, ..., `validation-00000.tokens` with
`validation-00000.bytes`. A `.tokens` file is raw little-endian token ids
(`uint16` when the vocabulary fits, else `int32`; the manifest's
`token_dtype` says which); documents follow each other, each ended by
`[EOS]`. A `.bytes` file holds, per validation token, the UTF-8 bytes it
covers (`int32`), which makes bits per byte exact. `prepare.json` and each
shard's record (`train-00000.json`) are what a rerun of prepare resumes
from; `manifest.json`, written last, makes the directory whole.

Training reads windows of `sequence_length + 1` tokens straight from the
shard files with `tf.data.FixedLengthRecordDataset`, so the sequence length
is chosen at training time, and under `MultiWorkerMirroredStrategy`
tf.data's auto-sharding gives each worker its own files (see
`PreparedCorpus.train_dataset`).
"""

import hashlib
import json
import os

import numpy as np
import tensorflow as tf

from keras_tfm.data.masking import mask_tokens
from keras_tfm.data.windows import pack_windows
from keras_tfm.errors import UserError
from keras_tfm.tokenizers import load_tokenizer

MANIFEST_FILE = "manifest.json"
# Written first by `prepare`: its settings and inputs, for a rerun.
PLAN_FILE = "prepare.json"
FORMAT = "keras-tfm prepared corpus"
VERSION = 1
SPLITS = ("train", "validation")
BYTE_LENGTH_DTYPE = "int32"
# Passes of the training stream planned ahead; the plan (file order and
# window offsets of each pass) then repeats.
PLAN_PASSES = 64
# Shard files read at once, their windows taken in turn.
CYCLE_FILES = 16
# Windows are shuffled in blocks of about this many tokens in all, shared
# by the files read at once: the stream's memory stays the same whether a
# corpus has 2 shard files or 2,000.
SHUFFLE_TOKENS = 1 << 21
# The training stream's order as a function of (seed, step): raised when
# it changes (version 1 shuffled 1M-token blocks per file), so that a run
# never resumes onto a different order (a run records it in corpus.json).
STREAM_VERSION = 2
# Salts keep the hashes of different uses apart.
_ORDER_SALT, _OFFSET_SALT, _BLOCK_SALT = 1, 2, 3
_MASK64 = (1 << 64) - 1


def stable_hash(*values):
    """A 64-bit hash of non-negative integers (or integer arrays).

    splitmix64's finalizer applied in turn: the same on every platform and
    numpy version, which seeded numpy generators do not promise; the
    shard plan and the validation split depend on it.

    Returns:
        `np.uint64` array of the broadcast shape of `values` (at least
        one-dimensional).
    """
    state = np.zeros((), np.uint64)
    with np.errstate(over="ignore"):
        for value in values:
            if isinstance(value, int):
                value = value & _MASK64
            z = state ^ np.asarray(value, np.uint64)
            z = z + np.uint64(0x9E3779B97F4A7C15)
            z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
            z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
            state = z ^ (z >> np.uint64(31))
    return np.atleast_1d(state)


def manifest_hash(manifest):
    """sha256 of the manifest's canonical JSON, its own hash left out."""
    content = {k: v for k, v in manifest.items() if k != "manifest_sha256"}
    text = json.dumps(content, sort_keys=True, separators=(",", ":"),
                      ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def file_sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def shard_name(split, index, kind="tokens"):
    """`"train-00003.tokens"`: a shard's file (kind `tokens`, `bytes` or
    `json`, the record of a finished shard)."""
    return f"{split}-{index:05d}.{kind}"


def is_prepared_directory(path):
    """Whether `path` is a directory `keras-tfm prepare` wrote (or is
    writing)."""
    return os.path.isdir(path) and any(
        os.path.exists(os.path.join(path, name))
        for name in (MANIFEST_FILE, PLAN_FILE)
    )


def open_prepared(directory, verify=True):
    """Opens a prepared corpus; checks its manifest and its shards.

    Args:
        directory: str. A directory written by `keras-tfm prepare`.
        verify: bool. Also recompute every shard's sha256 (reads every
            shard once); without it only their sizes are checked.

    Returns:
        A `PreparedCorpus`.

    Raises:
        UserError: no finished prepare there, or a manifest that does not
            match itself or its shards.
    """
    path = os.path.join(directory, MANIFEST_FILE)
    if not os.path.isfile(path):
        if os.path.isfile(os.path.join(directory, PLAN_FILE)):
            raise UserError(
                f"the prepare of '{directory}' did not finish: run the same "
                "`keras-tfm prepare` command again to finish it."
            )
        raise UserError(
            f"'{directory}' has no {MANIFEST_FILE}: pass a directory written "
            "by `keras-tfm prepare`."
        )
    try:
        with open(path, encoding="utf-8") as f:
            manifest = json.load(f)
    except ValueError as e:
        raise UserError(
            f"'{path}' is not valid JSON ({e}): prepare the corpus again "
            "with --restart."
        ) from None
    if manifest.get("format") != FORMAT or manifest.get("version") != VERSION:
        raise UserError(
            f"'{path}' is not a version-{VERSION} keras-tfm manifest: "
            "prepare the corpus again with this keras-tfm."
        )
    if manifest.get("manifest_sha256") != manifest_hash(manifest):
        raise UserError(
            f"'{path}' was changed after prepare (its manifest_sha256 does "
            "not match its content): prepare the corpus again with --restart."
        )
    corpus = PreparedCorpus(directory, manifest)
    corpus.verify(hashes=verify)
    return corpus


class PreparedCorpus:
    """A prepared corpus: its manifest, tokenizer, batches and windows.

    Use `open_prepared(directory)`, which checks the files first.

    Attributes:
        directory: str.
        manifest: dict, the parsed `manifest.json`.
        manifest_hash: str. The manifest's sha256 (see `manifest_hash`):
            runs record it to tell later which data they saw.
        token_dtype: `np.dtype` of the shards' token ids.
        stats: dict of `documents`, `tokens`, `bytes` (UTF-8 text bytes),
            and the train and validation tokens.
    """

    def __init__(self, directory, manifest):
        self.directory = directory
        self.manifest = manifest
        self.manifest_hash = manifest["manifest_sha256"]
        self.token_dtype = np.dtype(manifest["token_dtype"]).newbyteorder("<")
        self._tokens = {s["file"]: s["tokens"] for s in self.shards("train")}

    @property
    def stats(self):
        m = self.manifest
        return {
            "documents": m["documents"],
            "tokens": m["tokens"],
            "bytes": m["bytes"],
            "train_tokens": m["train"]["tokens"],
            "validation_tokens": m["validation"]["tokens"],
        }

    def shards(self, split):
        """The manifest's records of a split's shards, in order."""
        return self.manifest["shards"][split]

    def _path(self, name):
        return os.path.join(self.directory, name)

    def verify(self, hashes=True):
        """Checks that every shard file is there with the manifest's size
        and (if `hashes`) sha256.

        Raises:
            UserError: naming the first shard that does not match.
        """
        itemsizes = {"file": self.token_dtype.itemsize,
                     "byte_lengths_file": np.dtype(BYTE_LENGTH_DTYPE).itemsize}
        digests = {"file": "sha256", "byte_lengths_file": "byte_lengths_sha256"}
        for split in SPLITS:
            for shard in self.shards(split):
                for key, itemsize in itemsizes.items():
                    if key not in shard:
                        continue
                    path = self._path(shard[key])
                    problem = None
                    if not os.path.isfile(path):
                        problem = "it is missing"
                    elif os.path.getsize(path) != shard["tokens"] * itemsize:
                        problem = "its size differs"
                    elif hashes and file_sha256(path) != shard[digests[key]]:
                        problem = "its sha256 differs"
                    if problem:
                        raise UserError(
                            f"shard '{shard[key]}' of '{self.directory}' does "
                            f"not match {MANIFEST_FILE} ({problem}): the "
                            "directory changed after prepare; prepare the "
                            "corpus again with --restart."
                        )

    def tokenizer(self):
        """The tokenizer the shards were written with."""
        record = self.manifest["tokenizer"]
        path = self._path(record["file"])
        if not os.path.isfile(path) or file_sha256(path) != record["sha256"]:
            raise UserError(
                f"'{path}' is missing or differs from the one the shards "
                "were written with: prepare the corpus again with --restart."
            )
        return load_tokenizer(self.directory)

    # === Training stream ===

    def read_plan(self, sequence_length, seed=0, passes=PLAN_PASSES):
        """Which shard files each pass reads, in which order, from where.

        A pass reads every train shard that holds a window, in an order
        drawn from `(seed, pass)`, each from a token offset in
        `[0, sequence_length]` also drawn per pass and file, so that the
        windows of successive passes straddle different token boundaries.
        A file's tokens before the offset and after its last whole window
        are not read in that pass.

        Returns:
            A list (one per pass) of lists of `(file_name, offset,
            windows, key)`: the shard file, the offset in tokens, the
            windows read, and the int64 key that seeds the shuffle of that
            file's windows in that pass.
        """
        width = sequence_length + 1
        files = [(s["file"], s["tokens"]) for s in self.shards("train")
                 if s["tokens"] >= width]
        index = np.arange(len(files))
        spare = np.array([tokens - width for _, tokens in files], np.uint64)
        plan = []
        for p in range(passes):
            order = np.argsort(stable_hash(seed, _ORDER_SALT, p, index),
                               kind="stable")
            offsets = stable_hash(seed, _OFFSET_SALT, p, index) % (
                np.minimum(spare, sequence_length) + np.uint64(1))
            keys = stable_hash(seed, _BLOCK_SALT, p, index) >> np.uint64(1)
            plan.append([
                (files[i][0], int(offsets[i]),
                 (files[i][1] - int(offsets[i])) // width, int(keys[i]))
                for i in order
            ])
        return plan

    def train_dataset(self, sequence_length, batch_size, seed=0,
                      start_step=0, objective="causal", mask_token_fn=None,
                      input_context=None, num_workers=1):
        """An endless, seeded stream of training batches from the shards.

        Files are read up to `CYCLE_FILES` at a time (an interleave, their
        windows taken in turn), in the order of `read_plan` (which repeats
        after `PLAN_PASSES` passes); each file's windows are shuffled in
        blocks of about `SHUFFLE_TOKENS / cycle` tokens (`cycle`: the files
        read at once, `CYCLE_FILES` or fewer) by stateless ops keyed by the
        plan. So batch `s` is a pure function of `(seed,
        s)`: the same in every process, whatever the global random seed.
        Starting at `start_step` skips the windows of the earlier steps
        (it reads them again, nothing more), which gives exactly the
        batches `s >= start_step` of a run from step 0.

        The dataset carries `AutoShardPolicy.AUTO`, and nothing in it keeps
        tf.data from sharding by file: under `MultiWorkerMirroredStrategy`
        worker `i` of `n` reads the entries `i, i + n, ...` of the plan
        (each file of a pass is read by one worker). Pass `num_workers` so
        that a resumed run skips each worker's share; or pass
        `input_context` (`strategy.distribute_datasets_from_function`),
        which shards the same way explicitly and batches per replica.

        Args:
            sequence_length: int. Tokens per input sequence.
            batch_size: int. The global batch size.
            seed: int >= 0. Seeds the plan and the shuffles.
            start_step: int. The first batch to produce.
            objective: `"causal"`: `(inputs, targets)`, targets shifted by
                one; `"masked"`: `(masked_ids, ids, sample_weight)` over
                the first `sequence_length` tokens of each window.
            mask_token_fn: for `"masked"`, `fn(token_ids, seed) ->
                (masked_ids, labels, sample_weight)` with `seed` a `(2,)`
                int64 tensor; default: BERT's masking
                (`keras_tfm.data.mask_tokens`) with this corpus's ids.
            input_context: optional `tf.distribute.InputContext`.
            num_workers: int. Workers the stream is auto-sharded across.

        Returns:
            A `tf.data.Dataset` of batches.
        """
        _check_positive(sequence_length=sequence_length,
                        batch_size=batch_size, num_workers=num_workers)
        if objective not in ("causal", "masked"):
            raise ValueError(f"unknown objective {objective!r}")
        if seed < 0 or start_step < 0:
            raise ValueError("seed and start_step must be >= 0")
        passes = self.read_plan(sequence_length, seed)
        plan = [entry for entries in passes for entry in entries]
        if not plan:
            raise UserError(
                f"no train shard of '{self.directory}' holds a sequence of "
                f"{sequence_length + 1} tokens: lower --sequence-length, or "
                "prepare with a larger --shard-tokens."
            )
        pipelines = (input_context.num_input_pipelines if input_context
                     else num_workers)
        if batch_size % pipelines:
            raise ValueError(
                f"batch_size {batch_size} is not divisible by the "
                f"{pipelines} input pipelines"
            )
        windows_per_step = batch_size // pipelines
        if input_context:
            batch_size = input_context.get_per_replica_batch_size(batch_size)
        # Files read at once: no more than a pipeline's share of a pass,
        # or a few files would be read in several passes at once.
        cycle = min(CYCLE_FILES, max(1, len(passes[0]) // pipelines))
        windows = self._windows(plan, sequence_length, input_context, cycle)
        dataset = windows.skip(start_step * windows_per_step)
        dataset = dataset.batch(batch_size, drop_remainder=True)
        if objective == "causal":
            dataset = dataset.map(lambda w: (w[:, :-1], w[:, 1:]),
                                  num_parallel_calls=tf.data.AUTOTUNE)
        else:
            dataset = dataset.map(self._masker(seed, mask_token_fn),
                                  num_parallel_calls=tf.data.AUTOTUNE)
        options = tf.data.Options()
        options.experimental_distribute.auto_shard_policy = (
            tf.data.experimental.AutoShardPolicy.AUTO
        )
        return dataset.with_options(options).prefetch(tf.data.AUTOTUNE)

    def _windows(self, plan, sequence_length, input_context, cycle):
        """The stream of int32 windows `(sequence_length + 1,)`."""
        itemsize = self.token_dtype.itemsize
        record_bytes = (sequence_length + 1) * itemsize
        token_type = tf.as_dtype(self.token_dtype.newbyteorder("="))
        # Each of the `cycle` files open at once holds a block, and the
        # interleave prefetches about as many again: memory ~ a few times
        # SHUFFLE_TOKENS whatever the number of files.
        block = max(1, SHUFFLE_TOKENS // (cycle * (sequence_length + 1)))
        paths, offsets, counts, keys = zip(*plan)
        offsets, counts = np.array(offsets), np.array(counts)

        def read(path, header_bytes, footer_bytes, key):
            # The reader must take the file name straight from the plan
            # (`args_0`) for tf.data's auto-sharding to find it. The footer
            # leaves out the tail that is not a whole window.
            records = tf.data.FixedLengthRecordDataset(
                path, record_bytes, header_bytes=header_bytes,
                footer_bytes=footer_bytes,
            )

            def shuffle(index, block_records):
                tokens = tf.io.decode_raw(block_records, token_type,
                                          little_endian=True)
                return tf.random.experimental.stateless_shuffle(
                    tf.cast(tokens, tf.int32), tf.stack([key, index])
                )

            return records.batch(block).enumerate().map(shuffle).unbatch()

        sizes = np.array([self._tokens[p] for p in paths])
        dataset = tf.data.Dataset.from_tensor_slices((
            [self._path(p) for p in paths],
            tf.constant(offsets * itemsize, tf.int64),
            tf.constant((sizes - offsets - counts * (sequence_length + 1))
                        * itemsize, tf.int64),
            tf.constant(keys, tf.int64),
        )).repeat()
        if input_context:
            dataset = dataset.shard(input_context.num_input_pipelines,
                                    input_context.input_pipeline_id)
        return dataset.interleave(
            read,
            cycle_length=cycle,
            block_length=1,
            num_parallel_calls=tf.data.AUTOTUNE,
            deterministic=True,
        )

    def _masker(self, seed, mask_token_fn):
        if mask_token_fn is None:
            record = self.manifest["tokenizer"]

            def mask_token_fn(token_ids, mask_seed):
                return mask_tokens(
                    token_ids, mask_seed, record["mask_id"],
                    record["vocabulary_size"], record["num_special_tokens"],
                )

        def mask(windows):
            # Keyed by the batch's content: a step counter would need a
            # second input, which stops tf.data from sharding by file.
            fingerprint = tf.fingerprint(tf.reshape(windows, [1, -1]))[0]
            key = tf.bitcast(fingerprint, tf.int64)
            return mask_token_fn(
                windows[:, :-1], tf.stack([tf.constant(seed, tf.int64), key])
            )

        return mask

    # === Validation ===

    def validation_windows(self, sequence_length):
        """The validation split as disjoint windows, for bits per byte.

        The validation shards are read as one stream (documents in input
        order, `[EOS]` after each) and cut into windows of
        `sequence_length + 1` tokens; the ragged tail is dropped.

        Returns:
            A `keras_tfm.data.Windows` with `target_bytes` and
            `target_unknown_bytes` from the stored byte lengths.
        """
        _check_positive(sequence_length=sequence_length)
        shards = self.shards("validation")
        ids = np.concatenate([
            np.fromfile(self._path(s["file"]), self.token_dtype)
            for s in shards
        ]).astype(np.int32)
        byte_lengths = np.concatenate([
            np.fromfile(self._path(s["byte_lengths_file"]),
                        np.dtype(BYTE_LENGTH_DTYPE).newbyteorder("<"))
            for s in shards
        ]).astype(np.int32)
        if len(ids) < sequence_length + 1:
            raise UserError(
                f"the validation split of '{self.directory}' has {len(ids)} "
                f"tokens, fewer than one sequence of {sequence_length + 1}: "
                "lower --sequence-length, or prepare with a larger "
                "--validation-fraction."
            )
        unk_id = self.manifest["tokenizer"]["unk_id"]
        return pack_windows(ids, byte_lengths, sequence_length, unk_id)


def _check_positive(**values):
    for name, value in values.items():
        if not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(
                f"{name} must be a positive integer, got {value!r}"
            )


# === Document boundaries inside windows ===
