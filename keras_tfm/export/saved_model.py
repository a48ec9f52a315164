"""SavedModel in TF Serving's layout, with a token-id and a text signature.

Signatures:

- `serving_default`: `token_ids` int32 `[batch, seq]` (any batch, any
  length up to the model's maximum) -> `logits` float32 `[batch, seq,
  vocabulary_size]`.
- causal LM, `next_token`: `text` string `[batch]` -> the `top_k` most
  likely next tokens after each text: `token_ids` int32 `[batch, k]`,
  `tokens` string `[batch, k]` (their UTF-8 bytes) and `log_probs` float32
  `[batch, k]`. Texts are tokenized in the graph by the run's tokenizer,
  after an `[EOS]` (the start of a document), and cut to the model's
  context from the left.
- masked LM, `fill_mask`: `text` string `[batch]` with `[MASK]` marking
  blanks -> for each blank (padded per row): `token_ids` int32 `[batch,
  blanks, k]`, `tokens` string and `log_probs` float32 of the same shape.

The SavedModel needs only `tensorflow` and `tensorflow_text` to load.
"""

import os

import keras
import tensorflow as tf

TOP_K = 5
MASK_TEXT = "[MASK]"


def logits_function(model):
    """The endpoint every export starts from: token ids -> float32 logits."""

    def logits(token_ids):
        return {"logits": tf.cast(model(token_ids, training=False), tf.float32)}

    return logits


def next_token_function(model, tokenizer, top_k=TOP_K):
    """`text [batch]` -> top-k next tokens after each text (causal LM)."""
    table = tokenizer.token_table()

    def next_token(text):
        ids = tokenizer.tokenize(text)
        start = tf.fill([ids.nrows(), 1], tokenizer.eos_id)
        ids = tf.concat([tf.RaggedTensor.from_tensor(start), ids], axis=1)
        ids = ids[:, -model.max_sequence_length :]
        lengths = tf.cast(ids.row_lengths(), tf.int32)
        logits = model(ids.to_tensor(default_value=0), training=False)
        # Each row's logits at its last real token.
        last = tf.gather(logits, lengths - 1, axis=1, batch_dims=1)
        top = tf.math.top_k(tf.nn.log_softmax(tf.cast(last, tf.float32)), top_k)
        return {
            "token_ids": top.indices,
            "tokens": tf.gather(table, top.indices),
            "log_probs": top.values,
        }

    return next_token


def fill_mask_function(model, tokenizer, top_k=TOP_K):
    """`text [batch]` with `[MASK]` blanks -> top-k fill-ins per blank."""
    table = tokenizer.token_table()

    def fill_mask(text):
        # (batch, (pieces)): the text between the blanks.
        pieces = tf.strings.split(text, sep=MASK_TEXT)
        piece_ids = tokenizer.tokenize(pieces.flat_values)
        # Every piece but a row's first follows a blank: prefix [MASK].
        position = tf.range(tf.size(pieces.flat_values, tf.int64))
        position -= tf.gather(pieces.row_starts(), pieces.value_rowids())
        blank = tf.cast(position > 0, tf.int64)
        prefix = tf.RaggedTensor.from_row_lengths(
            tf.fill([tf.reduce_sum(blank)], tokenizer.mask_id), blank
        )
        piece_ids = tf.concat([prefix, piece_ids], axis=1)
        ids = tf.RaggedTensor.from_row_splits(piece_ids, pieces.row_splits)
        ids = ids.merge_dims(1, 2)[:, : model.max_sequence_length]
        dense = ids.to_tensor(default_value=tokenizer.pad_id)
        log_probs = tf.nn.log_softmax(
            tf.cast(model(dense, training=False), tf.float32)
        )
        # (batch, (blanks), vocabulary) -> padded (batch, blanks, k)
        where = tf.ragged.boolean_mask(
            tf.RaggedTensor.from_tensor(tf.range(tf.shape(dense)[1])[None, :]
                                        * tf.ones_like(dense)),
            tf.equal(dense, tokenizer.mask_id),
        )
        blanks = tf.gather(log_probs, where, batch_dims=1)
        top = tf.math.top_k(blanks.to_tensor(), top_k)
        return {
            "token_ids": top.indices,
            "tokens": tf.gather(table, top.indices),
            "log_probs": top.values,
        }

    return fill_mask


def logits_archive(model, shape=(None, None)):
    """An `ExportArchive` whose `serving_default` maps `token_ids` of
    `shape` to `logits`.

    The first endpoint becomes `serving_default`, which TF Serving calls;
    TFLite conversion passes a static shape.
    """
    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(
        "serve",
        logits_function(model),
        input_signature=[tf.TensorSpec(shape, tf.int32, name="token_ids")],
    )
    return archive


def export_saved_model(model, tokenizer, directory, objective="causal"):
    """Writes the SavedModel (variables and signatures) to `directory`."""
    archive = logits_archive(model)
    text_spec = [tf.TensorSpec([None], tf.string, name="text")]
    if objective == "causal":
        archive.add_endpoint(
            "next_token", next_token_function(model, tokenizer), text_spec
        )
    else:
        archive.add_endpoint(
            "fill_mask", fill_mask_function(model, tokenizer), text_spec
        )
    archive.write_out(directory, verbose=False)
    return directory


def saved_model_path(output, model_name, version):
    """TF Serving's layout: `<output>/savedmodel/<name>/<version>/`."""
    return os.path.join(output, "savedmodel", model_name, str(version))


def graph_ops(concrete_function):
    """The op types a SavedModel signature runs, nested functions too."""
    graph = concrete_function.graph.as_graph_def()
    ops = {node.op for node in graph.node}
    for function in graph.library.function:
        ops.update(node.op for node in function.node_def)
    return sorted(ops)


def directory_bytes(path):
    """The size of a SavedModel directory: every file under it."""
    return sum(
        os.path.getsize(os.path.join(root, name))
        for root, _, names in os.walk(path)
        for name in names
    )
