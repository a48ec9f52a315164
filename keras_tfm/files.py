"""Writing files so that a kill at any instant never leaves half of one.

Every file keras-tfm writes that a later process reads (configs,
tokenizers, manifests, metrics, reports) goes through here: written under a
temporary name beside its destination, flushed to disk, then renamed into
place, which POSIX makes atomic.
"""

import contextlib
import json
import math
import os
import tempfile


def fsync_file(path):
    with open(path, "rb+") as f:
        os.fsync(f.fileno())


@contextlib.contextmanager
def atomic_write(path, mode="w", encoding="utf-8", newline=None):
    """Opens a temporary file that replaces `path` when the block ends.

    If the block raises, the temporary file is removed and `path` is left
    as it was.
    """
    # A unique temporary name: two writers of one file (a run redrawing
    # its curves while `keras-tfm plot` draws them) never share one.
    directory, name = os.path.split(os.path.abspath(path))
    fd, temporary = tempfile.mkstemp(prefix=f".{name}.", suffix=".partial",
                                     dir=directory)
    kwargs = {} if "b" in mode else {"encoding": encoding, "newline": newline}
    try:
        with os.fdopen(fd, mode, **kwargs) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)


def json_safe(value):
    """`value` with every NaN or infinite float replaced by `None`.

    JSON has no NaN: Python writes a bare `NaN` that other readers reject.
    """
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def write_json(path, value, indent=2):
    """Writes `value` as strict JSON (NaN as null), atomically."""
    with atomic_write(path) as f:
        json.dump(json_safe(value), f, indent=indent, allow_nan=False,
                  ensure_ascii=False)
        f.write("\n")


def read_json(path, what="file"):
    """Reads a JSON file; `ValueError` names the file if it is damaged."""
    with open(path, encoding="utf-8") as f:
        text = f.read()
    try:
        return json.loads(text)
    except ValueError as e:
        raise ValueError(f"{what} '{path}' is not valid JSON ({e})") from None
