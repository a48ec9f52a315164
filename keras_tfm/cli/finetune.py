"""`keras-tfm finetune`: train a task model, from a pre-training run or not."""

from keras_tfm.cli.common import add_config_flags
from keras_tfm.cli.common import describe


def add_parser(commands):
    from keras_tfm.tasks.config import FinetuneConfig
    from keras_tfm.training.config import preset_names

    parser = commands.add_parser(
        "finetune",
        help="fine-tune a classifier or a seq2seq model, from a pre-training "
        "run (--init) or from scratch",
        description="Fine-tune for a task and write a run directory like "
        "pre-training's (checkpoints that resume, history, metrics). With "
        "--init RUN the pre-training run's tokenizer and weights start the "
        "model; without, the same architecture (--config preset or flags) "
        "starts from random weights. A rerun of an unfinished run resumes "
        "it.",
    )
    parser.add_argument(
        "--config",
        help=describe("architecture preset or JSON config file, from scratch "
                      "only", "small", preset_names()),
    )
    parser.add_argument(
        "--data", nargs="+", metavar="FILE",
        help="training data: a TSV/CSV/JSONL file (classification), "
        "SOURCE_FILE TARGET_FILE (translation) or a JSONL file "
        "(summarization)",
    )
    parser.add_argument(
        "--validation-data", nargs="+", metavar="FILE",
        help="validation data in the same form (default: a seeded "
        "--validation-fraction of the training data)",
    )
    parser.add_argument("--output-dir",
                        help="run directory (default: runs/<data>-<task>-"
                        "<init|scratch>)")
    parser.add_argument(
        "--restart", action="store_true",
        help="discard the run in the output directory and start over; "
        "without it an unfinished run resumes",
    )
    add_config_flags(parser, FinetuneConfig,
                     skip=("data", "validation_data", "output_dir", "preset"))
    return parser


def run(args):
    from keras_tfm.errors import UserError
    from keras_tfm.tasks.config import ARCHITECTURE_FIELDS
    from keras_tfm.tasks.config import FinetuneConfig
    from keras_tfm.tasks.finetune import finetune
    from keras_tfm.tasks.finetune import with_init_architecture
    from keras_tfm.tasks.registry import get_task
    from keras_tfm.training.config import make_config
    from keras_tfm.training.config import read_config_file

    values = {
        k: v for k, v in vars(args).items()
        if k not in ("command", "config", "restart") and v is not None
    }
    if args.epochs and args.max_steps:
        raise UserError(
            "--max-steps and --epochs both set the run's length: pass one."
        )
    if not args.data:
        raise UserError(
            "--data is required: the training data of the task (see "
            "`keras-tfm finetune --help`)."
        )
    if args.init and args.config:
        raise UserError(
            "--config sets the architecture of a model trained from "
            "scratch; with --init the pre-training run sets it: drop one."
        )
    for key in ("data", "validation_data"):
        if key in values:
            values[key] = tuple(values[key])
    explicit = set(values)
    if args.config:
        # Only the preset's architecture: its optimization settings are
        # pre-training's.
        preset = read_config_file(args.config)
        values = {
            **{k: v for k, v in preset.items() if k in ARCHITECTURE_FIELDS},
            "preset": preset["preset"],
            **values,
        }
    config = make_config(config_class=FinetuneConfig, **values)
    config = with_init_architecture(config, explicit)
    task = get_task(config.task)
    metrics = finetune(config, task, restart=args.restart)
    print(f"\nrun directory: {metrics['run_dir']}")
    print(task.format_metrics(metrics))
