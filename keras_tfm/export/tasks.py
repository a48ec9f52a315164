"""`keras-tfm export` for fine-tuned runs: the task's own export."""

import os

from keras_tfm.export.staging import FORMATS
from keras_tfm.export.staging import QUANTIZATIONS
from keras_tfm.training.run import run_kind


def export_task_run(run_dir, formats=FORMATS, quantize=QUANTIZATIONS,
                    output=None, model_name=None, version=1,
                    overwrite=False, allow_flex=False, log=print):
    """Exports a fine-tuning run as its task does; returns the report."""
    kind = run_kind(run_dir)
    if kind == "classification":
        from keras_tfm.export.classifier import export_classifier_run as run
    else:
        from keras_tfm.export.seq2seq import export_seq2seq_run as run
    return run(
        run_dir,
        formats=list(formats),
        quantize=list(quantize),
        output=output or os.path.join(run_dir, "export"),
        model_name=model_name or os.path.basename(os.path.abspath(run_dir)),
        version=version,
        overwrite=overwrite,
        allow_flex=allow_flex,
        log=log,
    )


def predict_with_tflite(run_dir, texts, beam_size=None):
    """A fine-tuned run's answers from its exported TFLite files (what
    `keras-tfm predict --backend tflite` prints)."""
    kind = run_kind(run_dir)
    if kind == "classification":
        from keras_tfm.export.classifier import predict_tflite

        return predict_tflite(run_dir, texts)
    from keras_tfm.export.seq2seq import predict_tflite

    return predict_tflite(run_dir, kind, texts, beam_size)
