import gzip
import hashlib
import json
import zlib

import pytest

from keras_tfm.data import readers
from keras_tfm.errors import UserError


def write_gzip(path, data):
    path.write_bytes(gzip.compress(data))
    return str(path)


def write_jsonl(path, records, compress=False):
    data = "".join(json.dumps(r) + "\n" for r in records).encode("utf-8")
    if compress:
        return write_gzip(path, data)
    path.write_bytes(data)
    return str(path)


def assert_one_line(error, *fragments):
    message = str(error.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message, message


def test_plain_and_gzipped_text_files_are_one_document_each(tmp_path):
    plain = tmp_path / "a.txt"
    plain.write_bytes("\ufeffcaf\u00e9\nline two\n".encode("utf-8"))
    named = write_gzip(tmp_path / "b.txt.gz", "second doc".encode())
    # gzip data under a name without .gz: found by its magic bytes.
    unnamed = write_gzip(tmp_path / "c.txt", "third doc".encode())
    documents = list(readers.read_documents([str(plain), named, unnamed]))
    assert documents == [
        (str(plain), "caf\u00e9\nline two\n"),  # BOM dropped
        (named, "second doc"),
        (unnamed, "third doc"),
    ]


def test_json_lines_plain_and_gzipped(tmp_path):
    records = [{"text": "first", "id": 1}, {"text": "sec\u00f8nd"}]
    plain = write_jsonl(tmp_path / "a.jsonl", records)
    packed = write_jsonl(tmp_path / "b.jsonl.gz", records, compress=True)
    # Blank lines are not documents (nor bad lines).
    blank = tmp_path / "c.jsonl"
    blank.write_text('\n{"body": "x"}\n\n  \n{"body": "y"}')
    assert list(readers.read_documents([plain, packed])) == [
        (f"{plain}:1", "first"), (f"{plain}:2", "sec\u00f8nd"),
        (f"{packed}:1", "first"), (f"{packed}:2", "sec\u00f8nd"),
    ]
    assert list(readers.read_documents([str(blank)], text_field="body")) == [
        (f"{blank}:2", "x"), (f"{blank}:5", "y")]
    # --format jsonl reads any name as JSON Lines.
    other = tmp_path / "records.txt"
    other.write_text('{"text": "z"}\n')
    assert list(readers.read_documents([str(other)], format="jsonl")) == [
        (f"{other}:1", "z")]


def test_multi_member_gzip_and_zero_padding(tmp_path):
    path = tmp_path / "joined.jsonl.gz"
    path.write_bytes(
        gzip.compress(b'{"text": "one"}\n')
        + gzip.compress(b'{"text": "two"}\n')
        + b"\0" * 64
    )
    texts = [text for _, text in readers.read_documents([str(path)])]
    assert texts == ["one", "two"]


def test_lines_across_chunk_boundaries(tmp_path, monkeypatch):
    monkeypatch.setattr(readers, "CHUNK_BYTES", 7)
    records = [{"text": "x" * n} for n in (0, 1, 5, 30, 2)]
    path = write_jsonl(tmp_path / "a.jsonl.gz", records, compress=True)
    counts = readers.ReadCounts()
    texts = [t for _, t in readers.read_documents([path], counts=counts)]
    assert texts == ["x", "x" * 5, "x" * 30, "x" * 2]
    assert counts.empty_documents == 1


def test_inflating_is_bounded(tmp_path):
    # 16 MB of zeros compress to about 16 KB: inflated a chunk at a time.
    path = write_gzip(tmp_path / "zeros.gz", bytes(16 << 20))
    digest = hashlib.sha256()
    sizes = [len(c) for c in readers.read_chunks(path, digest)]
    assert sum(sizes) == 16 << 20
    assert max(sizes) <= readers.CHUNK_BYTES
    with open(path, "rb") as f:
        assert digest.hexdigest() == hashlib.sha256(f.read()).hexdigest()


BAD_LINES = {
    "not json": (b'{"text": "a"\n', "line 2 is not JSON"),
    "no field": (b'{"body": "a"}\n', 'line 2 has no "text" field'),
    "not object": (b'["a"]\n', "line 2 is a JSON list"),
    "not string": (b'{"text": 5}\n', 'line 2 has a "text" that is a int'),
    "surrogate": (b'{"text": "\\ud800"}\n', "unpaired surrogate"),
    "not utf-8": (b'{"text": "caf\xe9"}\n', "line 2 is not UTF-8"),
}


@pytest.mark.parametrize("kind", sorted(BAD_LINES))
def test_bad_line_is_named_with_file_and_line(tmp_path, kind):
    line, fragment = BAD_LINES[kind]
    path = tmp_path / "bad.jsonl"
    path.write_bytes(b'{"text": "ok"}\n' + line + b'{"text": "fine"}\n')
    with pytest.raises(UserError) as error:
        list(readers.read_documents([str(path)]))
    assert_one_line(error, str(path), fragment, "--skip-bad-lines")
    counts = readers.ReadCounts()
    documents = list(readers.read_documents([str(path)], skip_bad_lines=True,
                                            counts=counts))
    assert [text for _, text in documents] == ["ok", "fine"]
    assert counts.bad_lines == 1
    assert counts.examples[0].startswith(f"'{path}' line 2:")


def test_text_file_that_is_not_utf8_names_the_line(tmp_path):
    path = tmp_path / "latin.txt"
    path.write_bytes(b"fine\nstill fine\nna\xefve\n")
    with pytest.raises(UserError) as error:
        list(readers.read_documents([str(path)]))
    assert_one_line(error, str(path), "line 3", "0xef", "iconv")


def test_truncated_gzip_is_one_line_error(tmp_path):
    data = gzip.compress(json.dumps({"text": "x" * 5000}).encode() * 20)
    path = tmp_path / "cut.jsonl.gz"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(UserError) as error:
        list(readers.read_documents([str(path)]))
    assert_one_line(error, str(path), "truncated gzip")


def test_damaged_gzip_is_one_line_error(tmp_path):
    data = bytearray(gzip.compress(b"some text " * 1000))
    data[20:40] = b"\xff" * 20
    path = tmp_path / "bad.txt.gz"
    path.write_bytes(bytes(data))
    with pytest.raises(UserError) as error:
        list(readers.read_documents([str(path)]))
    assert_one_line(error, str(path), "gzip")


def test_empty_text_file_is_no_document(tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    counts = readers.ReadCounts()
    assert list(readers.read_documents([str(empty)], counts=counts)) == []
    assert counts.empty_documents == 1


@pytest.mark.parametrize("kind", ["text", "jsonl"])
def test_long_documents_come_in_pieces_cut_before_whitespace(tmp_path, kind):
    text = ("word " * 7 + "longer-line\n") * 30 + "x" * 200 + " end"
    if kind == "text":
        path = tmp_path / "long.txt.gz"
        write_gzip(path, text.encode())
    else:
        path = tmp_path / "long.jsonl"
        write_jsonl(path, [{"text": text}])
    [(_, pieces)] = [
        (source, list(pieces))
        for source, pieces in readers.document_pieces(str(path),
                                                      piece_chars=50)
    ]
    assert "".join(pieces) == text
    # Every cut is before whitespace (a newline where there is one); only
    # the piece with the 200 x's, which have none, is longer than 50.
    assert all(p[0] in " \n" for p in pieces[1:])
    assert [len(p) > 50 for p in pieces].count(True) == 1
    assert sum(p.startswith("\n") for p in pieces) >= 25


def test_cut_point_prefers_newlines():
    text = "aaaa bbbb\ncccc dddd eeee"
    assert readers.cut_point(text, 16) == text.index("\n")
    assert readers.cut_point("aaaa bbbb cccc", 12) == 9
    assert readers.cut_point("x" * 30, 10) == 30
    assert readers.cut_point("x" * 30 + " y", 10) == 30
    assert readers.cut_point("short", 10) == 5


def test_input_format_by_name(tmp_path):
    assert readers.input_format("a.jsonl") == "jsonl"
    assert readers.input_format("a.jsonl.gz") == "jsonl"
    assert readers.input_format("a.json") == "text"
    assert readers.input_format("a.txt.gz") == "text"
    assert readers.input_format("a.txt", "jsonl") == "jsonl"


def test_read_ahead_passes_errors_and_stops(tmp_path):
    def items():
        yield 1
        yield 2
        raise zlib.error("boom")

    seen = []
    with pytest.raises(zlib.error):
        for item in readers.read_ahead(items()):
            seen.append(item)
    assert seen == [1, 2]
    # A consumer that stops early does not hang the producer.
    endless = readers.read_ahead(iter(range(10**9)), depth=2)
    assert next(endless) == 0
    endless.close()
