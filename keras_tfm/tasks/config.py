"""The fine-tuning config: the task, its data, where it starts, how it trains.

The model fields (`num_layers`, `hidden_dim`, ...) describe the model
trained from scratch; with `--init RUN` they are the pre-training run's,
copied into `config.json`, and a flag that contradicts them is an error.
"""

import dataclasses
import math

from keras_tfm.training.config import TOKENIZERS
from keras_tfm.training.config import ModelSettings
from keras_tfm.training.config import RunSettings
from keras_tfm.training.config import check
from keras_tfm.training.config import check_choices
from keras_tfm.training.config import check_non_negative_ints
from keras_tfm.training.config import check_positive_ints
from keras_tfm.training.config import field
from keras_tfm.training.config import validate_model_settings
from keras_tfm.training.config import validate_run_settings

TASKS = ("classification", "translation", "summarization")
POOLINGS = ("auto", "first", "mean", "last")

# The architecture fields an --init run fixes.
ARCHITECTURE_FIELDS = tuple(f.name for f in dataclasses.fields(ModelSettings))


@dataclasses.dataclass(frozen=True)
class FinetuneConfig(RunSettings, ModelSettings):
    """Everything a fine-tuning run depends on."""

    # --- Task and data ---
    task: str = field(
        "classification", "what the model learns: classification (labelled "
        "text), translation (sentence pairs) or summarization (JSON Lines)",
        TASKS)
    data: tuple = field(
        (), "training data: a TSV/CSV/JSONL file of labelled text "
        "(classification), SOURCE_FILE TARGET_FILE (translation, one "
        "sentence per line, .gz too) or a JSONL file (summarization)")
    validation_data: tuple = field(
        (), "validation data in the same form (default: a seeded "
        "validation_fraction of the training data)")
    validation_fraction: float = field(
        0.1, "share of the training data held out when no "
        "--validation-data is given")
    text_column: str = field(
        "sentence", "classification: the column (or JSONL field) holding "
        "the text")
    label_column: str = field(
        "label", "classification: the column (or JSONL field) holding the "
        "label (strings or integers)")
    source_field: str = field(
        "source", "summarization: the JSONL field of the input (a string or "
        "a list of sentences)")
    target_field: str = field(
        "target", "summarization: the JSONL field of the reference (a string "
        "or a list: the first trains, all are references)")

    # --- Start ---
    init: str = field(
        "", "a pre-training run directory: its tokenizer and weights start "
        "the model; empty: train from scratch")
    tokenizer: str = field(
        "byte", "from scratch: byte or wordpiece (trained on the training "
        "data); with --init: the run's", TOKENIZERS)
    vocabulary_size: int = field(
        8000, "from scratch: target WordPiece vocabulary size")
    freeze_backbone: bool = field(
        False, "train only the task head (classification)")
    pooling: str = field(
        "auto", "classification: the hidden state that represents the text; "
        "auto: the last real token for a causal backbone, the mean of the "
        "tokens for a masked one", POOLINGS)
    classifier_dropout: float = field(0.1, "dropout before the class head")

    # --- Seq2seq ---
    target_sequence_length: int = field(
        64, "translation/summarization: longest target in tokens (longer "
        "ones are cut)")
    num_decoder_layers: int = field(
        0, "seq2seq decoder blocks (0: num_layers)")
    decoder_from_init: bool = field(
        False, "seq2seq with a causal --init run: start the decoder's "
        "self-attention and feed-forward from it too")
    label_smoothing: float = field(
        0.0, "seq2seq: label smoothing of the target cross-entropy")
    beam_size: int = field(4, "seq2seq: beam width for evaluation and "
                           "prediction (1: greedy)")
    length_penalty: float = field(
        0.6, "seq2seq: beam scores are divided by ((5 + length) / 6) ** this")

    # --- Length ---
    epochs: int = field(
        0, "passes over the training data; sets max_steps (0: use "
        "max_steps)")
    preset: str = field("small", "the architecture preset (from scratch)")

    def __post_init__(self):
        validate_finetune(self)

    def to_dict(self):
        config = dataclasses.asdict(self)
        config["data"] = list(self.data)
        config["validation_data"] = list(self.validation_data)
        return config

    def steps_for(self, train_examples):
        """Optimizer steps: `max_steps`, or `epochs` passes over
        `train_examples` examples in global batches."""
        if not self.epochs:
            return self.max_steps
        per_step = self.batch_size * self.grad_accum_steps
        return max(1, math.ceil(self.epochs * train_examples / per_step))


def validate_finetune(config):
    validate_model_settings(config)
    validate_run_settings(config)
    check_choices(config, ("task", "tokenizer", "pooling"))
    check_positive_ints(config, ("vocabulary_size", "target_sequence_length",
                                 "beam_size"))
    check_non_negative_ints(config, ("epochs", "num_decoder_layers"))
    check(
        0.0 < config.validation_fraction < 1.0,
        "validation_fraction must be between 0 and 1; got "
        f"{config.validation_fraction}.",
    )
    check(0.0 <= config.classifier_dropout < 1.0,
          "classifier_dropout must be in [0, 1).")
    check(0.0 <= config.label_smoothing < 1.0,
          "label_smoothing must be in [0, 1).")
    check(config.length_penalty >= 0, "length_penalty must be >= 0.")
    check(
        all(isinstance(d, str) and d for d in config.data),
        "data must be a list of file paths.",
    )
