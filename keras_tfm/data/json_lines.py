"""Reading the JSON Lines files a user gives a fine-tuning task: one
object per line, with a one-line error naming the line for anything
else."""

import gzip
import json

from keras_tfm.errors import UserError


def open_text(path, newline=None):
    """`path` (gzipped if it ends in .gz) as UTF-8 text; utf-8-sig drops
    the byte-order mark some spreadsheets and editors write."""
    if path.endswith(".gz"):
        return gzip.open(path, "rt", encoding="utf-8-sig", newline=newline)
    return open(path, encoding="utf-8-sig", newline=newline)


def records(f, path, fields):
    """Yields `(line_number, record)` for each non-blank line of the open
    file `f`.

    Args:
        fields: `{field: hint}`: each record must hold each field; a line
            without one is refused with its hint (how to name it).

    Raises:
        UserError: a line is not JSON, not an object, or lacks a field.
    """
    for line_number, line in enumerate(f, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            raise UserError(
                f"line {line_number} of '{path}' is not JSON: JSON Lines "
                "files hold one object per line."
            ) from None
        if not isinstance(record, dict):
            raise UserError(
                f"line {line_number} of '{path}' is not a JSON object."
            )
        for field, hint in fields.items():
            if field not in record:
                raise UserError(
                    f"line {line_number} of '{path}' has no field "
                    f"'{field}' (its fields: {', '.join(record)}): {hint}."
                )
        yield line_number, record
