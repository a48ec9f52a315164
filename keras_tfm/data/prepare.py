"""`prepare`: tokenize a corpus once into shards that training streams.

The steps, and why:

1. Every argument and input path is checked before anything is created.
   Then one scan reads every document: a bad line or a truncated file
   stops the prepare before a shard exists. It counts documents and bytes,
   hashes each input (sha256: recorded, and compared by a rerun) and, for
   WordPiece, keeps a seeded sample of the text to learn the vocabulary
   from.
2. The validation split takes whole documents: document `i` (in input
   order) is held out when `stable_hash(seed, salt, i)` falls in the lowest
   `validation_fraction` of the hash range: no state, streaming, the same
   for the same seed. If no document falls there, the one with the lowest
   hash is held out; if all do, the one with the highest is kept for
   training, so each split has a document.
3. Documents are tokenized in input order, in pieces of at most
   `readers.PIECE_CHARS` characters cut before whitespace (which leaves the
   tokens unchanged), `[EOS]` after each document. Bytes are a numpy
   lookup; WordPiece runs TensorFlow ops on `workers` threads (the ops
   release the GIL, and threads share one TensorFlow instead of importing
   one per process), with a bounded number of batches in flight.
4. Each split fills shards of exactly `shard_tokens` tokens (its last one
   is shorter). A shard is written under a temporary name, renamed when
   full, then recorded in a sidecar (`train-00000.json`: size, sha256,
   and where in the input it ends). A rerun keeps the shards whose record
   is there and whose hash matches, reads the inputs again from where the
   lagging split stopped, tokenizes only what is missing, and writes again
   any shard without a record.
5. `manifest.json` comes last: inputs, settings, tokenizer, shards,
   split, totals and its own hash. A directory with a manifest is whole.
"""

import collections
import concurrent.futures
import contextlib
import dataclasses
import hashlib
import heapq
import itertools
import os
import re
import time
import typing

import numpy as np
import tensorflow as tf
import tensorflow_text as tf_text

from keras_tfm.data import readers
from keras_tfm.data.corpus import expand_patterns
from keras_tfm.data.prepared import BYTE_LENGTH_DTYPE
from keras_tfm.data.prepared import FORMAT
from keras_tfm.data.prepared import MANIFEST_FILE
from keras_tfm.data.prepared import PLAN_FILE
from keras_tfm.data.prepared import SPLITS
from keras_tfm.data.prepared import VERSION
from keras_tfm.data.prepared import file_sha256
from keras_tfm.data.prepared import manifest_hash
from keras_tfm.data.prepared import shard_name
from keras_tfm.data.prepared import stable_hash
from keras_tfm.directories import LOCK_FILE
from keras_tfm.directories import DirectoryLock
from keras_tfm.directories import check_output_directory
from keras_tfm.directories import make_directory
from keras_tfm.directories import remove_if_only_lock
from keras_tfm.errors import UserError
from keras_tfm.files import atomic_write
from keras_tfm.files import read_json
from keras_tfm.files import write_json
from keras_tfm.tokenizers import TOKENIZERS
from keras_tfm.tokenizers import ByteTokenizer
from keras_tfm.tokenizers import WordPieceTokenizer
from keras_tfm.tokenizers import load_tokenizer
from keras_tfm.tokenizers.base import CONFIG_FILE as TOKENIZER_FILE
from keras_tfm.tokenizers.wordpiece_tokenizer import PRETOKENIZE_PATTERN
from keras_tfm.tokenizers.wordpiece_tokenizer import SUFFIX_INDICATOR

# 16 MB files as uint16: enough of them for tf.data to give each worker
# its own, small enough to rewrite little after a kill.
DEFAULT_SHARD_TOKENS = 8_000_000
DEFAULT_VOCABULARY_SIZE = 2000
# The WordPiece learner's time grows with the distinct words of its input,
# not with the corpus: a fixed-size sample keeps it bounded.
VOCABULARY_SAMPLE_BYTES = 1_000_000
# The sample is drawn in units of this many characters.
_SAMPLE_CHARS = 1 << 14
# Text per WordPiece call: large enough that op overheads vanish.
_BATCH_CHARS = 1 << 20
_SPLIT_SALT, _SAMPLE_SALT = 4, 5
_LOG_SECONDS = 10
# Files a prepare writes, so that a rerun (or --restart) removes only
# those, and a directory holding anything else is refused.
_OUR_FILE = re.compile(
    r"(manifest\.json|prepare\.json|tokenizer\.json(\.tmp)?"
    r"|(train|validation)-\d{5}\.(tokens|bytes|json))"
)


def _is_ours(name):
    # atomic_write's temporary files are named `.{name}.{random}.partial`.
    partial = re.fullmatch(r"\.(.+)\.[^.]+\.partial", name)
    return bool(
        _OUR_FILE.fullmatch(partial.group(1) if partial else name)
        or name in (LOCK_FILE, ".keras-tfm-probe")
    )


def prepare(
    patterns,
    output_dir,
    tokenizer="byte",
    vocabulary_size=DEFAULT_VOCABULARY_SIZE,
    format="auto",
    text_field="text",
    validation_fraction=0.01,
    shard_tokens=DEFAULT_SHARD_TOKENS,
    seed=0,
    skip_bad_lines=False,
    workers=2,
    restart=False,
    vocabulary_sample_bytes=VOCABULARY_SAMPLE_BYTES,
    log=print,
):
    """Tokenizes text files into token shards and a manifest.

    Args:
        patterns: list of file paths or globs (plain or gzipped).
        output_dir: str. The directory to write (created; locked while
            writing).
        tokenizer: `"byte"` or `"wordpiece"` (learned from a sample).
        vocabulary_size: int. WordPiece's target vocabulary size.
        format: `"auto"` (by file name), `"text"` or `"jsonl"`.
        text_field: str. The JSON Lines field holding the text.
        validation_fraction: float in (0, 1). Share of the documents held
            out for validation.
        shard_tokens: int. Tokens per shard file.
        seed: int >= 0. Seeds the split and the vocabulary sample.
        skip_bad_lines: bool. Skip (and count) bad JSON Lines lines instead
            of stopping.
        workers: int. Threads tokenizing WordPiece text.
        restart: bool. Discard an earlier prepare in `output_dir` instead
            of resuming it (or refusing one with other settings).
        vocabulary_sample_bytes: int. Characters of text the WordPiece
            vocabulary is learned from.
        log: callable taking one line of progress.

    Returns:
        The manifest (a dict), also written to `manifest.json`.

    Raises:
        UserError: a bad argument or input, or an output directory holding
            something else (nothing is created then).
    """
    settings = _settings(tokenizer, vocabulary_size, format, text_field,
                         validation_fraction, shard_tokens, seed,
                         skip_bad_lines, vocabulary_sample_bytes)
    _check_count("--workers", workers, 1)
    started = time.time()
    if not patterns:
        raise UserError("no input: pass --data with files or globs.")
    paths = expand_patterns(patterns)
    check_output_directory(output_dir)
    _check_only_ours(output_dir)
    log(f"scanning {len(paths)} input file(s)")
    inputs, counts, sample = _scan(paths, settings)
    documents = sum(i.documents for i in inputs)
    characters = sum(i.characters for i in inputs)
    log(f"{documents:,} documents, {characters / 1e6:,.1f} M characters"
        + (f"; skipped {counts.bad_lines:,} bad line(s), e.g. "
           f"{counts.examples[0]}" if counts.bad_lines else ""))
    if documents < 2:
        raise UserError(
            f"the inputs hold {documents} document(s) with text; a split "
            "by document needs at least two: add documents, or for one "
            "long text use `keras-tfm pretrain --data FILE`."
        )
    top = make_directory(output_dir)
    try:
        with DirectoryLock(os.path.join(output_dir, LOCK_FILE),
                           what="prepared corpus directory"):
            return _prepare_locked(output_dir, settings, inputs, counts,
                                   sample, workers, restart, log, started)
    except UserError:
        remove_if_only_lock(top)
        raise


def _settings(tokenizer, vocabulary_size, format, text_field,
              validation_fraction, shard_tokens, seed, skip_bad_lines,
              vocabulary_sample_bytes):
    """The settings the shards depend on, checked; a rerun must match."""
    if tokenizer not in TOKENIZERS:
        raise UserError(
            f"--tokenizer {tokenizer!r} is unknown: pass one of "
            f"{', '.join(TOKENIZERS)}."
        )
    if format not in readers.FORMATS:
        raise UserError(
            f"--format {format!r} is unknown: pass text or jsonl (or leave "
            "it out to decide by file name)."
        )
    if not isinstance(text_field, str) or not text_field:
        raise UserError("--text-field is empty: pass the JSON field name.")
    if not isinstance(validation_fraction, (int, float)) or not (
        0 < validation_fraction < 1
    ):
        raise UserError(
            f"--validation-fraction must be between 0 and 1 (exclusive), "
            f"got {validation_fraction!r}."
        )
    _check_count("--shard-tokens", shard_tokens, 1)
    _check_count("--seed", seed, 0)
    wordpiece = tokenizer == "wordpiece"
    if wordpiece:
        _check_count("--vocabulary-size", vocabulary_size, 64)
        _check_count("vocabulary_sample_bytes", vocabulary_sample_bytes, 1)
    return {
        "tokenizer": tokenizer,
        # Byte vocabularies are fixed: these do not apply to them.
        "vocabulary_size": vocabulary_size if wordpiece else None,
        "vocabulary_sample_bytes": (vocabulary_sample_bytes if wordpiece
                                    else None),
        "format": format,
        "text_field": text_field,
        "validation_fraction": float(validation_fraction),
        "shard_tokens": shard_tokens,
        "seed": seed,
        "skip_bad_lines": bool(skip_bad_lines),
        "piece_chars": readers.PIECE_CHARS,
    }


def _check_count(flag, value, minimum):
    integer = isinstance(value, (int, np.integer)) and not isinstance(
        value, bool)
    if not integer or value < minimum:
        raise UserError(
            f"{flag} must be an integer >= {minimum}, got {value!r}."
        )


def _check_only_ours(directory):
    if not os.path.isdir(directory):
        return
    foreign = sorted(n for n in os.listdir(directory) if not _is_ours(n))
    if foreign:
        raise UserError(
            f"--output-dir '{directory}' holds files keras-tfm prepare did "
            f"not write (e.g. '{foreign[0]}'): pass a new or empty directory."
        )


# === 1. The scan ===


@dataclasses.dataclass
class _Input:
    path: str
    format: str
    bytes: int
    sha256: str
    documents: int
    characters: int


class _Sample:
    """About `budget` characters of text, drawn with a seeded hash.

    Keeps the units (`_SAMPLE_CHARS` characters; a word cut at a unit's
    edge counts as two, which a vocabulary does not notice) with the
    lowest hashes: the same sample for the same corpus and seed, in memory
    bounded by the budget.
    """

    def __init__(self, seed, budget):
        self.seed, self.budget = seed, budget
        self.heap, self.size = [], 0  # max-heap by hash: (-hash, text)

    def add(self, document, piece, text):
        for unit, start in enumerate(range(0, len(text), _SAMPLE_CHARS)):
            key = int(stable_hash(self.seed, _SAMPLE_SALT, document, piece,
                                  unit)[0])
            if self.size >= self.budget and key >= -self.heap[0][0]:
                continue
            chunk = text[start:start + _SAMPLE_CHARS]
            heapq.heappush(self.heap, (-key, chunk))
            self.size += len(chunk)
            while self.size > self.budget and len(self.heap) > 1:
                self.size -= len(heapq.heappop(self.heap)[1])

    def texts(self):
        return [text for _, text in sorted(self.heap, reverse=True)]


def _scan(paths, settings):
    """Reads every input once: `(inputs, ReadCounts, sample or None)`."""
    counts = readers.ReadCounts()
    sample = None
    if settings["tokenizer"] == "wordpiece":
        sample = _Sample(settings["seed"], settings["vocabulary_sample_bytes"])
    inputs, document = [], 0
    for path in paths:
        digest = hashlib.sha256()
        start, characters = document, 0
        for _, pieces in _documents(path, settings, counts, digest):
            for index, piece in enumerate(pieces):
                characters += len(piece)
                if sample is not None:
                    sample.add(document, index, piece)
            document += 1
        inputs.append(_Input(
            path, readers.input_format(path, settings["format"]),
            os.path.getsize(path), digest.hexdigest(), document - start,
            characters,
        ))
    return inputs, counts, sample


def _documents(path, settings, counts=None, digest=None):
    return readers.document_pieces(
        path, settings["format"], settings["text_field"],
        settings["skip_bad_lines"], counts, digest, settings["piece_chars"],
    )


# === 2. The split ===


class _Split:
    """Which documents are held out for validation (module docstring)."""

    _BLOCK = 1 << 16

    def __init__(self, seed, documents, fraction):
        self.seed = seed
        self.threshold = np.uint64(min(int(fraction * 2.0**64), 2**64 - 1))
        held, lowest, highest = 0, None, None
        for start in range(0, documents, self._BLOCK):
            keys = self._keys(start, min(documents, start + self._BLOCK))
            held += int(np.sum(keys < self.threshold))
            low, high = int(np.argmin(keys)), int(np.argmax(keys))
            if lowest is None or keys[low] < lowest[0]:
                lowest = (keys[low], start + low)
            if highest is None or keys[high] > highest[0]:
                highest = (keys[high], start + high)
        self.forced_validation = lowest[1] if held == 0 else None
        self.forced_train = highest[1] if held == documents else None
        self.documents = documents
        self._cache = (-1, None)

    def _keys(self, start, stop):
        return stable_hash(self.seed, _SPLIT_SALT, np.arange(start, stop))

    def split(self, document):
        block = document // self._BLOCK
        if self._cache[0] != block:
            start = block * self._BLOCK
            keys = self._keys(start, min(self.documents, start + self._BLOCK))
            self._cache = (block, keys < self.threshold)
        held = bool(self._cache[1][document % self._BLOCK])
        held = (held or document == self.forced_validation) and (
            document != self.forced_train
        )
        return "validation" if held else "train"

    def record(self, fraction):
        return {
            "fraction": fraction,
            "rule": f"document i (in input order, from 0) is held out when "
                    f"stable_hash(seed, {_SPLIT_SALT}, i) < fraction * 2**64",
            "forced_validation_document": self.forced_validation,
            "forced_train_document": self.forced_train,
        }


# === 3. Tokenizing ===


def _build_tokenizer(settings, sample, log):
    if settings["tokenizer"] == "byte":
        return ByteTokenizer()
    texts = sample.texts()
    log(f"learning a WordPiece vocabulary of {settings['vocabulary_size']:,} "
        f"from a {sum(map(len, texts)) / 1e6:.1f} MB sample")
    return WordPieceTokenizer.train(texts, settings["vocabulary_size"])


class _ByteEncoder:
    """`tokenizer.tokenize`, as a numpy lookup: id = byte + 4.

    Returns `(ids, None)` per text: every id covers one byte.
    """

    threads = False

    def __init__(self, tokenizer, dtype):
        self.offset, self.dtype = tokenizer.num_special_tokens, dtype

    def __call__(self, texts):
        return [
            (np.add(np.frombuffer(text.encode("utf-8"), np.uint8),
                    self.offset, dtype=self.dtype), None)
            for text in texts
        ]


class _WordPieceEncoder:
    """`tokenizer.tokenize_with_byte_lengths`, faster, same tokens.

    The tokenizer splits words with `regex_split`, which is slow on
    many short matches; marking each match of the same pattern with a byte
    that UTF-8 text never holds (0xff, by RE2's `regex_replace`) and
    splitting there makes the same words several times faster. The
    words then go to a `FastWordpieceTokenizer` built like the
    tokenizer's. The first batch is checked against the tokenizer; if a
    future tokenizer disagrees, its own (slower) path is used.
    """

    threads = True

    def __init__(self, tokenizer, dtype, log):
        self.tokenizer, self.dtype, self.log = tokenizer, dtype, log
        config = tokenizer.get_config()
        self.fast = (config.get("pretokenize_pattern") == PRETOKENIZE_PATTERN
                     and config.get("suffix_indicator") == SUFFIX_INDICATOR)
        if self.fast:
            self._wordpiece = tf_text.FastWordpieceTokenizer(
                vocab=tokenizer.vocabulary,
                suffix_indicator=SUFFIX_INDICATOR,
                token_out_type=tf.int32,
                unknown_token="[UNK]",
                no_pretokenization=True,
            )
        self.checked = False

    def _fast_path(self, texts):
        marked = tf.strings.regex_replace(texts, PRETOKENIZE_PATTERN,
                                          b"\xff\\0")
        # (batch, (words)); each row starts with an empty word (before the
        # first mark), which has no tokens. Tokenized flat and cut back
        # into rows in numpy: ragged slicing costs more than the rest.
        words = tf.strings.split(marked, b"\xff")
        ids, starts, ends = self._wordpiece.tokenize_with_offsets(
            words.flat_values)
        splits = ids.row_splits.numpy()[words.row_splits.numpy()]
        lengths = (ends.flat_values - starts.flat_values).numpy()
        return ids.flat_values.numpy(), lengths, splits

    def __call__(self, texts):
        texts = tf.constant(texts, tf.string)
        if self.fast:
            ids, lengths, splits = self._fast_path(texts)
        else:
            ragged_ids, ragged_lengths = (
                self.tokenizer.tokenize_with_byte_lengths(texts))
            ids = ragged_ids.flat_values.numpy()
            lengths = ragged_lengths.flat_values.numpy()
            splits = ragged_ids.row_splits.numpy()
        return [(ids[a:b].astype(self.dtype), lengths[a:b].astype(np.int32))
                for a, b in zip(splits, splits[1:])]

    def check(self, texts):
        """Compares the fast path with the tokenizer on `texts` once."""
        if self.checked or not self.fast:
            return
        self.checked = True
        fast = self(texts)
        self.fast = False
        slow = self(texts)
        self.fast = all(
            np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
            for a, b in zip(fast, slow)
        )
        if not self.fast:
            self.log("the fast WordPiece path disagrees with the tokenizer; "
                     "using the tokenizer's own (slower) path")


# === 4. Shards ===


class _Background:
    """Runs calls in order on one thread, at most `limit` of them waiting.

    Writing, fsync and hashing release the GIL: on a thread they overlap
    with reading and tokenizing the next pieces.
    """

    def __init__(self, limit=16):
        self._executor = concurrent.futures.ThreadPoolExecutor(1)
        self._pending, self._limit = collections.deque(), limit

    def submit(self, fn, *args):
        self._pending.append(self._executor.submit(fn, *args))
        while self._pending and (len(self._pending) > self._limit
                                 or self._pending[0].done()):
            self._pending.popleft().result()

    def wait(self):
        while self._pending:
            self._pending.popleft().result()

    def shutdown(self):
        self._executor.shutdown(wait=True, cancel_futures=True)


class _ShardWriter:
    """Fills one split's shards, `shard_tokens` tokens each.

    The counting happens here; the files are written by `background`.

    Args:
        finished: the records of the split's shards already written (and
            verified); writing continues after them.
    """

    def __init__(self, directory, split, shard_tokens, dtype, finished,
                 background):
        self.directory, self.split = directory, split
        self.shard_tokens = shard_tokens
        self.dtype = np.dtype(dtype).newbyteorder("<")
        self.lengths = split == "validation"
        self.finished = finished
        # Where the finished shards end: (document, piece, token offset).
        self.resume = tuple(finished[-1]["end"]) if finished else (0, 0, 0)
        self._background = background
        self._index, self._open = len(finished), False
        self._io = {}  # used by the background thread only

    def _path(self, kind):
        return os.path.join(self.directory,
                            shard_name(self.split, self._index, kind))

    def _start(self, paths):
        io = self._io
        io["stack"] = contextlib.ExitStack()
        io["files"] = {kind: io["stack"].enter_context(atomic_write(path,
                                                                    "wb"))
                       for kind, path in paths.items()}
        io["digests"] = {kind: hashlib.sha256() for kind in paths}

    def _write(self, kind, array):
        # Contiguous arrays: written and hashed without a copy.
        self._io["files"][kind].write(array)
        self._io["digests"][kind].update(array)

    def add(self, ids, lengths, document, piece, offset, ends_document):
        """Appends tokens of a piece that start at its token `offset`.

        Args:
            ids: int array, the tokens.
            lengths: int32 array of the UTF-8 bytes each token covers, or
                `None` for one byte each.
            document, piece, offset: where `ids[0]` is in the input.
            ends_document: bool. `ids` ends with the document's `[EOS]`.
        """
        done = 0
        while done < len(ids):
            if not self._open:
                kinds = ("tokens", "bytes") if self.lengths else ("tokens",)
                self._background.submit(
                    self._start, {k: self._path(k) for k in kinds})
                self._open = True
                self._tokens = self._documents = self._text_bytes = 0
            take = min(self.shard_tokens - self._tokens, len(ids) - done)
            part = slice(done, done + take)
            self._background.submit(self._write, "tokens",
                                    np.ascontiguousarray(ids[part],
                                                         self.dtype))
            if lengths is None:
                self._text_bytes += take
                part_lengths = np.ones(take, "<i4") if self.lengths else None
            else:
                self._text_bytes += int(lengths[part].sum())
                part_lengths = np.ascontiguousarray(lengths[part], "<i4")
            if self.lengths:
                self._background.submit(self._write, "bytes", part_lengths)
            self._tokens += take
            done += take
            if ends_document and done == len(ids):
                self._documents += 1
            if self._tokens == self.shard_tokens:
                self._finish((document, piece, offset + done))

    def _finish(self, end):
        record = {
            "file": shard_name(self.split, self._index),
            "tokens": self._tokens,
            "documents": self._documents,
            "bytes": self._text_bytes,
        }
        if self.lengths:
            record["byte_lengths_file"] = shard_name(self.split, self._index,
                                                     "bytes")
        self._background.submit(self._close, record, list(end),
                                self._path("json"))
        self._index, self._open = self._index + 1, False

    def _close(self, record, end, sidecar):
        self._io.pop("stack").close()  # renames the files into place
        digests = self._io.pop("digests")
        record["sha256"] = digests["tokens"].hexdigest()
        if self.lengths:
            record["byte_lengths_sha256"] = digests["bytes"].hexdigest()
        write_json(sidecar, {**record, "end": end})
        self.finished.append(record)

    def close(self, end):
        """Writes the last, shorter shard."""
        if self._open and self._tokens:
            self._finish(end)

    def abort(self):
        """Removes the shard being written (after an error)."""
        stack = self._io.pop("stack", None)
        if stack is not None:
            stack.__exit__(RuntimeError, RuntimeError(), None)


def _finished_shards(directory, split, dtype):
    """The split's shards whose record is there and whose files match it;
    every later file of the split is removed."""
    finished = []
    for index in itertools.count():
        path = os.path.join(directory, shard_name(split, index, "json"))
        if not os.path.isfile(path):
            break
        try:
            record = read_json(path)
        except ValueError:
            break
        files = [(record.get("file"), record.get("sha256"),
                  np.dtype(dtype).itemsize)]
        if split == "validation":
            files.append((record.get("byte_lengths_file"),
                          record.get("byte_lengths_sha256"), 4))
        if not all(_intact(directory, name, sha256, record["tokens"] * size)
                   for name, sha256, size in files):
            break
        finished.append({k: v for k, v in record.items() if k != "end"})
        finished[-1]["end"] = record["end"]
    for name in os.listdir(directory):
        match = re.fullmatch(rf"{split}-(\d{{5}})\.\w+", name)
        partial = _is_ours(name) and name.endswith(".partial") and (
            f".{split}-" in name)
        if partial or (match and int(match.group(1)) >= len(finished)):
            os.remove(os.path.join(directory, name))
    return finished


def _intact(directory, name, sha256, size):
    path = os.path.join(directory, name or "")
    return (bool(name) and os.path.isfile(path)
            and os.path.getsize(path) == size and file_sha256(path) == sha256)


class _Piece(typing.NamedTuple):
    split: str
    document: int
    index: int  # in the document
    text: str
    last: bool  # the document's last piece, followed by [EOS]
    offset: int  # tokens of it already in a finished shard


def _pieces(inputs, settings, split, resume):
    """Yields a `_Piece` for each piece whose tokens are not all in
    finished shards of its split; `resume` maps a split to where its
    finished shards end: `(document, piece, token offset)`."""
    start = min(position[0] for position in resume.values())
    document = 0
    for item in inputs:
        if document + item.documents <= start:
            document += item.documents
            continue  # every document of this file is in finished shards
        for _, pieces in _documents(item.path, settings):
            if document >= start:
                name = split.split(document)
                end = resume[name]
                # One piece of look-ahead tells the last piece, which ends
                # with [EOS].
                previous = None
                for index, piece in enumerate(
                    itertools.chain(pieces, [None])
                ):
                    position = (document, index - 1)
                    if previous is not None and position >= end[:2]:
                        offset = end[2] if position == end[:2] else 0
                        yield _Piece(name, document, index - 1, previous,
                                     piece is None, offset)
                    previous = piece
            document += 1
    if document != split.documents:
        raise UserError(
            "the inputs changed while they were being prepared "
            f"({document} documents now, {split.documents} before): rerun "
            "with --restart."
        )


def _tokenize(inputs, settings, split, encoder, writers, workers, log,
              characters, eos_id):
    """Pass two: tokenizes the pieces not yet in shards and writes them."""
    resume = {name: w.resume for name, w in writers.items()}
    eos, no_bytes = np.array([eos_id]), np.zeros(1, np.int32)
    progress = {"characters": 0, "bytes": 0, "time": time.time(),
                "start": time.time()}

    def write(batch, results):
        for item, (ids, lengths) in zip(batch, results):
            # The piece's tokens are its text's, then [EOS] if it is the
            # document's last; `item.offset` of them are already written.
            writer, offset = writers[item.split], item.offset
            if offset < len(ids):
                writer.add(ids[offset:],
                           None if lengths is None else lengths[offset:],
                           item.document, item.index, offset, False)
            if item.last and offset <= len(ids):
                writer.add(eos, no_bytes, item.document, item.index,
                           len(ids), True)
            progress["characters"] += len(item.text)
            progress["bytes"] += (len(ids) if lengths is None
                                  else int(lengths.sum()))
        now = time.time()
        if now - progress["time"] > _LOG_SECONDS:
            progress["time"] = now
            rate = progress["bytes"] / 1e6 / (now - progress["start"])
            share = progress["characters"] / max(1, characters)
            log(f"tokenized {share:.0%} of the text ({rate:.1f} MB/s)")

    executor = (concurrent.futures.ThreadPoolExecutor(workers)
                if encoder.threads else None)
    in_flight = collections.deque()
    try:
        batch, chars = [], 0
        for item in itertools.chain(_pieces(inputs, settings, split, resume),
                                    [None]):
            if item is not None:
                batch.append(item)
                chars += len(item.text)
            if batch and (item is None or chars >= _BATCH_CHARS):
                texts = [entry.text for entry in batch]
                if executor is None:
                    write(batch, encoder(texts))
                else:
                    encoder.check(texts)
                    in_flight.append((batch, executor.submit(encoder, texts)))
                batch, chars = [], 0
            # A bounded queue: memory does not grow with the corpus.
            while in_flight and (len(in_flight) > 2 * workers or item is None):
                done_batch, future = in_flight.popleft()
                write(done_batch, future.result())
        for writer in writers.values():
            writer.close((split.documents, 0, 0))
    finally:
        if executor is not None:
            executor.shutdown(cancel_futures=True)


# === 5. The directory, the manifest ===


def _difference(previous, current):
    """How `current` settings and inputs differ from `previous`, or None."""
    for key, value in current["settings"].items():
        if previous.get("settings", {}).get(key) != value:
            return (f"{key} {previous.get('settings', {}).get(key)!r} there, "
                    f"{value!r} now")
    before, now = previous.get("inputs", []), current["inputs"]
    if len(before) != len(now):
        return f"{len(before)} input file(s) there, {len(now)} now"
    for index, (a, b) in enumerate(zip(before, now)):
        if (a.get("sha256"), a.get("bytes")) != (b["sha256"], b["bytes"]):
            return f"input {index + 1} ('{b['path']}') has other content"
    return None


def _remove_ours(directory):
    for name in os.listdir(directory):
        if _is_ours(name) and name != LOCK_FILE:
            os.remove(os.path.join(directory, name))


def _prepare_locked(directory, settings, inputs, counts, sample, workers,
                    restart, log, started):
    current = {
        "format": FORMAT,
        "version": VERSION,
        "settings": settings,
        "inputs": [dataclasses.asdict(i) for i in inputs],
    }
    _check_only_ours(directory)
    plan_path = os.path.join(directory, PLAN_FILE)
    manifest_path = os.path.join(directory, MANIFEST_FILE)
    previous = None
    if restart:
        _remove_ours(directory)
    else:
        for path in (manifest_path, plan_path):
            if os.path.isfile(path):
                previous = read_json(path, "prepare record")
                break
        difference = previous and _difference(previous, current)
        if difference:
            raise UserError(
                f"'{directory}' holds a prepare with other inputs or "
                f"settings ({difference}): pass --restart to discard it, "
                "or another --output-dir."
            )
        if previous and os.path.isfile(manifest_path):
            log(f"'{directory}' is already prepared with these inputs and "
                "settings")
            return previous
    tokenizer_path = os.path.join(directory, TOKENIZER_FILE)
    if previous and os.path.isfile(tokenizer_path) and file_sha256(
            tokenizer_path) == previous.get("tokenizer_sha256"):
        tokenizer = load_tokenizer(directory)
        current["tokenizer_sha256"] = previous["tokenizer_sha256"]
        log(f"resuming the prepare in '{directory}'")
    else:
        # Nothing usable yet (or a prepare killed before its record was
        # written): start clean.
        previous = None
        _remove_ours(directory)
        tokenizer = _build_tokenizer(settings, sample, log)
        tokenizer.save(directory)
        current["tokenizer_sha256"] = file_sha256(tokenizer_path)
        write_json(plan_path, current)

    dtype = "uint16" if tokenizer.vocabulary_size <= 1 << 16 else "int32"
    documents = sum(i.documents for i in inputs)
    split = _Split(settings["seed"], documents,
                   settings["validation_fraction"])
    background = _Background()
    writers = {
        name: _ShardWriter(directory, name, settings["shard_tokens"], dtype,
                           _finished_shards(directory, name, dtype)
                           if previous else [], background)
        for name in SPLITS
    }
    if settings["tokenizer"] == "byte":
        encoder = _ByteEncoder(tokenizer, dtype)
    else:
        encoder = _WordPieceEncoder(tokenizer, dtype, log)
    try:
        _tokenize(inputs, settings, split, encoder, writers, workers, log,
                  sum(i.characters for i in inputs), tokenizer.eos_id)
        background.wait()
    except BaseException:
        # Finished shards stay for a rerun; a shard being written is
        # removed (without its record it would not be taken anyway).
        with contextlib.suppress(Exception):
            background.wait()
        for writer in writers.values():
            writer.abort()
        raise
    finally:
        background.shutdown()
    manifest = _manifest(current, tokenizer, dtype, split, writers, counts)
    write_json(manifest_path, manifest)
    seconds = time.time() - started
    log(f"wrote {manifest['tokens']:,} tokens in "
        f"{len(manifest['shards']['train'])} train and "
        f"{len(manifest['shards']['validation'])} validation shard(s) in "
        f"{seconds:.1f} s ({manifest['bytes'] / 1e6 / max(seconds, 1e-9):.1f}"
        " MB/s of text)")
    return manifest


def _manifest(current, tokenizer, dtype, split, writers, counts):
    totals = {}
    for name, writer in writers.items():
        shards = [{k: v for k, v in s.items() if k != "end"}
                  for s in writer.finished]
        totals[name] = {
            key: sum(s[key] for s in shards)
            for key in ("documents", "tokens", "bytes")
        }
        totals[name]["shards"] = shards
    manifest = {
        **current,
        "tokenizer": {
            "type": tokenizer.get_config()["type"],
            "file": TOKENIZER_FILE,
            "sha256": current["tokenizer_sha256"],
            "vocabulary_size": tokenizer.vocabulary_size,
            "num_special_tokens": tokenizer.num_special_tokens,
            "pad_id": tokenizer.pad_id,
            "unk_id": tokenizer.unk_id,
            "mask_id": tokenizer.mask_id,
            "eos_id": tokenizer.eos_id,
        },
        "token_dtype": dtype,
        "byte_length_dtype": BYTE_LENGTH_DTYPE,
        "byte_order": "little",
        "seed": current["settings"]["seed"],
        "documents": sum(t["documents"] for t in totals.values()),
        "tokens": sum(t["tokens"] for t in totals.values()),
        "bytes": sum(t["bytes"] for t in totals.values()),
        "skipped_lines": counts.bad_lines,
        "empty_documents": counts.empty_documents,
        "train": {k: v for k, v in totals["train"].items() if k != "shards"},
        "validation": {
            **split.record(current["settings"]["validation_fraction"]),
            **{k: v for k, v in totals["validation"].items()
               if k != "shards"},
        },
        "shards": {name: totals[name]["shards"] for name in SPLITS},
    }
    manifest["manifest_sha256"] = manifest_hash(manifest)
    return manifest
