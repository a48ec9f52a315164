"""`keras-tfm export`: SavedModel for TF Serving and TFLite files."""

from keras_tfm.cli.common import comma_list


def add_parser(commands):
    parser = commands.add_parser(
        "export",
        help="SavedModel for TF Serving and TFLite files, checked against "
        "the Keras model",
        description="Export a finished run under RUN_DIR/export/ (or "
        "--output) and write export_report.json: each file's size, the "
        "largest difference of its logits from the Keras model's, and its "
        "bits per byte on held-out text. A file outside its tolerance is "
        "dropped with a one-line reason.",
    )
    parser.add_argument("run_dir", metavar="RUN_DIR",
                        help="a finished run's directory")
    parser.add_argument(
        "--format", type=comma_list, default="savedmodel,tflite",
        help="comma-separated formats (default: savedmodel,tflite; choices: "
        "savedmodel, tflite)",
    )
    parser.add_argument(
        "--quantize", type=comma_list, default="none,float16,dynamic,int8",
        help="comma-separated TFLite variants: none (float32), float16, "
        "dynamic (int8 weights), int8 (int8 weights and activations, "
        "calibrated on training text) (default: all four)",
    )
    parser.add_argument("--output",
                        help="export directory (default: RUN_DIR/export)")
    parser.add_argument(
        "--model-name",
        help="TF Serving model name (default: the run directory's name)",
    )
    parser.add_argument("--version", type=int, default=1,
                        help="TF Serving version directory, a positive "
                        "integer (default: 1)")
    parser.add_argument(
        "--overwrite", action="store_true",
        help="replace an earlier export in the output directory (only an "
        "export: a directory with its export_report.json)",
    )
    parser.add_argument(
        "--allow-flex", action="store_true",
        help="accept select TF (Flex) ops in TFLite files; they need a "
        "Flex-enabled runtime",
    )
    return parser


def run(args):
    from keras_tfm.export import export_run
    from keras_tfm.training.run import check_run_directory
    from keras_tfm.training.run import run_kind

    check_run_directory(args.run_dir)
    if run_kind(args.run_dir) != "pretrain":
        from keras_tfm.export.tasks import export_task_run

        export_run = export_task_run  # noqa: F811
    report = export_run(
        args.run_dir,
        formats=args.format,
        quantize=args.quantize,
        output=args.output,
        model_name=args.model_name,
        version=args.version,
        overwrite=args.overwrite,
        allow_flex=args.allow_flex,
    )
    print(f"export written to {report['output']} (export_report.json)")
