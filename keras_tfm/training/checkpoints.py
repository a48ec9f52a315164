"""Checkpoints that survive a kill at any instant.

A checkpoint is `step-NNNNNNNN.weights.h5` (the weights of model and
optimizer, so also the step and the learning-rate schedule; the data
position is the step) plus a manifest `step-NNNNNNNN.json` with its size,
SHA-256 and the training loop's state at that step (the running train loss
of the unfinished evaluation interval, timings), so that a resumed run
reports what an uninterrupted one would. The weights file is written under
a temporary name, flushed to disk and renamed into place; the manifest is
written the same way, after it. A checkpoint counts only when its manifest
exists and matches, so a kill mid-write, a truncated file or a flipped byte
is detected, and the previous good checkpoint is used.
"""

import glob
import hashlib
import os
import re

from keras_tfm import files
from keras_tfm.errors import UserError

SUFFIX = ".weights.h5"
PATTERN = re.compile(r"step-(\d{8})\.weights\.h5$")


def _sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def checkpoint_path(directory, step):
    return os.path.join(directory, f"step-{step:08d}{SUFFIX}")


def manifest_path(directory, step):
    return os.path.join(directory, f"step-{step:08d}.json")


def save(trainer, directory, step, state=None, keep=2):
    """Saves `trainer`'s weights (model and optimizer) at `step` with the
    loop `state` (a JSON-able dict); keeps the newest `keep` checkpoints."""
    os.makedirs(directory, exist_ok=True)
    path = checkpoint_path(directory, step)
    temporary = os.path.join(directory, f".partial-{step:08d}{SUFFIX}")
    trainer.save_weights(temporary)
    files.fsync_file(temporary)
    manifest = {
        "step": step,
        "bytes": os.path.getsize(temporary),
        "sha256": _sha256(temporary),
        "state": state or {},
    }
    os.replace(temporary, path)
    files.write_json(manifest_path(directory, step), manifest)
    for old in list_steps(directory)[:-keep]:
        for stale in (checkpoint_path(directory, old),
                      manifest_path(directory, old)):
            if os.path.exists(stale):
                os.remove(stale)
    return path


def list_steps(directory):
    """Steps of the checkpoint files present, oldest first (unverified)."""
    steps = []
    for path in glob.glob(os.path.join(directory, f"step-*{SUFFIX}")):
        match = PATTERN.search(path)
        if match:
            steps.append(int(match.group(1)))
    return sorted(steps)


def read_manifest(directory, step):
    """The manifest at `step`, or `None` if it is missing or unreadable."""
    try:
        manifest = files.read_json(manifest_path(directory, step))
    except (OSError, ValueError):
        return None
    return manifest if isinstance(manifest, dict) else None


def verify(directory, step):
    """`None` if the checkpoint at `step` is intact, else why not."""
    path = checkpoint_path(directory, step)
    if not os.path.exists(manifest_path(directory, step)):
        return "its manifest is missing (the write did not finish)"
    manifest = read_manifest(directory, step)
    if manifest is None:
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
    """The newest intact checkpoint as `(step, path, state)`, or `None`.

    Damaged checkpoints are reported through `log` and skipped.

    Raises:
        UserError: checkpoints exist but none is intact.
    """
    steps = list_steps(directory)
    for step in reversed(steps):
        problem = verify(directory, step)
        if problem is None:
            state = read_manifest(directory, step).get("state") or {}
            return step, checkpoint_path(directory, step), state
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
