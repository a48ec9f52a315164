"""Export a classification run: SavedModel for TF Serving, TFLite for phones.

`export_classifier_run(run_dir, ...)` writes under `RUN_DIR/export/`:

    savedmodel/<model-name>/<version>/   TF Serving's layout
    tflite/model_float32.tflite          text [1] -> label_id, probabilities
    tflite/model_float16.tflite
    tflite/model_dynamic_int8.tflite     int8 weights, float activations
    tflite/model_int8.tflite             int8 weights and activations
    labels.json                          label names: label_id i is labels[i]
    tokenizer.json                       the vocabulary
    export_report.json                   sizes, ops, parity and accuracy

SavedModel signatures:

- `serving_default`: `text` string `[batch]` -> `label` string `[batch]`,
  `probabilities` float32 `[batch, classes]` and `logits` float32
  `[batch, classes]`. The run's tokenizer runs in the graph exactly as
  training prepared text (`classification_dataset`): `[EOS]` first, cut to
  the run's sequence length, right-padded with `[PAD]`.
- `serve_ids`: `token_ids` int32 `[batch, length]` (length up to the
  sequence length, padded with 0) -> the same outputs.

It loads with `tensorflow` and `tensorflow_text` alone (the tokenizer's
ops are tensorflow-text's).

Every TFLite file takes raw text, string `[1]`, and returns `label_id`
int32 `[1]` and `probabilities` float32 `[1, classes]`. Its ops are
TFLite's built-ins plus tensorflow-text's registered custom ops
(`tflite_registrar.SELECT_TFTEXT_OPS`; linked into the app on Android):
`ByteSplitWithOffsets` for byte-level runs; for WordPiece runs also
`ByteSplitByOffsets` and `FastWordpieceTokenizeWithOffsets`, with the
tokenizer's regex pre-split (`regex_split`, which TFLite cannot run)
rewritten in built-in ops (`wordpiece_words`).

Each file is checked on the run's validation examples: the largest
difference of its probabilities from the Keras model's, and its accuracy.
A float32 file outside `FLOAT_PROBABILITY_TOLERANCE` fails the export (a
conversion bug); a quantized file more than `ACCURACY_POINTS_TOLERANCE`
points below the float32 model's accuracy is dropped with a one-line
reason, recorded under `"dropped"`.
"""

import functools
import os
import tempfile
import time

import keras
import numpy as np
import tensorflow as tf
import tensorflow_text as tf_text

from keras_tfm import _startup
from keras_tfm import files
from keras_tfm.errors import UserError
from keras_tfm.export import saved_model
from keras_tfm.export import text_tflite
from keras_tfm.export import tflite
from keras_tfm.export.run_export import TFLITE_NAMES
from keras_tfm.export.staging import FORMATS
from keras_tfm.export.staging import QUANTIZATIONS
from keras_tfm.export.staging import check_export_arguments
from keras_tfm.export.staging import staged_export
from keras_tfm.tasks import classification
from keras_tfm.tokenizers import ByteTokenizer
from keras_tfm.tokenizers.wordpiece_tokenizer import PRETOKENIZE_PATTERN
from keras_tfm.tokenizers.wordpiece_tokenizer import SUFFIX_INDICATOR

# Validation examples each file is checked on, and training examples that
# calibrate the int8 file's activation ranges.
EVALUATION_EXAMPLES = 1000
CALIBRATION_EXAMPLES = 100
# A float32 file whose probabilities differ from the Keras model's by more
# is a conversion bug; a quantized file more than this many accuracy
# points below the float32 model is dropped.
FLOAT_PROBABILITY_TOLERANCE = 1e-4
ACCURACY_POINTS_TOLERANCE = 1.0


def export_classifier_run(
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
    """Exports a finished classification run; returns the report (also
    written as `export_report.json`, paths relative to `output`).

    Raises:
        UserError: bad arguments, not a finished classification run, its
            data missing, or a float32 file that differs from Keras.
    """
    formats, quantize = list(formats), list(quantize)
    output = output or os.path.join(run_dir, "export")
    model_name = model_name or os.path.basename(os.path.abspath(run_dir))
    check_export_arguments(run_dir, formats, quantize, output, version,
                           overwrite)
    config, tokenizer, labels, model = classification.load_run(run_dir)
    validation, source = classification.run_validation_data(config, labels)
    calibration = []
    if "tflite" in formats and "int8" in quantize:
        calibration = calibration_texts(config, labels)
    return staged_export(
        run_dir, output, formats, quantize, version, overwrite,
        lambda staging: _export(run_dir, config, tokenizer, labels, model,
                                validation, source, calibration, formats,
                                quantize, staging, model_name, version,
                                allow_flex, log),
    )


def calibration_texts(config, labels):
    """A seeded sample of the run's training texts (never validation
    ones), which calibrates the int8 file."""
    train = classification.read_run_data(config, labels).train
    order = np.random.default_rng(config.seed).permutation(len(train))
    return [train.texts[i] for i in order[:CALIBRATION_EXAMPLES]]


# === The graphs ===


def token_ids(tokenizer, texts, sequence_length):
    """`(batch,)` strings -> int32 `(batch, sequence_length)`, exactly as
    `classification_dataset` prepares them (ragged ops: SavedModel only)."""
    ids = tokenizer.tokenize(texts)
    eos = tf.fill([tf.shape(texts)[0], 1], tokenizer.eos_id)
    ids = tf.concat([tf.cast(eos, ids.dtype), ids], axis=1)
    ids = tf.cast(ids[:, :sequence_length], tf.int32)
    return ids.to_tensor(default_value=tokenizer.pad_id,
                         shape=[None, sequence_length])


def classifier_outputs(model, ids, label_names):
    logits = tf.cast(model(ids, training=False), tf.float32)
    best = tf.argmax(logits, axis=-1, output_type=tf.int32)
    return {
        "label": tf.gather(tf.constant(label_names), best),
        "probabilities": tf.nn.softmax(logits),
        "logits": logits,
    }


def saved_model_archive(model, tokenizer, label_names, sequence_length):
    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(
        "serving_default",
        lambda text: classifier_outputs(
            model, token_ids(tokenizer, text, sequence_length), label_names
        ),
        input_signature=[tf.TensorSpec([None], tf.string, name="text")],
    )
    archive.add_endpoint(
        "serve_ids",
        lambda ids: classifier_outputs(model, ids, label_names),
        input_signature=[tf.TensorSpec([None, None], tf.int32,
                                       name="token_ids")],
    )
    return archive


# Character classes of PRETOKENIZE_PATTERN, ` ?[\p{L}\p{M}\p{N}]+|\s|
# [^\p{L}\p{M}\p{N}\s]+`: letters, marks and digits (WORD); the space
# (SPACE), which joins a following word; RE2's other `\s` characters,
# `[\t\n\f\r]` (BLANK); everything else (OTHER).
OTHER, WORD, SPACE, BLANK = 0, 1, 2, 3
BLOCK = 256
# The pre-split `wordpiece_words` reproduces; a tokenizer with another
# gets no TFLite file rather than a wrong one.
REPRODUCED_PATTERN = r" ?[\p{L}\p{M}\p{N}]+|\s|[^\p{L}\p{M}\p{N}\s]+"


@functools.lru_cache(maxsize=1)
def word_character_table():
    """`(index, blocks)`: whether code point `c` is `[\\p{L}\\p{M}\\p{N}]`
    is `blocks[index[c // 256] * 256 + c % 256]`.

    Computed with the same regex engine (RE2, through `tf.strings`) and
    Unicode tables as the tokenizer's `regex_split`, over every code
    point, and stored as the 131 distinct 256-point blocks (about 50 KB).
    """
    points = np.array([c for c in range(0x110000)
                       if not 0xD800 <= c <= 0xDFFF])
    with tf.init_scope():  # eagerly, even while a graph is traced
        is_word = tf.strings.regex_full_match(
            tf.constant([chr(c).encode("utf-8") for c in points]),
            r"[\p{L}\p{M}\p{N}]",
        ).numpy()
    table = np.zeros(0x110000, np.int8)
    table[points[is_word]] = 1
    blocks, index = np.unique(table.reshape(-1, BLOCK), axis=0,
                              return_inverse=True)
    return index.reshape(-1).astype(np.int32), blocks.reshape(-1)


def wordpiece_words(text):
    """`regex_split(text, PRETOKENIZE_PATTERN)` for a string `[1]`, in
    TFLite built-in ops plus tensorflow-text's byte splitting: its words,
    1-D strings.

    The text's bytes are decoded to code points with arithmetic, each code
    point is classed by a table lookup, a word starts wherever the pattern
    starts a match (a WORD after neither WORD nor SPACE, an OTHER after a
    non-OTHER, every SPACE and BLANK), and `ByteSplitter.split_by_offsets`
    cuts the words out. Exact for valid UTF-8; malformed bytes are split
    as RE2 splits them in the common cases (a stray byte is OTHER).
    """
    index, blocks = word_character_table()
    splitter = tf_text.ByteSplitter()
    b = tf.cast(splitter.split(text).flat_values, tf.int32)  # (n,) bytes
    n = tf.shape(b)[0]
    # The next three bytes of each byte, 0 past the end.
    padded = tf.concat([b, tf.zeros([3], tf.int32)], 0)
    b1, b2, b3 = (tf.slice(padded, [k], [n]) - 0x80 for k in (1, 2, 3))
    before = tf.concat([tf.zeros([1], tf.int32), b[:-1]], 0)
    continuation = (b >= 0x80) & (b < 0xC0)
    # A character starts at every byte but a continuation byte after a
    # non-ASCII one.
    lead = tf.logical_not(continuation) | (before < 0x80)
    point = tf.where(
        b < 0x80, b,
        tf.where(b < 0xE0, (b - 0xC0) * 64 + b1,
                 tf.where(b < 0xF0, (b - 0xE0) * 4096 + b1 * 64 + b2,
                          (b - 0xF0) * 262144 + b1 * 4096 + b2 * 64 + b3)))
    starts = tf.cast(tf.where(lead)[:, 0], tf.int32)  # (m,) characters
    point = tf.clip_by_value(tf.gather(point, starts), 0, 0x10FFFF)
    block = tf.gather(tf.constant(index), point // BLOCK)
    is_word = tf.cast(
        tf.gather(tf.constant(blocks), block * BLOCK + point % BLOCK),
        tf.int32,
    ) > 0
    # A stray continuation byte or an invalid lead byte is OTHER.
    lead_byte = tf.gather(b, starts)
    valid = (lead_byte < 0x80) | ((lead_byte >= 0xC0) & (lead_byte < 0xF8))
    blank = (point == 9) | (point == 10) | (point == 12) | (point == 13)
    kind = tf.where(
        valid & is_word, WORD,
        tf.where(point == 32, SPACE,
                 tf.where(valid & blank, BLANK, OTHER)))
    previous = tf.concat([tf.fill([1], -1), kind[:-1]], 0)
    first = tf.where(
        kind == WORD, (previous != WORD) & (previous != SPACE),
        tf.where(kind == OTHER, previous != OTHER, tf.ones_like(kind) > 0))
    word_starts = tf.boolean_mask(starts, first)
    # Each word ends where the next starts, the last at the end (and an
    # empty text has no words, hence the cut to the count of starts).
    word_ends = tf.concat([word_starts[1:], tf.reshape(n, [1])], 0)
    word_ends = word_ends[: tf.size(word_starts)]
    words = splitter.split_by_offsets(text, word_starts[None, :],
                                      word_ends[None, :])
    return words.flat_values


def single_text_ids(tokenizer, text, sequence_length):
    """A string `[1]` -> int32 `[1, sequence_length]`, as `token_ids`
    prepares it, in ops a TFLite file can hold (no ragged slicing)."""
    if isinstance(tokenizer, ByteTokenizer):
        pieces = tf_text.ByteSplitter().split(text).flat_values
        ids = tf.cast(pieces, tf.int32) + tokenizer.num_special_tokens
    else:
        if PRETOKENIZE_PATTERN != REPRODUCED_PATTERN:
            raise UserError(
                "the WordPiece pre-split pattern is not the one the TFLite "
                "file reproduces: export with --format savedmodel."
            )
        wordpiece = tf_text.FastWordpieceTokenizer(
            vocab=tokenizer.vocabulary,
            suffix_indicator=SUFFIX_INDICATOR,
            token_out_type=tf.int32,
            unknown_token="[UNK]",
            no_pretokenization=True,
        )
        ids = wordpiece.tokenize(wordpiece_words(text)).flat_values
    ids = tf.concat([tf.constant([tokenizer.eos_id], tf.int32), ids], 0)
    ids = ids[:sequence_length]
    count = tf.shape(ids)[0]
    ids = tf.pad(ids, [[0, sequence_length - count]],
                 constant_values=tokenizer.pad_id)
    return tf.reshape(ids, [1, sequence_length])


def text_archive(model, tokenizer, sequence_length):
    """The TFLite file's graph: text `[1]` -> label id, probabilities."""
    archive = keras.export.ExportArchive()
    archive.track(model)

    def classify(text):
        ids = single_text_ids(tokenizer, text, sequence_length)
        logits = tf.cast(model(ids, training=False), tf.float32)
        return {
            "label_id": tf.argmax(logits, axis=-1, output_type=tf.int32),
            "probabilities": tf.nn.softmax(logits),
        }

    archive.add_endpoint(
        "serve", classify,
        input_signature=[tf.TensorSpec([1], tf.string, name="text")],
    )
    return archive


def convert_text_model(model, tokenizer, sequence_length, quantization,
                       allow_flex=False, calibration_texts=()):
    """TFLite bytes of `text_archive` and their ops.

    Args:
        calibration_texts: training texts that calibrate the `"int8"`
            file's activation ranges.
    """
    with tempfile.TemporaryDirectory() as tmp, tflite.bounded_masking(
        model, quantization == "int8"
    ):
        text_archive(model, tokenizer, sequence_length).write_out(
            tmp, verbose=False
        )
        if quantization == "int8":
            content = _convert_int8(tmp, allow_flex, calibration_texts)
        else:
            content = tflite.convert_saved_model(
                tmp, ["serving_default"], quantization, allow_flex,
                allow_custom_ops=True,
            )
    ops = tflite.list_ops(content)
    if tflite.flex_ops(ops) and not allow_flex:
        raise UserError(
            f"the {quantization} TFLite file needs Flex ops "
            f"({', '.join(tflite.flex_ops(ops))}), which ordinary apps "
            "cannot run: pass --allow-flex to keep it anyway."
        )
    return content, ops


def _convert_int8(saved_model_dir, allow_flex, texts):
    # tflite.convert_saved_model's int8 path, with tensorflow-text's ops
    # registered for calibration, which runs the whole graph (tokenizer
    # included); the converter offers that only as a private attribute.
    def representative():
        for text in texts:
            yield {"text": np.array([text.encode("utf-8")])}

    converter = tf.lite.TFLiteConverter.from_saved_model(
        saved_model_dir, signature_keys=["serving_default"]
    )
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = representative
    ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8, tf.lite.OpsSet.TFLITE_BUILTINS]
    if allow_flex:
        ops.append(tf.lite.OpsSet.SELECT_TF_OPS)
    converter.target_spec.supported_ops = ops
    converter.target_spec._experimental_custom_op_registerers = list(
        tf_text.tflite_registrar.SELECT_TFTEXT_OPS
    )
    converter.allow_custom_ops = True
    try:
        return tflite._selective_int8(converter, representative)
    except Exception as e:  # the converter raises ConverterError and others
        lines = [line for line in str(e).strip().splitlines() if line]
        raise UserError(
            "TFLite conversion (int8) failed: "
            f"{(lines or ['unknown error'])[-1].strip()}"
        ) from None


def text_interpreter(path):
    """A LiteRT interpreter with tensorflow-text's custom ops registered."""
    return text_tflite.interpreter(path)


def run_text(runner, text):
    """`(label_id, probabilities)` of one text from a TFLite file."""
    out = runner.get_signature_runner("serving_default")(
        text=np.array([text.encode("utf-8")])
    )
    return int(out["label_id"][0]), out["probabilities"][0]


# === The export ===


def _export(run_dir, config, tokenizer, labels, model, validation, source,
            calibration, formats, quantize, staging, model_name, version,
            allow_flex, log):
    length = config.sequence_length
    count = min(EVALUATION_EXAMPLES, len(validation))
    texts = validation.texts[:count]
    targets = validation.labels[:count]
    keras_probabilities = classification.softmax(classification.predict_logits(
        model, tokenizer, texts, length, batch_size=64
    ))
    keras_accuracy = float(np.mean(keras_probabilities.argmax(-1) == targets))
    report = {
        "run_dir": run_dir,
        "task": "classification",
        "labels": labels,
        "tokenizer": config.tokenizer,
        "sequence_length": length,
        "validation_examples": count,
        "validation_source": source,
        "tolerances": {
            "float_max_abs_probability_diff": FLOAT_PROBABILITY_TOLERANCE,
            "accuracy_points_below_float32": ACCURACY_POINTS_TOLERANCE,
        },
        "keras": {"val_accuracy": keras_accuracy},
        "files": [],
        "dropped": [],
    }
    tokenizer.save(staging)
    files.write_json(os.path.join(staging, classification.LABELS_FILE),
                     labels)
    check = (texts, targets, keras_probabilities, keras_accuracy)
    if "savedmodel" in formats:
        path = saved_model.saved_model_path(staging, model_name, version)
        report["files"].append(_export_saved_model(
            model, tokenizer, labels, length, path, staging, check, log
        ))
    if "tflite" in formats:
        for quantization in quantize:
            report["files"].append(_export_tflite(
                model, tokenizer, length, quantization, allow_flex,
                calibration, staging, check, log,
            ))
    _apply_tolerances(report, staging, log)
    return report


def _checked(entry, probabilities, check):
    """`entry` with its parity against Keras and validation accuracy."""
    _, targets, keras_probabilities, keras_accuracy = check
    probabilities = np.asarray(probabilities, np.float64)
    accuracy = float(np.mean(probabilities.argmax(-1) == targets))
    entry["max_abs_probability_diff"] = float(
        np.abs(probabilities - keras_probabilities).max())
    entry["val_accuracy"] = accuracy
    # Accuracy points against the float32 (Keras) model's.
    entry["accuracy_vs_float32"] = 100 * (accuracy - keras_accuracy)
    return entry


def _export_saved_model(model, tokenizer, labels, length, path, staging,
                        check, log):
    start = time.time()
    saved_model_archive(model, tokenizer, labels, length).write_out(
        path, verbose=False
    )
    loaded = tf.saved_model.load(path)
    serve = loaded.signatures["serving_default"]
    texts = check[0]
    probabilities = np.concatenate([
        serve(text=tf.constant(texts[i: i + 256]))["probabilities"].numpy()
        for i in range(0, len(texts), 256)
    ])
    ops = saved_model.graph_ops(serve)
    entry = _checked({
        "path": os.path.relpath(path, staging),
        "format": "savedmodel",
        "quantization": "none",
        "input": "text",
        "signatures": sorted(loaded.signatures.keys()),
        "bytes": saved_model.directory_bytes(path),
        "ops": ops,
        "custom_ops": [op for op in ops if not hasattr(tf.raw_ops, op)],
    }, probabilities, check)
    entry["seconds"] = round(time.time() - start, 1)
    log(f"savedmodel: {entry['path']} ({entry['bytes']:,} bytes, max "
        f"|Δp| {entry['max_abs_probability_diff']:.2e}, accuracy "
        f"{entry['val_accuracy']:.4f})")
    return entry


def _export_tflite(model, tokenizer, length, quantization, allow_flex,
                   calibration, staging, check, log):
    start = time.time()
    content, ops = convert_text_model(model, tokenizer, length, quantization,
                                      allow_flex, calibration)
    path = os.path.join(staging, "tflite", TFLITE_NAMES[quantization])
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(content)
    runner = text_interpreter(path)
    probabilities = np.stack([run_text(runner, text)[1]
                              for text in check[0]])
    entry = _checked({
        "path": os.path.relpath(path, staging),
        "format": "tflite",
        "quantization": quantization,
        "input": "text",
        "bytes": len(content),
        "ops": ops,
        "custom_ops": [op for op in ops if not op.isupper()],
        "flex_ops": tflite.flex_ops(ops),
    }, probabilities, check)
    entry["seconds"] = round(time.time() - start, 1)
    log(f"tflite {quantization}: {entry['path']} ({len(content):,} bytes, "
        f"max |Δp| {entry['max_abs_probability_diff']:.2e}, accuracy "
        f"{entry['val_accuracy']:.4f})")
    return entry


def _apply_tolerances(report, staging, log):
    """Drops every quantized file too far below float32, with a one-line
    reason; a float32 file that differs from Keras fails the export."""
    kept = []
    for entry in report["files"]:
        if entry["quantization"] == "none":
            if entry["max_abs_probability_diff"] > FLOAT_PROBABILITY_TOLERANCE:
                raise UserError(
                    f"{entry['path']} differs from the Keras model by "
                    f"{entry['max_abs_probability_diff']:.2e} in its "
                    "probabilities (tolerance "
                    f"{FLOAT_PROBABILITY_TOLERANCE:g}): the conversion is "
                    "wrong; please report it."
                )
            kept.append(entry)
            continue
        below = -entry["accuracy_vs_float32"]
        if below <= ACCURACY_POINTS_TOLERANCE:
            kept.append(entry)
            continue
        reason = (
            f"its validation accuracy {entry['val_accuracy']:.4f} is "
            f"{below:.1f} points below the float32 model's, outside the "
            f"{ACCURACY_POINTS_TOLERANCE:g}-point bound"
        )
        os.remove(os.path.join(staging, entry["path"]))
        report["dropped"].append({**entry, "reason": reason})
        log(f"dropped {entry['path']}: {reason}.")
    report["files"] = kept


def tflite_probabilities(run_dir, texts):
    """Probabilities `(len(texts), classes)` from the run's exported
    float32 TFLite file, one text per call, as an app runs it."""
    path = os.path.join(run_dir, "export", "tflite", TFLITE_NAMES["none"])
    if not os.path.isfile(path):
        raise UserError(
            f"no TFLite file at '{path}': run `keras-tfm export {run_dir}` "
            "first (with the float32 variant, --quantize none)."
        )
    try:
        runner = text_interpreter(path)
    except (ValueError, RuntimeError) as e:
        raise UserError(
            f"'{path}' is not a TFLite file the interpreter can load "
            f"({str(e).splitlines()[0]}): export the run again."
        ) from None
    with _startup.quiet_stderr():
        return np.stack([run_text(runner, text)[1]
                         for text in texts])




def predict_tflite(run_dir, texts):
    """`TASK.predict_run`'s answers, from the exported float32 file."""
    classification.check_run(run_dir)
    return classification.answers(texts,
                                  classification.load_labels(run_dir),
                   tflite_probabilities(run_dir, texts))
