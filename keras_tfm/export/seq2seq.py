"""Export a translation or summarization run: SavedModel and TFLite.

`export_seq2seq_run(run_dir, ...)` writes under `RUN_DIR/export/`:

    savedmodel/<model-name>/<version>/     TF Serving's layout
    tflite/encoder_float32.tflite          source ids -> encoder outputs
                                           and the cross-attention cache
    tflite/decoder_step_float32.tflite     one target token through the
                                           cached decoder
    tflite/encoder_float16.tflite, ...     quantized pairs (float16,
                                           dynamic: int8 weights)
    tokenizer.json                         the vocabulary
    decoding.json                          ids, lengths and beam settings
    export_report.json                     sizes, ops, parity and scores

SavedModel signatures (the tokenizer and the whole decoding loop are in
the graph; it loads with `tensorflow` and `tensorflow_text` alone):

- `serving_default`: `text` string `[batch]` -> `output` string `[batch]`,
  decoded with beam search at the run's settings (`beam_size`, GNMT
  `length_penalty`, at most `target_sequence_length` tokens).
- `greedy`: the same with greedy search.
- `serve_ids`: `encoder_token_ids` int32 `[batch, length]` (`[EOS]`, then
  the source's tokens, padded with 0) -> `token_ids` int32 `[batch,
  target_sequence_length]` (the end token included, 0 after it), by beam
  search.

Texts are prepared as in training (`[EOS]` and the tokens, cut to the
run's `sequence_length`); outputs are detokenized and stripped of
surrounding whitespace, exactly as `keras-tfm predict` does.

TFLite (builtin ops only, static shapes, batch 1; `S`: the run's
`sequence_length`, `T`: its `target_sequence_length`, `L`: decoder layers,
`H`: heads, `D`: head size):

- encoder file, signature `encode`: `source_ids` int32 `[1, S]` (padded
  with 0) -> `encoder_outputs` float32 `[1, S, hidden]` and `cross_cache`
  float32 `[1, L, 2, S, H, D]`, every layer's projected cross-attention
  keys and values, computed once per source.
- decoder-step file, signature `decode`: `token_id` int32 `[1, 1]` (the
  token at target position `index`; `[EOS]` at 0), `index` int32 `[]`,
  `self_cache` float32 `[1, L, 2, T, H, D]` (zeros at the start),
  `cross_cache` and `source_ids` (its padding is hidden from attention) ->
  `logits` float32 `[1, vocabulary]` for position `index + 1` and the
  updated `self_cache`.

`generate_ids` drives the pair with the LiteRT interpreter alone, as an app
would (greedy: token for token the Keras model's greedy search; beam: the
same search as `keras_tfm.generation.seq2seq.beam_search`, one beam per
step call). `keras-tfm predict --backend tflite` uses it.

Checks, recorded in the report: each pair's largest logit difference from
the Keras model over teacher-forced validation targets (a float32 pair
outside `FLOAT_LOGIT_TOLERANCE` fails the export: a conversion bug), its
greedy agreement with Keras over the validation set and the task's score
of its greedy output; a quantized pair scoring more than
`SCORE_POINTS_TOLERANCE` below the float32 pair is dropped. The
SavedModel's beam output is scored (BLEU or ROUGE) on a validation slice
and compared with the Keras model's.
"""

import os
import tempfile
import time

import keras
import numpy as np
import tensorflow as tf

from keras_tfm import _startup
from keras_tfm import files
from keras_tfm.data.parallel import source_token_ids
from keras_tfm.data.parallel import tokenize_pairs
from keras_tfm.errors import UserError
from keras_tfm.export import saved_model
from keras_tfm.export import tflite
from keras_tfm.export.staging import FORMATS
from keras_tfm.export.staging import QUANTIZATIONS
from keras_tfm.export.staging import check_export_arguments
from keras_tfm.export.staging import staged_export
from keras_tfm.generation import seq2seq as decoding
from keras_tfm.tasks import seq2seq as tasks
from keras_tfm.tokenizers import load_tokenizer

TFLITE_QUANTIZATIONS = ("none", "float16", "dynamic")
SUFFIXES = {"none": "float32", "float16": "float16", "dynamic": "dynamic_int8"}
DECODING_FILE = "decoding.json"
# Validation examples whose greedy output each TFLite pair must reproduce;
# the first LOGIT_EXAMPLES also compare logits; the first SLICE_EXAMPLES
# check the SavedModel's beam search (slower: beams and batches).
EVALUATION_EXAMPLES = 1000
LOGIT_EXAMPLES = 8
SLICE_EXAMPLES = 200
SAVED_MODEL_BATCH = 32
FLOAT_LOGIT_TOLERANCE = 1e-3
SCORE_POINTS_TOLERANCE = 1.0


def tflite_names(quantization):
    suffix = SUFFIXES[quantization]
    return f"encoder_{suffix}.tflite", f"decoder_step_{suffix}.tflite"


# === The graphs ===


def _traced(function, input_signature):
    """`function` as a `tf.function`, traced once, to add to an
    `ExportArchive` as it is."""
    function = tf.function(function, input_signature=input_signature,
                           autograph=False)
    function.get_concrete_function()
    return function


def saved_model_archive(model, tokenizer, config):
    """`serving_default` (beam), `greedy` (text) and `serve_ids` (ids).

    Each endpoint is a `tf.function` traced here, once: the text endpoints
    call the id-level decoding functions, so the beam-search loop is one
    function in the SavedModel, shared by `serving_default` and
    `serve_ids`. (Given untraced functions, `ExportArchive` traces each
    twice, and tracing a decoding loop takes seconds.)
    """
    max_length = config.target_sequence_length
    ids_spec = [tf.TensorSpec([None, None], tf.int32,
                              name="encoder_token_ids")]
    text_spec = [tf.TensorSpec([None], tf.string, name="text")]

    greedy_ids = _traced(
        lambda ids: decoding.greedy_search(model, ids, max_length), ids_spec)
    if config.beam_size == 1:
        beam_ids = greedy_ids
    else:
        beam_ids = _traced(
            lambda ids: decoding.beam_search(
                model, ids, beam_size=config.beam_size, max_length=max_length,
                length_penalty=config.length_penalty,
            )[0],
            ids_spec,
        )

    def text_endpoint(decode):
        def generate(text):
            ids = source_token_ids(tokenizer, text, config.sequence_length)
            return {"output": tasks.output_texts(tokenizer, decode(ids))}

        return _traced(generate, text_spec)

    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint("serving_default", text_endpoint(beam_ids))
    archive.add_endpoint("greedy", text_endpoint(greedy_ids))
    archive.add_endpoint(
        "serve_ids",
        _traced(lambda ids: {"token_ids": beam_ids(ids)}, ids_spec),
    )
    return archive


def cache_shapes(model):
    """`(self_cache, cross_cache)` shapes at batch 1, source length S."""
    head_dim = model.hidden_dim // model.num_heads
    per_layer = (model.num_decoder_layers, 2)
    heads = (model.num_heads, head_dim)
    return (
        (1, *per_layer, model.max_decoder_sequence_length, *heads),
        (1, *per_layer, model.max_sequence_length, *heads),
    )


def encoder_archive(model):
    length = model.max_sequence_length
    archive = keras.export.ExportArchive()
    archive.track(model)

    def encode(source_ids):
        encoder_outputs, _ = model.encode(source_ids)
        return {
            "encoder_outputs": tf.cast(encoder_outputs, tf.float32),
            "cross_cache": tf.cast(
                model.decoder.compute_cross_attention_cache(encoder_outputs),
                tf.float32),
        }

    archive.add_endpoint("encode", _traced(
        encode, [tf.TensorSpec([1, length], tf.int32, name="source_ids")]))
    return archive


def step_archive(model):
    self_shape, cross_shape = cache_shapes(model)
    archive = keras.export.ExportArchive()
    archive.track(model)

    def decode(token_id, index, self_cache, cross_cache, source_ids):
        cache = {"self_attention": self_cache, "cross_attention": cross_cache}
        padding_mask = tf.not_equal(source_ids, model.pad_token_id)
        logits, _, cache = model.call_decoder_with_cache(
            token_id, cache, index, padding_mask
        )
        return {
            "logits": tf.cast(logits[:, 0], tf.float32),
            "self_cache": tf.cast(cache["self_attention"], tf.float32),
        }

    archive.add_endpoint("decode", _traced(decode, [
        tf.TensorSpec([1, 1], tf.int32, name="token_id"),
        tf.TensorSpec([], tf.int32, name="index"),
        tf.TensorSpec(self_shape, tf.float32, name="self_cache"),
        tf.TensorSpec(cross_shape, tf.float32, name="cross_cache"),
        tf.TensorSpec([1, model.max_sequence_length], tf.int32,
                      name="source_ids"),
    ]))
    return archive


def convert_pair(model, quantization="none", allow_flex=False):
    """`((encoder_bytes, ops), (step_bytes, ops))` of the TFLite pair."""
    converted = []
    for archive, signature in ((encoder_archive(model), "encode"),
                               (step_archive(model), "decode")):
        with tempfile.TemporaryDirectory() as tmp:
            archive.write_out(tmp, verbose=False)
            content = tflite.convert_saved_model(
                tmp, [signature], quantization, allow_flex
            )
        ops = tflite.list_ops(content)
        if tflite.flex_ops(ops) and not allow_flex:
            raise UserError(
                f"the {quantization} TFLite {signature} file needs Flex ops "
                f"({', '.join(tflite.flex_ops(ops))}), which ordinary apps "
                "cannot run: pass --allow-flex to keep it anyway."
            )
        converted.append((content, ops))
    return tuple(converted)


# === Driving the TFLite pair ===


def _signature(runner, name):
    return runner.get_signature_runner(name) if hasattr(
        runner, "get_signature_runner") else runner


def encode_source(encoder_runner, source_ids):
    """`(padded source ids [1, S], cross_cache)` of one source."""
    encode = _signature(encoder_runner, "encode")
    length = encode.get_input_details()["source_ids"]["shape"][1]
    padded = np.zeros((1, length), np.int32)
    source_ids = np.asarray(source_ids, np.int32)[:length]
    padded[0, : len(source_ids)] = source_ids
    return padded, encode(source_ids=padded)["cross_cache"]


def _log_softmax(logits):
    logits = logits.astype(np.float32)
    top = logits.max()
    return logits - (top + np.log(np.exp(logits - top).sum()))


def generate_ids(encoder_runner, step_runner, source_ids, max_length,
                 beam_size=1, length_penalty=0.6, start_id=decoding.EOS_ID,
                 end_id=decoding.EOS_ID, pad_id=0):
    """Decodes one source with the TFLite encoder and decoder step alone.

    Args:
        encoder_runner, step_runner: LiteRT `Interpreter`s of the two
            files (or their `encode` / `decode` signature runners).
        source_ids: list of int: `[EOS]` and the source's tokens (cut to
            the encoder's length).
        max_length: int. Tokens to generate at most (up to the step file's
            target length).
        beam_size: int. 1: greedy search, token for token the Keras
            model's `greedy_search`; more: `beam_search`'s algorithm.
        length_penalty: float. GNMT's alpha, for beam search.
        start_id, end_id, pad_id: the decoder's first token, the end token
            (included in the output) and the padding id (never chosen).

    Returns:
        The generated ids, a list of int.
    """
    decode = _signature(step_runner, "decode")
    details = decode.get_input_details()
    target_length = details["self_cache"]["shape"][3]
    if not 1 <= max_length <= target_length:
        raise ValueError(
            f"max_length must be from 1 to the step file's target length "
            f"({target_length}); received {max_length}"
        )
    source, cross_cache = encode_source(encoder_runner, source_ids)
    empty = np.zeros(details["self_cache"]["shape"], np.float32)

    def step(token, index, cache):
        out = decode(token_id=np.array([[token]], np.int32),
                     index=np.array(index, np.int32), self_cache=cache,
                     cross_cache=cross_cache, source_ids=source)
        logits = np.array(out["logits"][0], np.float32)
        logits[pad_id] = -np.inf
        return logits, out["self_cache"]

    if beam_size == 1:
        tokens, cache, previous = [], empty, start_id
        for index in range(max_length):
            logits, cache = step(previous, index, cache)
            previous = int(np.argmax(logits))
            tokens.append(previous)
            if previous == end_id:
                break
        return tokens
    return _beam_search(step, empty, max_length, beam_size, length_penalty,
                        start_id, end_id)


def _penalty(length, alpha):
    return np.float32(((5.0 + length) / 6.0) ** alpha)


def _beam_search(step, empty, max_length, beam_size, alpha, start_id,
                 end_id):
    # As generation.seq2seq.beam_search for one source: live hypotheses
    # (tokens, log-probability, cache), and a pool of the beam_size best
    # finished ones by length-penalized score; ties go to the earlier
    # candidate, as with tf.math.top_k.
    alive = [([], np.float32(0.0), empty)]
    finished = []  # (score, tokens), best first
    max_penalty = _penalty(max_length, alpha)
    for index in range(max_length):
        best_finished = finished[0][0] if finished else -np.inf
        largest = max(_penalty(index + 1, alpha), max_penalty)
        if not alive or max(lp for _, lp, _ in alive) / largest <= (
            best_finished
        ):
            break
        candidates = []
        for tokens, log_prob, cache in alive:
            logits, new_cache = step(tokens[-1] if tokens else start_id,
                                     index, cache)
            scores = log_prob + _log_softmax(logits)
            for token in np.argsort(-scores, kind="stable")[:beam_size]:
                candidates.append((scores[token], tokens + [int(token)],
                                   new_cache))
        # Candidates are in (beam, token) order, as top_k's flat indices.
        order = sorted(range(len(candidates)),
                       key=lambda i: -candidates[i][0])[:beam_size]
        alive = []
        new = []
        for i in order:
            log_prob, tokens, cache = candidates[i]
            if tokens[-1] == end_id or index == max_length - 1:
                new.append((log_prob / _penalty(index + 1, alpha), tokens))
            else:
                alive.append((tokens, log_prob, cache))
        pool = finished + new  # earlier entries win ties
        finished = [pool[i] for i in sorted(range(len(pool)),
                                            key=lambda i: -pool[i][0])]
        finished = finished[:beam_size]
    return finished[0][1] if finished else []


def load_tflite_pair(directory, run_dir, quantization="none"):
    """The LiteRT interpreters `(encoder, step)` of an exported pair."""
    paths = [os.path.join(directory, name)
             for name in tflite_names(quantization)]
    for path in paths:
        if not os.path.isfile(path):
            raise UserError(
                f"no TFLite file at '{path}': run `keras-tfm export "
                f"{run_dir}` first (with the float32 variant, --quantize "
                "none)."
            )
    runners = []
    for path in paths:
        try:
            runners.append(tflite.interpreter(path))
        except (ValueError, RuntimeError) as e:
            raise UserError(
                f"'{path}' is not a TFLite file the interpreter can load "
                f"({str(e).splitlines()[0]}): export the run again."
            ) from None
    return tuple(runners)


# === The export ===


def export_seq2seq_run(
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
    """Exports a finished translation or summarization run; returns the
    report (also written as `export_report.json`, paths relative to
    `output`).

    TFLite pairs are written for the `none`, `float16` and `dynamic`
    variants of `quantize`; `int8` (int8 activations, cache included) is
    skipped, with the reason in the report.

    Raises:
        UserError: bad arguments, not a finished seq2seq run, its data
            missing, or a float32 file that differs from Keras.
    """
    from keras_tfm.tasks.registry import get_task
    from keras_tfm.training.run import run_kind

    formats, quantize = list(formats), list(quantize)
    output = output or os.path.join(run_dir, "export")
    model_name = model_name or os.path.basename(os.path.abspath(run_dir))
    check_export_arguments(run_dir, formats, quantize, output, version,
                           overwrite)
    task = get_task(run_kind(run_dir))
    config, tokenizer, model = tasks.load_run(run_dir, task.name)
    validation = tasks.read_run_data(config)[1]
    return staged_export(
        run_dir, output, formats, quantize, version, overwrite,
        lambda staging: _export(run_dir, task, config, tokenizer, model,
                                validation, formats, quantize, staging,
                                model_name, version, allow_flex, log),
    )


def _export(run_dir, task, config, tokenizer, model, validation, formats,
            quantize, staging, model_name, version, allow_flex, log):
    count = min(EVALUATION_EXAMPLES, len(validation))
    examples = validation.subset(range(count))
    pairs = tokenize_pairs(tokenizer, examples, config.sequence_length,
                           config.target_sequence_length)
    keras_greedy_ids = _greedy_ids(model, pairs.encoder_ids,
                                   config.target_sequence_length)
    keras_greedy = _texts(tokenizer, keras_greedy_ids)
    report = {
        "run_dir": run_dir,
        "task": task.name,
        "tokenizer": config.tokenizer,
        "vocabulary_size": tokenizer.vocabulary_size,
        "sequence_length": config.sequence_length,
        "target_sequence_length": config.target_sequence_length,
        "decoding": {"beam_size": config.beam_size,
                     "length_penalty": config.length_penalty},
        "validation_source": validation.name,
        "validation_examples": count,
        "tolerances": {
            "float_max_abs_logit_diff": FLOAT_LOGIT_TOLERANCE,
            "score_points_below_float32": SCORE_POINTS_TOLERANCE,
        },
        "keras": {"greedy": tasks.validation_figures(task.score(
            keras_greedy, examples.references))},
        "files": [],
        "dropped": [],
        "skipped": [],
    }
    tokenizer.save(staging)
    files.write_json(os.path.join(staging, DECODING_FILE), {
        "start_id": decoding.EOS_ID,
        "end_id": decoding.EOS_ID,
        "pad_id": tokenizer.pad_id,
        "source_length": config.sequence_length,
        "max_length": config.target_sequence_length,
        "beam_size": config.beam_size,
        "length_penalty": config.length_penalty,
        "source_prefix": "[EOS]",
    })
    if "savedmodel" in formats:
        report["files"].append(_export_saved_model(
            task, model, tokenizer, config, examples, keras_greedy,
            saved_model.saved_model_path(staging, model_name, version),
            staging, report, log,
        ))
    if "tflite" in formats:
        for quantization in quantize:
            if quantization not in TFLITE_QUANTIZATIONS:
                reason = (
                    "full-integer quantization of the decoder step (int8 "
                    "activations and KV cache) is not supported; use "
                    "dynamic (int8 weights) instead"
                )
                report["skipped"].append({"quantization": quantization,
                                          "reason": reason})
                log(f"skipped tflite {quantization}: {reason}.")
                continue
            report["files"].append(_export_tflite_pair(
                task, model, quantization, allow_flex, examples, pairs,
                keras_greedy_ids, tokenizer, staging, log,
            ))
    _apply_tolerances(task, report, staging, log)
    return report


def _greedy_ids(model, encoder_ids, max_length):
    """Keras greedy output ids, one list per row (end token included)."""
    decode = tasks.decoder_function(model, 1, 0.0, max_length)
    rows = []
    for start in range(0, len(encoder_ids), SAVED_MODEL_BATCH):
        batch = encoder_ids[start : start + SAVED_MODEL_BATCH]
        width = max(1, int((batch != 0).sum(1).max()))
        ids = decode(tf.constant(batch[:, :width]))["token_ids"].numpy()
        rows.extend(_trim(row) for row in ids)
    return rows


def _texts(tokenizer, rows):
    """Output strings of id lists, as `tasks.generate_texts` makes them."""
    ids = tf.ragged.constant(rows, tf.int32, row_splits_dtype=tf.int64)
    return [text.decode("utf-8", errors="replace")
            for text in tasks.output_texts(tokenizer, ids).numpy()]


def _trim(row):
    row = [int(t) for t in row]
    while row and row[-1] == 0:
        row.pop()
    return row


def _export_saved_model(task, model, tokenizer, config, examples,
                        keras_greedy, path, staging, report, log):
    start = time.time()
    saved_model_archive(model, tokenizer, config).write_out(path,
                                                            verbose=False)
    loaded = tf.saved_model.load(path)
    count = min(SLICE_EXAMPLES, len(examples))
    texts = examples.sources[:count]
    references = examples.references[:count]

    def run(signature):
        outputs = []
        for i in range(0, count, SAVED_MODEL_BATCH):
            answer = loaded.signatures[signature](
                text=tf.constant(texts[i : i + SAVED_MODEL_BATCH]))
            outputs.extend(t.decode("utf-8", errors="replace")
                           for t in answer["output"].numpy())
        return outputs

    served, served_greedy = run("serving_default"), run("greedy")
    keras_beam = tasks.generate_texts(
        model, tokenizer,
        tasks.source_ids(tokenizer, texts, config.sequence_length),
        beam_size=config.beam_size, length_penalty=config.length_penalty,
        max_length=config.target_sequence_length,
        batch_size=SAVED_MODEL_BATCH,
    )
    report["keras"]["beam_slice"] = {
        "examples": count,
        **tasks.validation_figures(task.score(keras_beam, references)),
    }
    ops = saved_model.graph_ops(loaded.signatures["serving_default"])
    entry = {
        "path": os.path.relpath(path, staging),
        "format": "savedmodel",
        "quantization": "none",
        "input": "text",
        "signatures": sorted(loaded.signatures.keys()),
        "bytes": saved_model.directory_bytes(path),
        "custom_ops": [op for op in ops if not hasattr(tf.raw_ops, op)],
        "examples": count,
        **tasks.validation_figures(task.score(served, references)),
        "beam_matches_keras": float(np.mean(
            [a == b for a, b in zip(served, keras_beam)])),
        "greedy_matches_keras": float(np.mean(
            [a == b for a, b in zip(served_greedy, keras_greedy[:count])])),
        "seconds": round(time.time() - start, 1),
    }
    log(f"savedmodel: {entry['path']} ({entry['bytes']:,} bytes; "
        f"{task.metric_line(entry, 'val_')} on {count} examples; outputs "
        f"equal Keras': beam {entry['beam_matches_keras']:.0%}, greedy "
        f"{entry['greedy_matches_keras']:.0%})")
    return entry


def _export_tflite_pair(task, model, quantization, allow_flex, examples,
                        pairs, keras_greedy_ids, tokenizer, staging, log):
    start = time.time()
    (encoder_bytes, encoder_ops), (step_bytes, step_ops) = convert_pair(
        model, quantization, allow_flex)
    entry = {"format": "tflite", "quantization": quantization}
    for key, name, content, ops in (
        ("encoder", tflite_names(quantization)[0], encoder_bytes,
         encoder_ops),
        ("decoder_step", tflite_names(quantization)[1], step_bytes, step_ops),
    ):
        path = os.path.join(staging, "tflite", name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(content)
        entry[key] = {"path": os.path.relpath(path, staging),
                      "bytes": len(content), "ops": ops,
                      "flex_ops": tflite.flex_ops(ops)}
    entry["bytes"] = len(encoder_bytes) + len(step_bytes)
    encoder = tflite.interpreter(encoder_bytes)
    step = tflite.interpreter(step_bytes)
    entry["max_abs_logit_diff"] = _max_logit_diff(
        model, encoder, step, pairs, min(LOGIT_EXAMPLES, len(pairs)))
    length = model.max_decoder_sequence_length
    on_device = [
        generate_ids(encoder, step, row[row != 0], length)
        for row in pairs.encoder_ids
    ]
    texts = _texts(tokenizer, on_device)
    entry.update({
        "greedy_examples": len(on_device),
        "greedy_agreement": float(np.mean(
            [a == b for a, b in zip(on_device, keras_greedy_ids)])),
        "greedy_tokens": int(sum(len(ids) for ids in on_device)),
        "greedy": tasks.validation_figures(
            task.score(texts, examples.references)),
        "seconds": round(time.time() - start, 1),
    })
    log(f"tflite {quantization}: {entry['encoder']['path']} + "
        f"{entry['decoder_step']['path']} ({entry['bytes']:,} bytes, max "
        f"|Δlogits| {entry['max_abs_logit_diff']:.2e}, greedy equals Keras "
        f"on {entry['greedy_agreement']:.1%} of {len(on_device)} examples)")
    return entry


def _max_logit_diff(model, encoder, step, pairs, count):
    """Largest |Δlogits| of the step file against the Keras model, over
    the teacher-forced targets of the first `count` examples."""
    decode = step.get_signature_runner("decode")
    empty = np.zeros(decode.get_input_details()["self_cache"]["shape"],
                     np.float32)
    worst = 0.0
    for row, targets in zip(pairs.encoder_ids[:count],
                            pairs.target_ids[:count]):
        source_ids = row[row != 0]
        inputs = targets[:-1][: max(1, int((targets[:-1] != 0).sum()))]
        expected = np.asarray(model({
            "encoder_token_ids": source_ids[None, :],
            "decoder_token_ids": inputs[None, :],
        }, training=False))[0]
        source, cross_cache = encode_source(encoder, source_ids)
        cache = empty
        for index, token in enumerate(inputs):
            out = decode(token_id=np.array([[token]], np.int32),
                         index=np.array(index, np.int32), self_cache=cache,
                         cross_cache=cross_cache, source_ids=source)
            cache = out["self_cache"]
            worst = max(worst, float(np.abs(out["logits"][0]
                                            - expected[index]).max()))
    return worst


def _apply_tolerances(task, report, staging, log):
    """Fails on a float32 pair that differs from Keras; drops a quantized
    pair whose greedy score is too far below the float32 pair's."""
    key = "val_bleu" if task.metric == "bleu" else "val_rouge1"
    float32 = next((e for e in report["files"]
                    if e["format"] == "tflite"
                    and e["quantization"] == "none"), None)
    kept = []
    for entry in report["files"]:
        if entry["format"] != "tflite":
            kept.append(entry)
            continue
        if entry["quantization"] == "none":
            if entry["max_abs_logit_diff"] > FLOAT_LOGIT_TOLERANCE:
                raise UserError(
                    f"{entry['decoder_step']['path']} differs from the Keras "
                    f"model by {entry['max_abs_logit_diff']:.2e} in its "
                    f"logits (tolerance {FLOAT_LOGIT_TOLERANCE:g}): the "
                    "conversion is wrong; please report it."
                )
            kept.append(entry)
            continue
        reference = (float32 or report["keras"])["greedy"][key]
        below = reference - entry["greedy"][key]
        entry["score_points_vs_float32"] = -below
        if below <= SCORE_POINTS_TOLERANCE:
            kept.append(entry)
            continue
        reason = (
            f"its greedy {key[4:]} is {below:.2f} points below the float32 "
            f"model's, outside the {SCORE_POINTS_TOLERANCE:g}-point bound"
        )
        for part in ("encoder", "decoder_step"):
            os.remove(os.path.join(staging, entry[part]["path"]))
        report["dropped"].append({**entry, "reason": reason})
        log(f"dropped tflite {entry['quantization']}: {reason}.")
    report["files"] = kept


def tflite_outputs(run_dir, task_name, texts, beam_size=None):
    """Outputs of the run's exported float32 TFLite encoder and decoder
    step, driven by `keras_tfm.export.seq2seq.generate_ids`."""
    from keras_tfm.tasks.finetune import load_finetune_config

    tasks.check_run(run_dir, task_name)
    config = load_finetune_config(run_dir)
    tokenizer = load_tokenizer(os.path.join(run_dir, "tokenizer"))
    encoder, step = load_tflite_pair(
        os.path.join(run_dir, "export", "tflite"), run_dir
    )
    sources = tasks.source_ids(tokenizer, texts, config.sequence_length)
    outputs = []
    with _startup.quiet_stderr():
        for row in sources:
            ids = generate_ids(
                encoder, step, row[row != tokenizer.pad_id],
                config.target_sequence_length,
                beam_size=beam_size or config.beam_size,
                length_penalty=config.length_penalty,
            )
            outputs.append(
                tasks.output_texts(
                    tokenizer, tf.constant([ids or [0]], tf.int32)
                )[0].numpy().decode("utf-8", errors="replace"))
    return outputs




def predict_tflite(run_dir, task_name, texts, beam_size=None):
    """The task's `predict_run` answers, from the exported TFLite pair."""
    if beam_size is not None:
        tasks.check_beam_size(beam_size)
    outputs = tflite_outputs(run_dir, task_name, texts, beam_size)
    return [{"text": text, "output": output}
            for text, output in zip(texts, outputs)]
