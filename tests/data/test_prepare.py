import argparse
import gzip
import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf

from keras_tfm.cli import prepare as prepare_cli
from keras_tfm.data import readers
from keras_tfm.data.prepare import prepare
from keras_tfm.directories import LOCK_FILE
from keras_tfm.directories import DirectoryLock
from keras_tfm.errors import UserError
from keras_tfm.tokenizers import ByteTokenizer
from keras_tfm.tokenizers import load_tokenizer

# Words that test the tokenizers' edges: UTF-8 of 1-4 bytes, U+00FF (whose
# encoding holds no 0xff byte), no-break and other spaces that are not
# RE2's \s, combining marks, fullwidth digits, a word over WordPiece's
# 100-byte limit, punctuation runs, CR LF.
WORDS = [
    "the", "cat", "sat", "on", "a", "mat", "caf\u00e9", "na\u00efve",
    "\u00ff", "\u6f22\u5b57", "e\u0301", "\U0001f44d\U0001f3fd",
    "\uff11\uff12", "--!!", "x" * 120, "don't", "1984", "\u00a0", "\t",
    "\v", "\r\n", "\u2003", "\u0645\u0631\u062d\u0628\u0627",
]


def make_texts(count, seed=0, lengths=(3, 60)):
    rng = random.Random(seed)
    return [
        f"doc {i}: "
        + " ".join(rng.choice(WORDS) for _ in range(rng.randint(*lengths)))
        + rng.choice(["", "\n", "  "])
        for i in range(count)
    ]


def write_corpus(directory, texts):
    """Spreads documents over four files of every kind; returns their
    paths. The test reads them back only through `texts`."""
    directory.mkdir(parents=True, exist_ok=True)
    a, b = directory / "a.txt", directory / "b.txt.gz"
    a.write_text(texts[0], encoding="utf-8", newline="")
    b.write_bytes(gzip.compress(texts[1].encode("utf-8")))
    half = 2 + (len(texts) - 2) // 2
    c, d = directory / "c.jsonl.gz", directory / "d.jsonl"
    c.write_bytes(gzip.compress("".join(
        json.dumps({"text": t, "id": i}) + "\n"
        for i, t in enumerate(texts[2:half])).encode("utf-8")))
    d.write_text("".join(json.dumps({"text": t}) + "\n"
                         for t in texts[half:]), encoding="utf-8")
    return [str(a), str(b), str(c), str(d)]


def read_split(directory, split):
    """A split's token stream and byte lengths, read with numpy."""
    with open(os.path.join(directory, "manifest.json")) as f:
        manifest = json.load(f)
    dtype = np.dtype(manifest["token_dtype"]).newbyteorder("<")
    shards = manifest["shards"][split]
    ids = np.concatenate([
        np.fromfile(os.path.join(directory, s["file"]), dtype)
        for s in shards
    ]).astype(np.int64)
    lengths = None
    if split == "validation":
        lengths = np.concatenate([
            np.fromfile(os.path.join(directory, s["byte_lengths_file"]),
                        "<i4") for s in shards
        ])
    return ids, lengths


def documents_of(ids):
    """Token lists of the documents of a stream, [EOS] (3) dropped."""
    ends = np.flatnonzero(ids == 3)
    assert len(ends) and ends[-1] == len(ids) - 1
    starts = np.concatenate([[0], ends[:-1] + 1])
    return [tuple(ids[a:b]) for a, b in zip(starts, ends)]


def check_round_trip(directory, texts):
    """Every document once, in one split, as the tokenizer's tokens."""
    tokenizer = load_tokenizer(directory)
    ids, lengths = tokenizer.tokenize_with_byte_lengths(tf.constant(texts))
    expected = [tuple(row) for row in ids.numpy()]
    expected_lengths = [list(row) for row in lengths.numpy()]
    train = documents_of(read_split(directory, "train")[0])
    validation_ids, validation_lengths = read_split(directory, "validation")
    validation = documents_of(validation_ids)
    assert sorted(train + validation) == sorted(expected)
    assert len(set(expected)) == len(texts)
    # Each split keeps the input order.
    order = {tokens: i for i, tokens in enumerate(expected)}
    for split in (train, validation):
        assert [order[d] for d in split] == sorted(order[d] for d in split)
    # Validation byte lengths: the tokenizer's, 0 for [EOS].
    held = [order[d] for d in validation]
    assert validation_lengths.tolist() == [
        n for i in held for n in expected_lengths[i] + [0]]
    return [order[d] for d in train], held


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    texts = make_texts(60, seed=1)
    return texts, write_corpus(root / "inputs", texts), root


def test_byte_shards_round_trip(corpus, tmp_path):
    texts, paths, _ = corpus
    logs = []
    manifest = prepare(paths, str(tmp_path / "out"), shard_tokens=500,
                       validation_fraction=0.2, seed=3, log=logs.append)
    out = str(tmp_path / "out")
    train, held = check_round_trip(out, texts)
    assert 5 <= len(held) <= 25 and len(train) + len(held) == 60
    text_bytes = sum(len(t.encode("utf-8")) for t in texts)
    assert manifest["documents"] == 60 and manifest["bytes"] == text_bytes
    assert manifest["tokens"] == text_bytes + 60
    assert manifest["token_dtype"] == "uint16"
    assert manifest["validation"]["documents"] == len(held)
    # Shards hold exactly shard_tokens tokens, but the last of a split.
    for split in ("train", "validation"):
        shards = manifest["shards"][split]
        assert [s["tokens"] for s in shards[:-1]] == [500] * (len(shards) - 1)
        for shard in shards:
            with open(os.path.join(out, shard["file"]), "rb") as f:
                data = f.read()
            assert len(data) == 2 * shard["tokens"]
            assert hashlib.sha256(data).hexdigest() == shard["sha256"]
    assert len(manifest["shards"]["train"]) > 5
    for record in manifest["inputs"]:
        with open(record["path"], "rb") as f:
            assert hashlib.sha256(f.read()).hexdigest() == record["sha256"]
    assert any("wrote" in line for line in logs)


def test_wordpiece_shards_round_trip(corpus, tmp_path, monkeypatch):
    texts, paths, _ = corpus
    # Small pieces: documents are cut (before whitespace) many times.
    monkeypatch.setattr(readers, "PIECE_CHARS", 64)
    out = str(tmp_path / "out")
    manifest = prepare(paths, out, tokenizer="wordpiece", vocabulary_size=300,
                       vocabulary_sample_bytes=3000, shard_tokens=400,
                       validation_fraction=0.2, workers=2, log=print)
    check_round_trip(out, texts)
    assert manifest["tokenizer"]["type"] == "wordpiece"
    validation_ids, _ = read_split(out, "validation")
    # The small sample leaves words out: [UNK] tokens, whose byte lengths
    # (checked above) cover whole words.
    assert (read_split(out, "train")[0] == 1).any()
    assert manifest["bytes"] == sum(len(t.encode()) for t in texts)


def test_split_is_deterministic_for_a_seed(corpus, tmp_path):
    _, paths, _ = corpus

    def held_out(seed, name):
        prepare(paths, str(tmp_path / name), validation_fraction=0.2,
                seed=seed, log=lambda line: None)
        return documents_of(read_split(str(tmp_path / name),
                                       "validation")[0])

    first, again, other = held_out(5, "a"), held_out(5, "b"), held_out(6, "c")
    assert first == again and first != other
    with open(tmp_path / "a" / "manifest.json") as f1, \
            open(tmp_path / "b" / "manifest.json") as f2:
        assert json.load(f1) == json.load(f2)


def test_each_split_gets_a_document(tmp_path):
    paths = write_corpus(tmp_path / "in", make_texts(4, seed=2))
    few = prepare(paths, str(tmp_path / "few"), validation_fraction=0.001,
                  log=lambda line: None)
    assert few["validation"]["documents"] == 1
    assert few["validation"]["forced_validation_document"] is not None
    most = prepare(paths, str(tmp_path / "most"), validation_fraction=0.999,
                   log=lambda line: None)
    assert most["train"]["documents"] == 1
    assert most["validation"]["forced_train_document"] is not None


def test_skip_bad_lines_counts_them(tmp_path):
    good = tmp_path / "good.jsonl"
    good.write_text('{"text": "one"}\n{"text": "two"}\n{"text": "three"}\n')
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "ok"}\nnot json\n{"other": 1}\n{"text": "x"}\n')
    out = tmp_path / "out"
    with pytest.raises(UserError) as error:
        prepare([str(good), str(bad)], str(out), log=lambda line: None)
    assert f"'{bad}' line 2 is not JSON" in str(error.value)
    assert not out.exists()
    manifest = prepare([str(good), str(bad)], str(out), skip_bad_lines=True,
                       log=lambda line: None)
    assert manifest["skipped_lines"] == 2 and manifest["documents"] == 5


def test_truncated_gzip_stops_before_anything_is_written(tmp_path):
    data = gzip.compress(b'{"text": "some words here"}\n' * 2000)
    good = tmp_path / "good.jsonl"
    good.write_text('{"text": "one"}\n{"text": "two"}\n')
    cut = tmp_path / "cut.jsonl.gz"
    cut.write_bytes(data[: len(data) - 20])
    with pytest.raises(UserError) as error:
        prepare([str(good), str(cut)], str(tmp_path / "out"),
                log=lambda line: None)
    assert "truncated gzip" in str(error.value)
    assert "\n" not in str(error.value)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("arguments,fragment", [
    ({"tokenizer": "bpe"}, "--tokenizer"),
    ({"format": "csv"}, "--format"),
    ({"validation_fraction": 1.0}, "--validation-fraction"),
    ({"validation_fraction": 0}, "--validation-fraction"),
    ({"shard_tokens": 0}, "--shard-tokens"),
    ({"seed": -1}, "--seed"),
    ({"workers": 0}, "--workers"),
    ({"tokenizer": "wordpiece", "vocabulary_size": 10}, "--vocabulary-size"),
    ({"text_field": ""}, "--text-field"),
])
def test_bad_arguments_create_nothing(corpus, tmp_path, arguments, fragment):
    _, paths, _ = corpus
    with pytest.raises(UserError) as error:
        prepare(paths, str(tmp_path / "out"), **arguments)
    assert fragment in str(error.value)
    assert not (tmp_path / "out").exists()


def test_missing_input_and_one_document_create_nothing(tmp_path):
    with pytest.raises(UserError) as error:
        prepare([str(tmp_path / "nope.txt")], str(tmp_path / "out"))
    assert "no such file" in str(error.value)
    one = tmp_path / "one.txt"
    one.write_text("a single document")
    with pytest.raises(UserError) as error:
        prepare([str(one)], str(tmp_path / "out"), log=lambda line: None)
    assert "at least two" in str(error.value)
    assert not (tmp_path / "out").exists()


def test_directory_with_other_files_is_refused(corpus, tmp_path):
    _, paths, _ = corpus
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    for restart in (False, True):
        with pytest.raises(UserError) as error:
            prepare(paths, str(out), restart=restart, log=lambda line: None)
        assert "notes.txt" in str(error.value)
    assert sorted(os.listdir(out)) == ["notes.txt"]


def test_a_directory_being_written_is_refused(corpus, tmp_path):
    _, paths, _ = corpus
    out = tmp_path / "out"
    out.mkdir()
    with DirectoryLock(str(out / LOCK_FILE)):
        with pytest.raises(UserError) as error:
            prepare(paths, str(out), log=lambda line: None)
    assert "in use" in str(error.value)
    assert os.listdir(out) == []


def test_rerun_of_a_finished_prepare_changes_nothing(corpus, tmp_path):
    _, paths, _ = corpus
    out = str(tmp_path / "out")
    first = prepare(paths, out, shard_tokens=700, log=lambda line: None)
    stamps = {n: os.stat(os.path.join(out, n)).st_mtime_ns
              for n in os.listdir(out)}
    logs = []
    assert prepare(paths, out, shard_tokens=700, log=logs.append) == first
    assert any("already prepared" in line for line in logs)
    assert stamps == {n: os.stat(os.path.join(out, n)).st_mtime_ns
                      for n in os.listdir(out)}


def test_rerun_with_other_settings_or_inputs_is_refused(tmp_path):
    texts = make_texts(20, seed=4)
    paths = write_corpus(tmp_path / "in", texts)
    out = str(tmp_path / "out")
    prepare(paths, out, shard_tokens=700, log=lambda line: None)
    with pytest.raises(UserError) as error:
        prepare(paths, out, shard_tokens=900, log=lambda line: None)
    message = str(error.value)
    assert "shard_tokens 700 there, 900 now" in message
    assert "--restart" in message and "\n" not in message
    with open(paths[3], "a") as f:
        f.write(json.dumps({"text": "one more"}) + "\n")
    with pytest.raises(UserError) as error:
        prepare(paths, out, shard_tokens=700, log=lambda line: None)
    assert "d.jsonl" in str(error.value)
    manifest = prepare(paths, out, shard_tokens=900, restart=True,
                       log=lambda line: None)
    assert manifest["documents"] == 21
    assert manifest["shards"]["train"][0]["tokens"] == 900
    check_round_trip(out, texts + ["one more"])


def test_rerun_rewrites_damaged_and_unrecorded_shards(corpus, tmp_path):
    texts, paths, _ = corpus
    out = tmp_path / "out"
    whole = prepare(paths, str(out), shard_tokens=300, log=lambda line: None)
    with open(out / "train-00001.tokens", "r+b") as f:
        f.seek(10)
        f.write(b"\x07\x00")  # same size, other content
    os.remove(out / "train-00004.json")  # written, never recorded
    (out / ".train-00005.tokens.x1y2.partial").write_bytes(b"half")
    os.remove(out / "manifest.json")  # as if killed before the end
    logs = []
    assert prepare(paths, str(out), shard_tokens=300, log=logs.append) == whole
    assert any("resuming" in line for line in logs)
    assert not [n for n in os.listdir(out) if n.endswith(".partial")]
    check_round_trip(str(out), texts)


KILL_SCRIPT = """
import sys, time
from keras_tfm.data import prepare as module

write_json = module.write_json


def slow_write_json(path, value, **kwargs):
    write_json(path, value, **kwargs)
    time.sleep(0.3)  # time to be killed between shards


module.write_json = slow_write_json
module.prepare(sys.argv[2:], sys.argv[1], shard_tokens=400,
               validation_fraction=0.1, log=lambda line: None)
"""


@pytest.mark.slow
def test_resume_after_a_kill_gives_the_same_shards(corpus, tmp_path):
    texts, paths, _ = corpus
    whole = prepare(paths, str(tmp_path / "whole"), shard_tokens=400,
                    validation_fraction=0.1, log=lambda line: None)
    out = tmp_path / "killed"
    process = subprocess.Popen(
        [sys.executable, "-c", KILL_SCRIPT, str(out), *paths],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 240
    while time.time() < deadline:
        if out.exists() and len([n for n in os.listdir(out)
                                 if n.startswith("train-")
                                 and n.endswith(".json")]) >= 3:
            break
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (out / "manifest.json").exists()
    logs = []
    resumed = prepare(paths, str(out), shard_tokens=400,
                      validation_fraction=0.1, log=logs.append)
    assert any("resuming" in line for line in logs)
    assert resumed == whole
    for shard in whole["shards"]["train"] + whole["shards"]["validation"]:
        with open(out / shard["file"], "rb") as a, \
                open(tmp_path / "whole" / shard["file"], "rb") as b:
            assert a.read() == b.read()
    check_round_trip(str(out), texts)


def test_fast_wordpiece_path_equals_the_tokenizer():
    from keras_tfm.data.prepare import _WordPieceEncoder
    from keras_tfm.tokenizers import WordPieceTokenizer

    texts = make_texts(30, seed=7) + [
        "".join(chr(c) for c in range(1, 128)),
        "", " ", "\u00ff\u00fe", "a\u00a0b\u2003c d\ve\ff",
        "".join(chr(c) for c in range(0x370, 0x3ff)),
    ]
    tokenizer = WordPieceTokenizer.train(texts[:10], 200)
    encoder = _WordPieceEncoder(tokenizer, "uint16", print)
    assert encoder.fast
    fast = encoder(texts)
    ids, lengths = tokenizer.tokenize_with_byte_lengths(tf.constant(texts))
    for (fast_ids, fast_lengths), row_ids, row_lengths in zip(
            fast, ids.numpy(), lengths.numpy()):
        assert fast_ids.tolist() == row_ids.tolist()
        assert fast_lengths.tolist() == row_lengths.tolist()


def test_byte_ids_equal_the_tokenizer():
    from keras_tfm.data.prepare import _ByteEncoder

    texts = make_texts(5, seed=8) + ["".join(chr(c) for c in range(1, 300))]
    tokenizer = ByteTokenizer()
    fast = _ByteEncoder(tokenizer, "uint16")(texts)
    expected = tokenizer.tokenize(tf.constant(texts)).numpy()
    assert [f.tolist() for f, _ in fast] == [e.tolist() for e in expected]


# === The command line ===


def cli_args(*argv):
    parser = argparse.ArgumentParser()
    prepare_cli.add_parser(parser.add_subparsers(dest="command"))
    return parser.parse_args(["prepare", *argv])


def test_cli_missing_input_creates_nothing(tmp_path):
    args = cli_args("--data", str(tmp_path / "missing.jsonl"),
                    "--tokenizer", "byte", "--output-dir",
                    str(tmp_path / "out"))
    with pytest.raises(UserError) as error:
        prepare_cli.run(args)
    assert "missing.jsonl" in str(error.value)
    assert not (tmp_path / "out").exists()


def test_cli_prepares_and_reports(corpus, tmp_path, capsys):
    _, paths, _ = corpus
    args = cli_args("--data", *paths[:2], "--data", *paths[2:],
                    "--tokenizer", "byte", "--output-dir",
                    str(tmp_path / "out"), "--shard-tokens", "1000",
                    "--validation-fraction", "0.2", "--seed", "2")
    assert args.data == paths and args.format is None
    prepare_cli.run(args)
    out = capsys.readouterr().out
    assert "prepared corpus" in out and "60 documents" in out
    assert (tmp_path / "out" / "manifest.json").exists()


def test_cli_flags_have_help_with_defaults():
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command")
    command = prepare_cli.add_parser(sub)
    for action in command._actions:
        if action.dest in ("help",):
            continue
        assert action.help, action.dest
        if action.default not in (None, False):
            assert f"default: {action.default}" in action.help, action.dest
    with pytest.raises(SystemExit):
        cli_args("--data", "x", "--tokenizer", "bpe", "--output-dir", "o")
    with pytest.raises(SystemExit):
        cli_args("--data", "x", "--tokenizer", "byte", "--output-dir", "o",
                 "--validation-fraction", "1.5")
