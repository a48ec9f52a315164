"""Streaming documents out of text and JSON Lines files, plain or gzipped.

A corpus may be larger than memory, so nothing here reads a whole file:
files are read (and inflated) a chunk at a time, JSON Lines files a line
at a time, and a long plain-text document is handed on in pieces. What is
held at once is one line or one piece, whatever the corpus size (a piece
ends at whitespace, so a run of text with none is held whole).

Formats:
- plain text: one document per file;
- JSON Lines: one document per line, its text in a named field (default
  `"text"`); blank lines are ignored.

A file is gzip-compressed when its name ends in `.gz` or it starts with
gzip's magic bytes. With `format="auto"` a name ending in `.jsonl` or
`.jsonl.gz` means JSON Lines and any other name plain text.

Every problem is a `UserError` that names the file (and the line): a line
that is not JSON, is not an object or lacks the text field (with
`skip_bad_lines=True` such lines are skipped and counted instead), bytes
that are not UTF-8, a truncated or damaged gzip file.
"""

import codecs
import itertools
import json
import queue
import re
import threading
import zlib

from keras_tfm.errors import UserError

FORMATS = ("auto", "text", "jsonl")
GZIP_MAGIC = b"\x1f\x8b"
# zlib's window bits for the gzip container (16 + the largest window).
_GZIP_WBITS = 31
# Bytes read from disk at a time, and the most inflated bytes produced at a
# time, so that a highly compressed file is inflated in bounded steps.
CHUNK_BYTES = 1 << 20
# The longest piece of a document handed on at once, in characters.
PIECE_CHARS = 1 << 20
# Pieces end before one of these (newlines first), never elsewhere. They
# are what RE2's `\s` matches, the whitespace of the WordPiece
# pre-tokenizer: every word it makes starts at such a character or holds
# none, so a text cut before one tokenizes, piece by piece, into exactly
# the tokens of the whole text (bytes, too, could be split anywhere).
_CUT_BEFORE = ("\n", " ", "\t", "\r", "\f")
_WHITESPACE = re.compile("[\n \t\r\f]")
# How many skipped lines `ReadCounts` keeps as examples.
_EXAMPLES = 5
# Chunks read (and inflated) ahead by a thread.
_READ_AHEAD = 4


class ReadCounts:
    """What a read passed over: bad lines (skipped) and empty documents.

    Attributes:
        bad_lines: int. Lines skipped by `skip_bad_lines=True`.
        empty_documents: int. Documents with no text, which are dropped.
        examples: list of str. The first few skipped lines, as
            `"path line N: reason"`.
    """

    def __init__(self):
        self.bad_lines = 0
        self.empty_documents = 0
        self.examples = []

    def add_bad_line(self, path, number, reason):
        self.bad_lines += 1
        if len(self.examples) < _EXAMPLES:
            self.examples.append(f"'{path}' line {number}: {reason}")


def is_gzip(path):
    """Whether `path` is gzip-compressed: by its name or its first bytes."""
    if path.endswith(".gz"):
        return True
    with open(path, "rb") as f:
        return f.read(2) == GZIP_MAGIC


def input_format(path, format="auto"):
    """`"jsonl"` or `"text"`: `format`, or guessed from the file's name."""
    if format != "auto":
        return format
    name = path.removesuffix(".gz")
    return "jsonl" if name.endswith(".jsonl") else "text"


def read_chunks(path, digest=None):
    """Yields the bytes of a file, inflated if it is gzip-compressed.

    Multi-member gzip files (concatenated `.gz` files) are read whole;
    zero bytes after the last member (tape padding) are ignored.

    Args:
        path: str.
        digest: optional `hashlib` object, updated with the file's raw
            (compressed) bytes as they are read.

    Yields:
        bytes objects of at most `CHUNK_BYTES`.
    """
    compressed = is_gzip(path)
    with open(path, "rb") as f:
        if not compressed:
            while chunk := f.read(CHUNK_BYTES):
                if digest is not None:
                    digest.update(chunk)
                yield chunk
            return
        inflater, inside_member = zlib.decompressobj(_GZIP_WBITS), False
        while raw := f.read(CHUNK_BYTES):
            if digest is not None:
                digest.update(raw)
            data = raw
            while data:
                if not inside_member and not data.strip(b"\0"):
                    break  # padding after the last member
                inside_member = True
                try:
                    out = inflater.decompress(data, CHUNK_BYTES)
                except zlib.error as e:
                    raise UserError(
                        f"'{path}' is not valid gzip data ({e}): check it, "
                        f"e.g. with `gzip -t '{path}'`, or replace it."
                    ) from None
                if out:
                    yield out
                if inflater.eof:
                    data = inflater.unused_data
                    inflater = zlib.decompressobj(_GZIP_WBITS)
                    inside_member = False
                else:
                    data = inflater.unconsumed_tail
        if inside_member:
            raise UserError(
                f"'{path}' is a truncated gzip file (it ends inside the "
                "compressed data): copy or download it again."
            )


def read_ahead(iterator, depth=_READ_AHEAD):
    """Yields the items of `iterator`, produced ahead by a thread.

    File reads, zlib and hashing release the GIL, so the next chunk is
    read and inflated while the last one is parsed. At most `depth` items
    wait; an exception in the thread is raised here.
    """
    items, stop = queue.Queue(depth), threading.Event()

    def put(entry):
        while not stop.is_set():
            try:
                items.put(entry, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce():
        try:
            for item in iterator:
                if not put((True, item)):
                    return
            put((False, None))
        except BaseException as e:  # handed to the consumer
            put((False, e))

    threading.Thread(target=produce, daemon=True).start()
    try:
        while True:
            more, item = items.get()
            if not more:
                if item is not None:
                    raise item
                return
            yield item
    finally:
        stop.set()


def read_lines(path, digest=None):
    """Yields `(line_number, bytes)` for each line, without its newline.

    Holds one line (plus a few chunks) at a time, however long the file.
    """
    pending, number = [], 0
    for chunk in read_ahead(read_chunks(path, digest)):
        start = 0
        while (end := chunk.find(b"\n", start)) >= 0:
            number += 1
            line = chunk[start:end]
            if pending:
                line = b"".join(pending + [line])
                pending = []
            yield number, line
            start = end + 1
        if start < len(chunk):
            pending.append(chunk[start:])
    if pending:
        yield number + 1, b"".join(pending)


def cut_point(text, limit):
    """Where a piece of `text` of about `limit` characters should end.

    Before the last newline in the second half of the limit, else before
    the last other whitespace (see `_CUT_BEFORE`) in the limit, else
    before the first whitespace after it: a run without whitespace is
    never cut, so the tokens stay exact whatever the text. Returns
    `len(text)` when the text is short enough or has no whitespace.
    """
    if len(text) <= limit:
        return len(text)
    for low in (limit // 2, 1):
        for separator in _CUT_BEFORE:
            cut = text.rfind(separator, low, limit + 1)
            if cut > 0:
                return cut
    after = _WHITESPACE.search(text, limit)
    return after.start() if after else len(text)


def split_text(text, limit=PIECE_CHARS):
    """Yields `text` in pieces cut by `cut_point`; `"".join` of the pieces
    is `text`."""
    while len(text) > limit:
        cut = cut_point(text, limit)
        yield text[:cut]
        text = text[cut:]
    if text:
        yield text


class _BadLine(Exception):
    pass


def _line_text(line, text_field):
    """The text of one JSON Lines line, or `_BadLine` saying why not."""
    try:
        decoded = line.decode("utf-8")
    except UnicodeDecodeError as e:
        raise _BadLine(
            f"is not UTF-8 (byte {e.start + 1} is 0x{line[e.start]:02x})"
        ) from None
    try:
        record = json.loads(decoded)
    except ValueError as e:
        reason = getattr(e, "msg", str(e))
        raise _BadLine(f"is not JSON ({reason})") from None
    if not isinstance(record, dict):
        raise _BadLine(f"is a JSON {type(record).__name__}, not an object")
    if text_field not in record:
        fields = ", ".join(sorted(map(str, record))[:8]) or "none"
        raise _BadLine(f'has no "{text_field}" field (its fields: {fields})')
    text = record[text_field]
    if not isinstance(text, str):
        raise _BadLine(
            f'has a "{text_field}" that is a {type(text).__name__}, not a '
            "string"
        )
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as e:
            raise _BadLine(
                f'has a "{text_field}" with an unpaired surrogate '
                f"(\\u{ord(text[e.start]):04x}), which is not text"
            ) from None
    return text


def _jsonl_documents(path, text_field, skip_bad_lines, counts, digest,
                     piece_chars):
    for number, line in read_lines(path, digest):
        if number == 1:
            line = line.removeprefix(codecs.BOM_UTF8)
        if not line.strip():
            continue
        try:
            text = _line_text(line, text_field)
        except _BadLine as e:
            if not skip_bad_lines:
                raise UserError(
                    f"'{path}' line {number} {e}: fix the line, pass "
                    "--text-field or --format to match the file, or pass "
                    "--skip-bad-lines to skip such lines."
                ) from None
            counts.add_bad_line(path, number, str(e))
            continue
        if not text:
            counts.empty_documents += 1
            continue
        yield f"{path}:{number}", split_text(text, piece_chars)


def _text_pieces(path, digest, piece_chars):
    decoder = codecs.getincrementaldecoder("utf-8")()
    buffer, lines, started, final = "", 0, False, False
    chunks = read_ahead(read_chunks(path, digest))
    while not final:
        chunk = next(chunks, None)
        final = chunk is None
        try:
            text = decoder.decode(b"" if final else chunk, final=final)
        except UnicodeDecodeError as e:
            line = lines + e.object.count(b"\n", 0, e.start) + 1
            raise UserError(
                f"'{path}' is not UTF-8 text (line {line} has byte "
                f"0x{e.object[e.start]:02x}): convert it, e.g. with "
                f"`iconv -f latin1 -t utf-8 '{path}'`."
            ) from None
        if not final:
            lines += chunk.count(b"\n")
        if text and not started:
            text, started = text.removeprefix("\ufeff"), True
        buffer += text
        # Keep a piece's worth ahead so that cuts find whitespace; a run
        # without any waits for more text (or the end).
        while len(buffer) > 2 * piece_chars or (final and buffer):
            cut = cut_point(buffer, piece_chars)
            if cut == len(buffer) and not final:
                break
            yield buffer[:cut]
            buffer = buffer[cut:]


def _text_documents(path, counts, digest, piece_chars):
    pieces = _text_pieces(path, digest, piece_chars)
    first = next(pieces, None)
    if first is None:
        counts.empty_documents += 1
        return
    yield path, itertools.chain([first], pieces)


def document_pieces(path, format="auto", text_field="text",
                    skip_bad_lines=False, counts=None, digest=None,
                    piece_chars=PIECE_CHARS):
    """Yields the documents of one file, each as an iterator of pieces.

    Consume each document's pieces before asking for the next document:
    a plain-text document is read from the file as its pieces are taken.

    Args:
        path: str.
        format: `"auto"`, `"text"` or `"jsonl"`.
        text_field: str. The JSON field holding the text.
        skip_bad_lines: bool. Skip (and count) bad JSON Lines lines instead
            of raising.
        counts: optional `ReadCounts`, updated with skipped lines and
            empty documents.
        digest: optional `hashlib` object fed the file's raw bytes.
        piece_chars: int. The longest piece, in characters.

    Yields:
        `(source, pieces)`: `source` is the path (plain text) or
        `"path:line"` (JSON Lines); `pieces` yields non-empty strs (see
        `split_text`) whose concatenation is the document's text.
    """
    counts = counts if counts is not None else ReadCounts()
    if input_format(path, format) == "jsonl":
        return _jsonl_documents(path, text_field, skip_bad_lines, counts,
                                digest, piece_chars)
    return _text_documents(path, counts, digest, piece_chars)


def read_documents(paths, format="auto", text_field="text",
                   skip_bad_lines=False, counts=None):
    """Yields `(source, text)` for every document of the files, in order.

    Args:
        paths: list of file paths (see `keras_tfm.data.expand_patterns`).
        format, text_field, skip_bad_lines, counts: as for
            `document_pieces`.
    """
    for path in paths:
        for source, pieces in document_pieces(
            path, format, text_field, skip_bad_lines, counts
        ):
            yield source, "".join(pieces)
