"""TFLite files for phones: float32, float16, dynamic-range and full int8.

Each file is converted from a SavedModel (Keras' `ExportArchive`), the
route Keras' own LiteRT export takes (`TFLiteConverter.from_concrete_
functions` gave NaN logits in a trial), with a static input shape: a
dynamic sequence length brings in Flex (select TF) ops that neither the
LiteRT interpreter nor an ordinary app can run. Only TFLite's built-in ops
are allowed unless the caller opts in to Flex; the ops of every file are
listed.
"""

import contextlib
import os
import tempfile

import keras
import numpy as np
import tensorflow as tf

from keras_tfm.errors import UserError
from keras_tfm.export.saved_model import logits_archive

QUANTIZATIONS = ("none", "float16", "dynamic", "int8")


def convert_saved_model(saved_model_dir, signature_keys, quantization,
                        allow_flex, representative_dataset=None,
                        allow_custom_ops=False):
    converter = tf.lite.TFLiteConverter.from_saved_model(
        saved_model_dir, signature_keys=signature_keys
    )
    ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    if quantization == "float16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    elif quantization == "dynamic":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    elif quantization == "int8":
        # Weights and activations in int8, calibrated on real text.
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = representative_dataset
        ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8,
               tf.lite.OpsSet.TFLITE_BUILTINS]
    if allow_flex:
        ops.append(tf.lite.OpsSet.SELECT_TF_OPS)
    converter.target_spec.supported_ops = ops
    converter.allow_custom_ops = allow_custom_ops
    try:
        if quantization == "int8":
            return _selective_int8(converter, representative_dataset)
        return converter.convert()
    except Exception as e:  # the converter raises ConverterError and others
        message = str(e).strip().splitlines()
        flex = [line for line in message
                if "Flex" in line or "select" in line.lower()]
        raise UserError(
            f"TFLite conversion ({quantization}) failed: "
            f"{(flex or message or ['unknown error'])[-1].strip()}"
            + ("" if allow_flex else "; pass --allow-flex to accept select "
               "TF ops (they need a Flex-enabled runtime)")
        ) from None


# Ops kept in float in the int8 file. All-int8 loses much of a model's
# quality: the attention softmax's exponentials and normalizing sum round
# small probabilities to zero over long contexts, and the residual
# additions and GELU lose more. These five were chosen op by op with
# TFLite's quantization debugger; the matmuls (FULLY_CONNECTED,
# BATCH_MATMUL), norms and lookups stay int8. The export measures each
# file and drops one outside its bound (docs/export.md has the figures).
INT8_FLOAT_OPS = ("EXP", "SUM", "DIV", "ADD", "GELU")


def _selective_int8(converter, representative_dataset):
    """Full-integer quantization with `INT8_FLOAT_OPS` left in float.

    Uses TFLite's quantization debugger, whose "denylisted ops" are the
    public way to keep chosen ops out of integer quantization.
    """
    def debug_dataset():
        for sample in representative_dataset():
            yield list(sample.values())

    debugger = tf.lite.experimental.QuantizationDebugger(
        converter=converter,
        debug_dataset=debug_dataset,
        debug_options=tf.lite.experimental.QuantizationDebugOptions(
            denylisted_ops=list(INT8_FLOAT_OPS)
        ),
    )
    return debugger.get_nondebug_quantized_model()


def list_ops(content):
    """The op names in a TFLite flatbuffer (custom and Flex ops by name)."""
    from tensorflow.lite.python import schema_py_generated as schema

    names = {
        code: name
        for name, code in vars(schema.BuiltinOperator).items()
        if not name.startswith("_")
    }
    model = schema.Model.GetRootAsModel(content, 0)
    ops = set()
    for i in range(model.OperatorCodesLength()):
        code = model.OperatorCodes(i)
        builtin = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
        if names.get(builtin) == "CUSTOM":
            ops.add(code.CustomCode().decode("utf-8"))
        else:
            ops.add(names.get(builtin, str(builtin)))
    return sorted(ops)


def flex_ops(ops):
    return [op for op in ops if op.startswith("Flex")]


def attention_layers(layer, seen=None):
    """Every `MultiHeadAttention` inside `layer`, found through its public
    attributes (sublayers and lists of them)."""
    from keras_tfm.layers import MultiHeadAttention

    seen = set() if seen is None else seen
    if id(layer) in seen:
        return []
    seen.add(id(layer))
    found = [layer] if isinstance(layer, MultiHeadAttention) else []
    children = []
    for value in vars(layer).values():
        if isinstance(value, keras.layers.Layer):
            children.append(value)
        elif isinstance(value, (list, tuple)):
            children.extend(
                v for v in value if isinstance(v, keras.layers.Layer)
            )
    for child in children:
        found.extend(attention_layers(child, seen))
    return found


@contextlib.contextmanager
def bounded_masking(model, enabled=True):
    """Traces attention with the int8-friendly masked softmax."""
    layers = attention_layers(model)
    for layer in layers:
        layer.bounded_masking = enabled
    try:
        yield
    finally:
        for layer in layers:
            layer.bounded_masking = False


def convert_logits_model(model, sequence_length, quantization="none",
                         allow_flex=False, calibration_windows=None):
    """The model as TFLite bytes: token ids `[1, L]` -> logits.

    Args:
        calibration_windows: int array `(n, L)` of real token ids; needed
            for `"int8"`, whose activation ranges they calibrate.
    """
    if quantization not in QUANTIZATIONS:
        raise UserError(
            f"unknown quantization '{quantization}': use "
            f"{', '.join(QUANTIZATIONS)}."
        )
    representative = None
    if quantization == "int8":
        def representative():
            for row in calibration_windows:
                yield {"token_ids": np.asarray(row[None, :], np.int32)}

    with tempfile.TemporaryDirectory() as tmp, bounded_masking(
        model, quantization == "int8"
    ):
        logits_archive(model, (1, sequence_length)).write_out(
            tmp, verbose=False
        )
        content = convert_saved_model(
            tmp, ["serving_default"], quantization, allow_flex, representative
        )
    ops = list_ops(content)
    if flex_ops(ops) and not allow_flex:
        raise UserError(
            f"the {quantization} TFLite file needs Flex ops "
            f"({', '.join(flex_ops(ops))}), which ordinary apps cannot run: "
            "pass --allow-flex to keep it anyway."
        )
    return content, ops


def interpreter(path_or_content, num_threads=None):
    """A LiteRT interpreter for a file or its bytes, as an app would run it."""
    from ai_edge_litert.interpreter import Interpreter

    kwargs = {"num_threads": num_threads} if num_threads else {}
    if isinstance(path_or_content, (bytes, bytearray)):
        return Interpreter(model_content=bytes(path_or_content), **kwargs)
    return Interpreter(model_path=os.fspath(path_or_content), **kwargs)


def run_logits(runner, token_ids):
    """Logits `[n, L, V]` for `[n, L]` ids, one sequence per call."""
    signature = runner.get_signature_runner("serving_default")
    return np.concatenate(
        [
            signature(token_ids=np.asarray(row[None, :], np.int32))["logits"]
            for row in token_ids
        ]
    )
