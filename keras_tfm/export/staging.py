"""Writing an export: arguments checked first, one writer at a time,
everything staged in a temporary directory renamed into place at the end.

A failed conversion leaves nothing behind, and `--overwrite` replaces an
earlier export only: a directory holding its `export_report.json`.
"""

import os
import shutil

from keras_tfm import _startup
from keras_tfm import directories as run_directory
from keras_tfm import files
from keras_tfm.errors import UserError

FORMATS = ("savedmodel", "tflite")
QUANTIZATIONS = ("none", "float16", "dynamic", "int8")
REPORT = "export_report.json"


def check_choices(values, allowed, what):
    for value in values:
        if value not in allowed:
            raise UserError(
                f"unknown {what} '{value}': use {', '.join(allowed)}."
            )


def check_export_arguments(run_dir, formats, quantize, output, version,
                           overwrite):
    """Every argument a user can get wrong, before anything is loaded."""
    if not formats:
        raise UserError(
            f"--format names no format: use one or more of "
            f"{', '.join(FORMATS)}, comma-separated."
        )
    check_choices(formats, FORMATS, "format")
    if "tflite" in formats and not quantize:
        raise UserError(
            f"--quantize names no variant: use one or more of "
            f"{', '.join(QUANTIZATIONS)}, comma-separated."
        )
    check_choices(quantize, QUANTIZATIONS, "quantization")
    if isinstance(version, bool) or not isinstance(version, int) or (
        version < 1
    ):
        raise UserError(
            f"--version must be a positive integer (TF Serving serves "
            f"numbered version directories); got {version}."
        )
    run_directory.check_output_directory(output, "--output")
    real_output = os.path.realpath(output)
    real_run = os.path.realpath(run_dir)
    if real_run == real_output or real_run.startswith(real_output + os.sep):
        raise UserError(
            f"--output '{output}' is the run directory or holds it: pass a "
            "directory of its own (default: RUN_DIR/export)."
        )
    if os.path.isdir(output) and os.listdir(output):
        if not os.path.isfile(os.path.join(output, REPORT)):
            raise UserError(
                f"--output '{output}' is not empty and holds no earlier "
                f"export ({REPORT} is missing): keras-tfm replaces only its "
                "own exports; pass an empty or new directory."
            )
        if not overwrite:
            raise UserError(
                f"'{output}' already holds an export: pass --overwrite to "
                "replace it, or --output for another directory."
            )


def staged_export(run_dir, output, formats, quantize, version, overwrite,
                  build):
    """Locks `output`, calls `build(staging)` to write the files and
    return the report, writes the report, renames staging to `output`.

    Returns the report with `output` added.
    """
    parent = os.path.dirname(os.path.abspath(output))
    created = run_directory.make_directory(parent, "--output")
    lock = run_directory.DirectoryLock(
        os.path.join(parent, f".{os.path.basename(os.path.abspath(output))}"
                     ".keras-tfm.lock"),
        what="export directory", flag="--output",
    )
    try:
        with lock:
            # Checked again under the lock: another export may have
            # written it meanwhile.
            check_export_arguments(run_dir, formats, quantize, output,
                                   version, overwrite)
            staging = output.rstrip(os.sep) + ".partial"
            shutil.rmtree(staging, ignore_errors=True)
            os.makedirs(staging)
            try:
                # The converter and interpreter log from C++ (quantizer
                # settings, XNNPACK): silenced unless
                # TF_CPP_MIN_LOG_LEVEL=0.
                with _startup.quiet_stderr():
                    report = build(staging)
                files.write_json(os.path.join(staging, REPORT), report)
                if os.path.exists(output):
                    shutil.rmtree(output)
                os.replace(staging, output)
            finally:
                shutil.rmtree(staging, ignore_errors=True)
    finally:
        run_directory.remove_if_only_lock(created)
    report["output"] = output
    return report
