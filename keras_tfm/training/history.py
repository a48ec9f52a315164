"""The record of evaluations: `history.csv`, TensorBoard and the log."""

import csv
import math
import os

import tensorflow as tf


class History:
    """Writes one row per evaluation to `history.csv` and TensorBoard.

    Keras reports the validation loss as mean nats per predicted token;
    with the validation batches' token and byte counts that becomes bits
    per byte (`[UNK]` bytes charged 8 bits each). A resumed run first drops
    rows after its checkpoint, which it is about to redo.

    Args:
        run_dir: the run directory, or `None` to write nothing (workers
            other than the chief).
    """

    COLUMNS = (
        "step",
        "train_loss",
        "val_loss",
        "val_perplexity",
        "val_bits_per_byte",
        "learning_rate",
        "tokens_seen",
        "elapsed_seconds",
    )

    def __init__(self, run_dir, val_tokens, val_bytes, val_unknown_bytes,
                 start_step=0):
        self.run_dir = run_dir
        self.val_tokens = val_tokens
        self.val_bytes = val_bytes
        self.val_unknown_bytes = val_unknown_bytes
        self.writer = None
        if run_dir is None:
            return
        self.path = os.path.join(run_dir, "history.csv")
        rows = []
        if os.path.exists(self.path):
            with open(self.path, newline="", encoding="utf-8") as f:
                rows = [r for r in csv.DictReader(f) if int(r["step"]) <= start_step]
        with open(self.path, "w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=self.COLUMNS)
            writer.writeheader()
            writer.writerows(rows)
        self.writer = tf.summary.create_file_writer(
            os.path.join(run_dir, "logs")
        )

    def bits_per_byte(self, val_loss):
        bits = val_loss * self.val_tokens / math.log(2)
        return (bits + 8 * self.val_unknown_bytes) / max(1, self.val_bytes)

    def record(self, step, train_loss, val_loss, learning_rate, tokens_seen,
               elapsed_seconds, log=print):
        row = {
            "step": step,
            "train_loss": train_loss,
            "val_loss": val_loss,
            "val_perplexity": math.exp(min(val_loss, 700.0)),
            "val_bits_per_byte": self.bits_per_byte(val_loss),
            "learning_rate": learning_rate,
            "tokens_seen": tokens_seen,
            "elapsed_seconds": round(elapsed_seconds, 1),
        }
        log(
            f"step {step}: train loss {train_loss:.4f}, val loss "
            f"{val_loss:.4f}, val perplexity {row['val_perplexity']:.3f}, "
            f"val bits/byte {row['val_bits_per_byte']:.4f}",
            flush=True,
        )
        if self.run_dir is None:
            return row
        with open(self.path, "a", newline="", encoding="utf-8") as f:
            csv.DictWriter(f, fieldnames=self.COLUMNS).writerow(row)
        with self.writer.as_default(step=step):
            for name in ("train_loss", "val_loss", "val_perplexity",
                         "val_bits_per_byte", "learning_rate"):
                tf.summary.scalar(name, row[name])
        self.writer.flush()
        return row

    def close(self):
        if self.writer is not None:
            self.writer.close()
