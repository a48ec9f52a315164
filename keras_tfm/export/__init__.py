"""Export a trained run: SavedModel for TF Serving, TFLite for phones.

`export_run(run_dir)` writes under `RUN_DIR/export/`:

    savedmodel/<model-name>/<version>/   TF Serving's layout
    tflite/model_float32.tflite          ids [1, L] -> logits
    tflite/model_float16.tflite
    tflite/model_dynamic_int8.tflite     int8 weights, float activations
    tflite/model_int8.tflite             int8 weights and activations
    tokenizer.json                       the vocabulary, for apps
    export_report.json                   sizes, parity and bits per byte

Each file is checked against the Keras model on held-out text: the
largest absolute difference of its logits, and its validation bits per
byte. Everything is written to a temporary directory that is renamed into
place at the end, so a failed conversion leaves nothing behind.
"""

import json
import math
import os
import shutil
import time

import numpy as np
import tensorflow as tf

from keras_tfm.errors import UserError
from keras_tfm.export import saved_model
from keras_tfm.export import tflite

FORMATS = ("savedmodel", "tflite")
QUANTIZATIONS = tflite.QUANTIZATIONS
TFLITE_NAMES = {
    "none": "model_float32.tflite",
    "float16": "model_float16.tflite",
    "dynamic": "model_dynamic_int8.tflite",
    "int8": "model_int8.tflite",
}
# Held-out windows for parity and bits per byte, and for int8 calibration.
PARITY_WINDOWS = 4
EVALUATION_WINDOWS = 32
CALIBRATION_WINDOWS = 64


def _check_choices(values, allowed, what):
    for value in values:
        if value not in allowed:
            raise UserError(
                f"unknown {what} '{value}': use {', '.join(allowed)}."
            )


def bits_per_byte(token_nll, windows):
    """Bits per byte from per-token NLL `[n, L]` of `windows`' targets."""
    targets = windows.tokens[:, 1:]
    nats = float(token_nll[targets != 0].sum())
    bits = nats / math.log(2) + 8 * windows.target_unknown_bytes.sum()
    return bits / max(1, windows.target_bytes.sum())


def _token_nll(logits, targets):
    logits = logits.astype(np.float64)
    top = logits.max(-1, keepdims=True)
    log_z = np.log(np.exp(logits - top).sum(-1)) + top[..., 0]
    picked = np.take_along_axis(logits, targets[..., None], -1)[..., 0]
    return log_z - picked


def export_run(
    run_dir,
    formats=FORMATS,
    quantize=QUANTIZATIONS,
    output=None,
    model_name=None,
    version=1,
    overwrite=False,
    allow_flex=False,
    log=print,
):
    """Exports a finished run; returns the report (also written as JSON).

    Paths in the report are relative to the export directory.
    """
    from keras_tfm.runs import load_run
    from keras_tfm.runs import validation_windows

    _check_choices(formats, FORMATS, "format")
    _check_choices(quantize, QUANTIZATIONS, "quantization")
    config, tokenizer, model = load_run(run_dir)
    output = output or os.path.join(run_dir, "export")
    model_name = model_name or os.path.basename(os.path.abspath(run_dir))
    if os.path.exists(output) and os.listdir(output):
        if not overwrite:
            raise UserError(
                f"'{output}' already holds an export: pass --overwrite to "
                "replace it, or --output for another directory."
            )
    windows = validation_windows(run_dir, config, tokenizer)
    held_out = windows.subset(np.arange(min(EVALUATION_WINDOWS, len(windows))))
    inputs = held_out.tokens[:, :-1]
    keras_logits = np.asarray(model.predict(inputs, verbose=0), np.float32)
    report = {
        "run_dir": run_dir,
        "objective": config.objective,
        "sequence_length": config.sequence_length,
        "vocabulary_size": tokenizer.vocabulary_size,
        "held_out_windows": len(held_out),
        "keras": {},
        "files": [],
    }
    if config.objective == "causal":
        report["keras"]["val_bits_per_byte"] = bits_per_byte(
            _token_nll(keras_logits, held_out.tokens[:, 1:]), held_out
        )

    staging = output.rstrip(os.sep) + ".partial"
    shutil.rmtree(staging, ignore_errors=True)
    os.makedirs(staging)
    try:
        tokenizer.save(staging)
        if "savedmodel" in formats:
            report["files"].append(_export_saved_model(
                model, tokenizer, config, staging, model_name, version,
                inputs[:PARITY_WINDOWS], keras_logits[:PARITY_WINDOWS], log,
            ))
        if "tflite" in formats:
            calibration = windows.tokens[:CALIBRATION_WINDOWS, :-1]
            for quantization in quantize:
                report["files"].append(_export_tflite(
                    model, config, staging, quantization, allow_flex,
                    calibration, held_out, keras_logits, log,
                ))
        _compare_sizes(report["files"])
        with open(os.path.join(staging, "export_report.json"), "w") as f:
            json.dump(report, f, indent=2)
        if os.path.exists(output):
            shutil.rmtree(output)
        os.replace(staging, output)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    report["output"] = output
    return report


def _export_saved_model(model, tokenizer, config, staging, model_name,
                        version, inputs, keras_logits, log):
    start = time.time()
    path = saved_model.saved_model_path(staging, model_name, version)
    saved_model.export_saved_model(model, tokenizer, path, config.objective)
    loaded = tf.saved_model.load(path)
    logits = loaded.signatures["serving_default"](
        token_ids=tf.constant(inputs, tf.int32)
    )["logits"].numpy()
    size = sum(
        os.path.getsize(os.path.join(root, name))
        for root, _, names in os.walk(path)
        for name in names
    )
    entry = {
        "path": os.path.relpath(path, staging),
        "format": "savedmodel",
        "quantization": "none",
        "bytes": size,
        "max_abs_logit_diff": float(np.abs(logits - keras_logits).max()),
        "signatures": sorted(loaded.signatures.keys()),
        "seconds": round(time.time() - start, 1),
    }
    log(f"savedmodel: {entry['path']} ({size:,} bytes, max |Δlogits| "
        f"{entry['max_abs_logit_diff']:.2e})")
    return entry


def _export_tflite(model, config, staging, quantization, allow_flex,
                   calibration, held_out, keras_logits, log):
    start = time.time()
    content, ops = tflite.convert_logits_model(
        model, config.sequence_length, quantization, allow_flex, calibration
    )
    path = os.path.join(staging, "tflite", TFLITE_NAMES[quantization])
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(content)
    runner = tflite.interpreter(path)
    logits = tflite.run_logits(runner, held_out.tokens[:, :-1])
    entry = {
        "path": os.path.relpath(path, staging),
        "format": "tflite",
        "quantization": quantization,
        "bytes": len(content),
        "max_abs_logit_diff": float(np.abs(logits - keras_logits).max()),
        "ops": ops,
        "flex_ops": tflite.flex_ops(ops),
        "seconds": round(time.time() - start, 1),
    }
    if config.objective == "causal":
        entry["val_bits_per_byte"] = bits_per_byte(
            _token_nll(logits, held_out.tokens[:, 1:]), held_out
        )
    log(f"tflite {quantization}: {entry['path']} ({len(content):,} bytes, max "
        f"|Δlogits| {entry['max_abs_logit_diff']:.2e}"
        + (f", {entry['val_bits_per_byte']:.4f} bits/byte"
           if "val_bits_per_byte" in entry else "") + ")")
    return entry


def _compare_sizes(entries):
    float32 = next(
        (e for e in entries
         if e["format"] == "tflite" and e["quantization"] == "none"),
        None,
    )
    if float32 is None:
        return
    for entry in entries:
        if entry["format"] == "tflite":
            entry["size_vs_float32"] = entry["bytes"] / float32["bytes"]
            if "val_bits_per_byte" in entry:
                entry["bits_per_byte_vs_float32"] = (
                    entry["val_bits_per_byte"] / float32["val_bits_per_byte"]
                )
