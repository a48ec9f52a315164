"""Checkpoints that survive a kill at any instant.

A checkpoint is `step-NNNNNNNN.keras` (model and optimizer, so also the
step and the learning-rate schedule; the data position is the step) plus a
manifest `step-NNNNNNNN.json` with its size and SHA-256. The `.keras` file
is written under a temporary name, flushed to disk and renamed into place;
the manifest is written the same way, after it. A checkpoint counts only
when its manifest exists and matches, so a kill mid-write, a truncated file
or a flipped byte is detected, and the previous good checkpoint is used.
"""

import glob
import hashlib
import json
import os
import re

from keras_tfm.errors import UserError

PATTERN = re.compile(r"step-(\d{8})\.keras$")


def _sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _fsync(path):
    with open(path, "rb+") as f:
        os.fsync(f.fileno())


def write_json_atomically(path, values):
    temporary = path + ".partial"
    with open(temporary, "w", encoding="utf-8") as f:
        json.dump(values, f, indent=2)
        f.flush()
        os.fsync(f.fileno())
    os.replace(temporary, path)


def checkpoint_path(directory, step):
    return os.path.join(directory, f"step-{step:08d}.keras")


def save(model, directory, step, keep=2):
    """Saves a checkpoint of `model` at `step`; keeps the newest `keep`."""
    os.makedirs(directory, exist_ok=True)
    path = checkpoint_path(directory, step)
    temporary = os.path.join(directory, f".partial-{step:08d}.keras")
    model.save(temporary)
    _fsync(temporary)
    manifest = {
        "step": step,
        "bytes": os.path.getsize(temporary),
        "sha256": _sha256(temporary),
    }
    os.replace(temporary, path)
    write_json_atomically(path[: -len(".keras")] + ".json", manifest)
    for old in list_steps(directory)[:-keep]:
        for suffix in (".keras", ".json"):
            stale = checkpoint_path(directory, old)[: -len(".keras")] + suffix
            if os.path.exists(stale):
                os.remove(stale)
    return path


def list_steps(directory):
    """Steps of the checkpoint files present, oldest first (unverified)."""
    steps = []
    for path in glob.glob(os.path.join(directory, "step-*.keras")):
        match = PATTERN.search(path)
        if match:
            steps.append(int(match.group(1)))
    return sorted(steps)


def verify(directory, step):
    """`None` if the checkpoint at `step` is intact, else why not."""
    path = checkpoint_path(directory, step)
    manifest_path = path[: -len(".keras")] + ".json"
    if not os.path.exists(manifest_path):
        return "its manifest is missing (the write did not finish)"
    try:
        with open(manifest_path, encoding="utf-8") as f:
            manifest = json.load(f)
    except (OSError, ValueError):
        return "its manifest is unreadable"
    if os.path.getsize(path) != manifest.get("bytes"):
        return (
            f"it has {os.path.getsize(path)} bytes, not the "
            f"{manifest.get('bytes')} written (truncated?)"
        )
    if _sha256(path) != manifest.get("sha256"):
        return "its SHA-256 does not match the one written (corrupted)"
    return None


def latest_good(directory, log=print):
    """The newest intact checkpoint as `(step, path)`, or `None`.

    Damaged checkpoints are reported through `log` and skipped.

    Raises:
        UserError: checkpoints exist but none is intact.
    """
    steps = list_steps(directory)
    for step in reversed(steps):
        problem = verify(directory, step)
        if problem is None:
            return step, checkpoint_path(directory, step)
        log(
            f"checkpoint at step {step} is unusable: {problem}; trying "
            "the previous one"
        )
    if steps:
        raise UserError(
            f"no intact checkpoint in '{directory}' (all "
            f"{len(steps)} are damaged): pass --restart to start over."
        )
    return None
