"""The record of evaluations: `history.csv`, TensorBoard and the log."""

import csv
import math
import os

import tensorflow as tf

from keras_tfm import files


class History:
    """One row per evaluation in `history.csv` and TensorBoard.

    A resumed run first drops the rows after its checkpoint, which it is
    about to redo, and keeps the rest; the file is rewritten atomically.

    Args:
        run_dir: the run directory, or `None` for none.
        columns: the CSV columns, `step` first.
        keep_through_step: rows with a larger step are dropped.
        writable: `False` on workers other than the chief of a
            multi-worker job: they read the rows (every worker must make
            the same decisions from them) and write nothing.
    """

    def __init__(self, run_dir, columns, keep_through_step=0,
                 writable=True):
        self.columns = tuple(columns)
        self.writer = None
        self.rows = []
        # Called with the history after each row (e.g. to redraw a plot).
        self.on_record = []
        path = os.path.join(run_dir, "history.csv") if run_dir else None
        if path and os.path.exists(path):
            with open(path, newline="", encoding="utf-8") as f:
                self.rows = [
                    row for row in csv.DictReader(f)
                    if row.get("step", "").isdigit()
                    and int(row["step"]) <= keep_through_step
                ]
        self.run_dir = run_dir if writable else None
        if self.run_dir is None:
            return
        self.path = path
        with files.atomic_write(self.path, newline="") as f:
            writer = csv.DictWriter(f, fieldnames=self.columns,
                                    extrasaction="ignore")
            writer.writeheader()
            writer.writerows(self.rows)
        self.writer = tf.summary.create_file_writer(
            os.path.join(run_dir, "logs")
        )

    def has_row(self, step):
        return any(int(row["step"]) == step for row in self.rows)

    def last_row(self):
        return self.rows[-1] if self.rows else None

    def record(self, row, log=print):
        """Appends `row` (a dict of the columns) and logs it in one line."""
        parts = []
        for name in self.columns[1:]:
            value = row.get(name)
            if name.startswith(("train_", "val_")) and isinstance(
                value, float
            ):
                parts.append(f"{name.replace('_', ' ')} {value:.4f}")
        log(f"step {row['step']}: " + ", ".join(parts), flush=True)
        self.rows.append({k: str(v) for k, v in row.items()})
        if self.run_dir is None:
            return row
        with open(self.path, "a", newline="", encoding="utf-8") as f:
            csv.DictWriter(f, fieldnames=self.columns,
                           extrasaction="ignore").writerow(row)
            f.flush()
            os.fsync(f.fileno())
        with self.writer.as_default(step=int(row["step"])):
            for name in self.columns[1:]:
                value = row.get(name)
                if isinstance(value, (int, float)) and math.isfinite(value):
                    tf.summary.scalar(name, value)
        self.writer.flush()
        for hook in self.on_record:
            hook(self)
        return row

    def close(self):
        if self.writer is not None:
            self.writer.close()
            self.writer = None
