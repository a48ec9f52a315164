"""A TFLite file that takes raw text (byte-level tokenizer runs).

Signature `serving_default`: `text` string `[1]` -> `token_ids` int32 `[5]`
and `log_probs` float32 `[5]`, the most likely next tokens (id = byte + 4).
The text is split into bytes inside the file by tensorflow-text's
`ByteSplitter`, one of its TFLite-compatible ops; the app registers
tensorflow-text's custom ops (`tflite_registrar.SELECT_TFTEXT_OPS` in
Python; linked into the app on Android), nothing else. WordPiece runs get
no such file: their lossless pre-split needs `regex_split`, which TFLite
cannot run.
"""

import tempfile

import keras
import numpy as np
import tensorflow as tf
import tensorflow_text as tf_text

from keras_tfm.export import tflite

TOP_K = 5


def text_archive(model, tokenizer):
    length = model.max_sequence_length
    splitter = tf_text.ByteSplitter()
    archive = keras.export.ExportArchive()
    archive.track(model)

    def next_token(text):
        # Dense ops only on the ids: ragged slicing would need ops TFLite
        # lacks. [EOS] first (start of a document), then the last bytes.
        ids = tf.cast(splitter.split(text).flat_values, tf.int32)
        ids = ids + tokenizer.num_special_tokens
        ids = tf.concat([tf.constant([tokenizer.eos_id], tf.int32), ids], 0)
        ids = ids[-length:]
        count = tf.shape(ids)[0]
        padded = tf.reshape(tf.pad(ids, [[0, length - count]]), [1, length])
        logits = tf.cast(model(padded, training=False), tf.float32)
        top = tf.math.top_k(tf.nn.log_softmax(tf.gather(logits[0], count - 1)),
                            TOP_K)
        return {"token_ids": top.indices, "log_probs": top.values}

    archive.add_endpoint(
        "serve", next_token,
        input_signature=[tf.TensorSpec([1], tf.string, name="text")],
    )
    return archive


def convert_text_model(model, tokenizer):
    """TFLite bytes (builtins + tensorflow-text custom ops) and its ops."""
    with tempfile.TemporaryDirectory() as tmp:
        text_archive(model, tokenizer).write_out(tmp, verbose=False)
        content = tflite.convert_saved_model(
            tmp, ["serving_default"], "none", allow_flex=False,
            allow_custom_ops=True,
        )
    return content, tflite.list_ops(content)


def interpreter(path):
    """A LiteRT interpreter with tensorflow-text's custom ops registered."""
    from ai_edge_litert.interpreter import InterpreterWithCustomOps

    return InterpreterWithCustomOps(
        model_path=path,
        custom_op_registerers=tf_text.tflite_registrar.SELECT_TFTEXT_OPS,
    )


def next_tokens(runner, text):
    out = runner.get_signature_runner("serving_default")(
        text=np.array([text.encode("utf-8")])
    )
    return out["token_ids"], out["log_probs"]
