import json
import os
import random
import shutil

import numpy as np
import pytest
import tensorflow as tf
from tensorflow.python.data.experimental.ops import distribute

from keras_tfm.data.prepare import prepare
from keras_tfm.data.prepared import is_prepared_directory
from keras_tfm.data.prepared import open_prepared
from keras_tfm.data.prepared import stable_hash
from keras_tfm.errors import UserError
from keras_tfm.tokenizers import ByteTokenizer

SEQUENCE_LENGTH = 16
WIDTH = SEQUENCE_LENGTH + 1


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """About 12,000 tokens of random words (so that every window of 17
    tokens occurs once) in 40 documents, shards of 1,500 tokens."""
    root = tmp_path_factory.mktemp("prepared")
    rng = random.Random(0)
    words = ["".join(rng.choice("abcdefghijklmnopqrstuvwxyz")
                     for _ in range(rng.randint(2, 9))) for _ in range(500)]
    lines = [json.dumps({"text": " ".join(rng.choice(words)
                                          for _ in range(rng.randint(20, 80)))})
             for _ in range(40)]
    path = root / "corpus.jsonl"
    path.write_text("\n".join(lines) + "\n")
    out = root / "out"
    prepare([str(path)], str(out), shard_tokens=1500,
            validation_fraction=0.15, seed=1, log=lambda line: None)
    return str(out)


def shard_tokens(directory, name):
    return np.fromfile(os.path.join(directory, name), "<u2").astype(np.int64)


def windows_of(dataset, count):
    """The first `count` batches' windows, rebuilt from (inputs, targets)."""
    out = []
    for inputs, targets in dataset.take(count):
        inputs, targets = inputs.numpy(), targets.numpy()
        assert np.array_equal(inputs[:, 1:], targets[:, :-1])
        out.extend(np.concatenate([inputs, targets[:, -1:]], axis=1))
    return [tuple(w) for w in out]


def splitmix64(*values):
    """A plain-Python splitmix64 chain, the reference for `stable_hash`."""
    mask, state = (1 << 64) - 1, 0
    for value in values:
        z = ((state ^ value) + 0x9E3779B97F4A7C15) & mask
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & mask
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & mask
        state = z ^ (z >> 31)
    return state


def test_stable_hash_is_splitmix64():
    # The split and the plan depend on it: it must never change.
    assert splitmix64(0) == 0xE220A8397B1DCDAF  # splitmix64's first output
    got = stable_hash(7, 4, np.arange(5)).tolist()
    assert got == [splitmix64(7, 4, i) for i in range(5)]
    assert stable_hash(2**64 + 3).tolist() == [splitmix64(3)]


def test_open_reports_the_manifest(prepared, tmp_path):
    assert is_prepared_directory(prepared)
    assert not is_prepared_directory(str(tmp_path))
    corpus = open_prepared(prepared)
    with open(os.path.join(prepared, "manifest.json")) as f:
        manifest = json.load(f)
    assert corpus.manifest == manifest
    assert corpus.manifest_hash == manifest["manifest_sha256"]
    assert corpus.stats["documents"] == 40
    assert corpus.stats["tokens"] == sum(
        s["tokens"] for split in ("train", "validation")
        for s in manifest["shards"][split])
    assert isinstance(corpus.tokenizer(), ByteTokenizer)


def test_a_manifest_that_does_not_match_its_shards(prepared, tmp_path):
    copy = str(tmp_path / "copy")
    shutil.copytree(prepared, copy)
    with open(os.path.join(copy, "train-00002.tokens"), "r+b") as f:
        f.seek(40)
        f.write(b"\x09\x00")
    open_prepared(copy, verify=False)  # sizes still match
    with pytest.raises(UserError) as error:
        open_prepared(copy)
    assert "'train-00002.tokens'" in str(error.value)
    assert "sha256" in str(error.value) and "\n" not in str(error.value)
    with open(os.path.join(copy, "validation-00000.bytes"), "r+b") as f:
        f.truncate(8)
    with pytest.raises(UserError) as error:
        open_prepared(copy, verify=False)
    assert "'validation-00000.bytes'" in str(error.value)


def test_an_edited_manifest_or_tokenizer_is_refused(prepared, tmp_path):
    copy = str(tmp_path / "copy")
    shutil.copytree(prepared, copy)
    path = os.path.join(copy, "manifest.json")
    with open(path) as f:
        manifest = json.load(f)
    manifest["documents"] += 1
    with open(path, "w") as f:
        json.dump(manifest, f)
    with pytest.raises(UserError) as error:
        open_prepared(copy)
    assert "changed after prepare" in str(error.value)
    shutil.copy(os.path.join(prepared, "manifest.json"), path)
    with open(os.path.join(copy, "tokenizer.json"), "a") as f:
        f.write(" ")
    with pytest.raises(UserError):
        open_prepared(copy).tokenizer()
    os.remove(path)
    with pytest.raises(UserError) as error:
        open_prepared(copy)
    assert "did not finish" in str(error.value)
    with pytest.raises(UserError) as error:
        open_prepared(str(tmp_path))
    assert "no manifest.json" in str(error.value)


def test_windows_are_contiguous_runs_of_shard_tokens(prepared):
    corpus = open_prepared(prepared)
    shards = {s["file"]: shard_tokens(prepared, s["file"]).astype("<u2")
              .tobytes() for s in corpus.shards("train")}
    dataset = corpus.train_dataset(SEQUENCE_LENGTH, 32, seed=3)
    assert (dataset.options().experimental_distribute.auto_shard_policy
            == tf.data.experimental.AutoShardPolicy.AUTO)
    windows = windows_of(dataset, 60)  # about three passes
    for window in windows:
        data = np.array(window, "<u2").tobytes()
        found = [name for name, tokens in shards.items()
                 if any(i % 2 == 0 for i in _finds(tokens, data))]
        assert len(found) == 1, window
    # Each pass starts its files at other offsets: more distinct windows
    # than one pass holds.
    per_pass = sum(len(shards[n]) // 2 // WIDTH for n in shards)
    assert len(set(windows)) > per_pass


def _finds(haystack, needle):
    start = haystack.find(needle)
    while start >= 0:
        yield start
        start = haystack.find(needle, start + 1)


def test_batches_are_seeded_and_resume_exactly(prepared):
    corpus = open_prepared(prepared)

    def batches(seed, start_step=0, count=50):
        dataset = corpus.train_dataset(SEQUENCE_LENGTH, 32, seed=seed,
                                       start_step=start_step)
        return windows_of(dataset, count)

    first = batches(7)
    assert first == batches(7)
    assert first != batches(8)
    assert batches(7, start_step=23, count=27) == first[23 * 32:]


def test_files_shuffled_in_several_blocks_resume_and_cover_a_pass(
        prepared, monkeypatch):
    # Real corpora shuffle each file in many blocks (the fixture's files
    # fit in one): with blocks of a few windows, the stream still resumes
    # exactly, and one pass yields every window of its files once.
    from keras_tfm.data import prepared as prepared_module

    monkeypatch.setattr(prepared_module, "SHUFFLE_TOKENS", 3 * 16 * WIDTH)
    corpus = open_prepared(prepared)
    first_pass = corpus.read_plan(SEQUENCE_LENGTH, seed=3)[0]
    cycle = min(prepared_module.CYCLE_FILES, len(first_pass))
    assert max(e[2] for e in first_pass) > 3 * (3 * 16 // cycle)

    def batches(start_step=0, count=40):
        dataset = corpus.train_dataset(SEQUENCE_LENGTH, 16, seed=3,
                                       start_step=start_step)
        return windows_of(dataset, count)

    stream = batches()
    assert batches(start_step=17, count=23) == stream[17 * 16:]
    wanted = expected_windows(prepared, first_pass)
    assert len(wanted) == sum(e[2] for e in first_pass)
    seen = stream[:len(wanted) + 16 * cycle]
    assert wanted <= set(seen)
    # The blocks are shuffled: a file's windows do not come in file order.
    name, offset, count, _ = first_pass[0]
    tokens = shard_tokens(prepared, name)
    in_file_order = [tuple(tokens[offset + k * WIDTH:][:WIDTH])
                     for k in range(count)]
    from_first_file = [w for w in seen if w in set(in_file_order)]
    assert from_first_file[:count] != in_file_order


def expected_windows(directory, entries):
    windows = set()
    for name, offset, count, _ in entries:
        tokens = shard_tokens(directory, name)
        for k in range(count):
            start = offset + k * WIDTH
            windows.add(tuple(tokens[start:start + WIDTH]))
    return windows


def test_two_pipelines_read_disjoint_windows_that_cover_a_pass(prepared):
    corpus = open_prepared(prepared)
    first_pass = corpus.read_plan(SEQUENCE_LENGTH, seed=4)[0]
    assert sorted(e[0] for e in first_pass) == sorted(
        s["file"] for s in corpus.shards("train"))
    shares = [expected_windows(prepared, first_pass[i::2]) for i in (0, 1)]
    assert shares[0].isdisjoint(shares[1])
    streams = []
    for i in (0, 1):
        context = tf.distribute.InputContext(
            num_input_pipelines=2, input_pipeline_id=i,
            num_replicas_in_sync=2)
        dataset = corpus.train_dataset(SEQUENCE_LENGTH, 16, seed=4,
                                       input_context=context)
        seen = []
        for window in windows_of(dataset, 200):
            seen.append(window)
            if shares[i] <= set(seen):
                break
        # All of this pipeline's share of the pass, none of the other's.
        assert shares[i] <= set(seen)
        assert shares[1 - i].isdisjoint(seen)
        streams.append(seen)
    # tf.data's own auto-sharding by file gives each worker the same
    # stream (with FILE forced, it fails rather than fall back to DATA).
    for i in (0, 1):
        dataset = corpus.train_dataset(SEQUENCE_LENGTH, 16, seed=4,
                                       num_workers=2)
        options = tf.data.Options()
        options.experimental_distribute.auto_shard_policy = (
            tf.data.experimental.AutoShardPolicy.FILE)
        sharded = distribute._AutoShardDataset(
            dataset.with_options(options), 2, i)
        assert windows_of(sharded, 8) == streams[i][:128]


def test_auto_sharded_resume_skips_a_workers_share(prepared):
    corpus = open_prepared(prepared)

    def worker_stream(start_step, count):
        dataset = corpus.train_dataset(SEQUENCE_LENGTH, 16, seed=2,
                                       start_step=start_step, num_workers=2)
        return windows_of(distribute._AutoShardDataset(dataset, 2, 1), count)

    # A worker uses 16 / 2 windows a step: 10 steps are 5 of its batches.
    assert worker_stream(10, 4) == worker_stream(0, 9)[5 * 16:]


def test_masked_batches(prepared):
    corpus = open_prepared(prepared)
    dataset = corpus.train_dataset(SEQUENCE_LENGTH, 8, seed=1,
                                   objective="masked")
    (masked, labels, weights), = dataset.take(1)
    assert masked.shape == labels.shape == weights.shape == (8, 16)
    picked = weights.numpy() == 1
    assert picked.any()
    assert np.array_equal(masked.numpy()[~picked], labels.numpy()[~picked])
    again, = dataset.take(1)
    assert np.array_equal(again[0].numpy(), masked.numpy())
    plain, = corpus.train_dataset(SEQUENCE_LENGTH, 8, seed=1).take(1)
    assert np.array_equal(plain[0].numpy(), labels.numpy())


def test_validation_windows_for_bits_per_byte(prepared):
    corpus = open_prepared(prepared)
    stream = np.concatenate([shard_tokens(prepared, s["file"])
                             for s in corpus.shards("validation")])
    windows = corpus.validation_windows(SEQUENCE_LENGTH)
    count = len(stream) // WIDTH
    assert len(windows) == count
    expected = stream[:count * WIDTH].reshape(count, WIDTH)
    assert np.array_equal(windows.tokens, expected)
    # Byte tokens cover one byte each, [EOS] none.
    assert windows.target_bytes.tolist() == (
        expected[:, 1:] != 3).sum(axis=1).tolist()
    assert not windows.target_unknown_bytes.any()
    with pytest.raises(UserError):
        corpus.validation_windows(len(stream))


def test_sequences_longer_than_every_shard_are_refused(prepared):
    with pytest.raises(UserError) as error:
        open_prepared(prepared).train_dataset(5000, 8)
    assert "--sequence-length" in str(error.value)
