"""Reading text corpora: files and globs, or the default corpus."""

import glob
import os

from keras_tfm.errors import UserError


def default_corpus():
    """The documentation topics shipped with every Python install.

    `pydoc_data.topics` holds the text of `help()`'s topics (the language
    reference's sections): about 470 KB of English technical prose that is
    on every machine with Python, so the main job runs offline anywhere.
    Returns a list of `(name, text)` documents, one per topic, sorted.
    """
    from pydoc_data import topics

    return [
        (f"pydoc_data:{name}", text)
        for name, text in sorted(topics.topics.items())
        if text.strip()
    ]


def expand_patterns(patterns):
    """Files named by paths or globs, in order, each once."""
    paths = []
    for pattern in patterns:
        if glob.has_magic(pattern):
            matches = sorted(p for p in glob.glob(pattern) if os.path.isfile(p))
            if not matches:
                raise UserError(
                    f"no file matches '{pattern}': check the pattern, or "
                    "quote it so that the shell does not expand it."
                )
        elif os.path.isdir(pattern):
            raise UserError(
                f"'{pattern}' is a directory: pass files or a glob such as "
                f"'{os.path.join(pattern, '*.txt')}'."
            )
        elif not os.path.isfile(pattern):
            raise UserError(
                f"no such file: '{pattern}': check the path passed to --data."
            )
        else:
            matches = [pattern]
        paths.extend(p for p in matches if p not in paths)
    return paths


def read_text_file(path):
    """A file's text; a clear error for empty or non-UTF-8 files."""
    with open(path, "rb") as f:
        data = f.read()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise UserError(
            f"'{path}' is not UTF-8 text (byte {e.start} is "
            f"0x{data[e.start]:02x}): convert it, e.g. with "
            f"`iconv -f latin1 -t utf-8 '{path}'`."
        ) from None
    if not text.strip():
        raise UserError(f"'{path}' is empty: pass a file with text in it.")
    return text.removeprefix("\ufeff")


def load_corpus(patterns=None):
    """`(name, text)` documents in memory: one per plain text file, one per
    line of a JSON Lines file (`.jsonl`, the text in its "text" field),
    gzip-compressed or not; or the default corpus."""
    from keras_tfm.data import readers

    if not patterns:
        return default_corpus()
    documents = []
    for path in expand_patterns(patterns):
        if readers.is_gzip(path) or readers.input_format(path) == "jsonl":
            documents.extend(readers.read_documents([path]))
        else:
            documents.append((path, read_text_file(path)))
    return documents
