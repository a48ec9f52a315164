"""The pre-training config: one frozen dataclass, named JSON presets.

Each field carries its one-line help (`metadata["help"]`), which the
command line shows with the default and the choices; the comments above
the fields say why the defaults are what they are.
"""

import dataclasses
import math
import os

from keras_tfm import files
from keras_tfm.errors import ConfigError
from keras_tfm.errors import UserError

CONFIG_DIR = os.path.join(os.path.dirname(os.path.dirname(__file__)), "configs")

from keras_tfm.tokenizers import TOKENIZERS  # noqa: E402

OBJECTIVES = ("causal", "masked")
POSITION_EMBEDDINGS = ("learned", "sinusoidal", "rotary")
JIT_COMPILE = ("auto", "true", "false", "autocluster")
STRATEGIES = ("auto", "default", "mirrored", "multi_worker", "tpu")
PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16")
PACKINGS = ("concat", "documents")


def field(default, help, choices=None):
    """A config field with its help text (and choices) for the CLI."""
    metadata = {"help": help}
    if choices:
        metadata["choices"] = choices
    return dataclasses.field(default=default, metadata=metadata)


@dataclasses.dataclass(frozen=True)
class ModelSettings:
    """The architecture fields every run config shares."""

    sequence_length: int = field(
        128, "tokens per training sequence; the model's max_sequence_length")
    num_layers: int = field(4, "Transformer blocks")
    # Head size 32 at the default width.
    num_heads: int = field(4, "attention heads per block; must divide "
                           "hidden_dim")
    hidden_dim: int = field(128, "width of the residual stream and the "
                            "embeddings")
    # 4 x hidden_dim, as in GPT-2.
    intermediate_dim: int = field(512, "feed-forward width")
    # Off by default: short runs on small corpora lose more from the
    # noise (and the extra ops) than they gain (docs/performance.md).
    dropout: float = field(0.0, "dropout on embeddings, attention and both "
                           "residual branches")
    position_embedding: str = field(
        "learned", "learned (GPT-2), sinusoidal (Vaswani et al.) or rotary "
        "(RoPE)", POSITION_EMBEDDINGS)
    layer_norm_epsilon: float = field(1e-5, "added to the variance in every "
                                      "layer norm")
    # Pre-LN is stable at a high learning rate with a short warmup.
    normalize_first: bool = field(True, "pre-LN blocks (else post-LN)")
    tie_embeddings: bool = field(True, "output projection = transposed token "
                                 "embedding")
    use_bias: bool = field(True, "biases in dense layers and layer norms")
    # The tanh form is cheaper than the exact GELU under XLA.
    activation: str = field(
        "gelu_approximate", "feed-forward activation: gelu_approximate (tanh "
        "GELU), gelu, relu, silu or any Keras activation name")


@dataclasses.dataclass(frozen=True)
class RunSettings:
    """The optimization, loop and runtime fields every run config shares."""

    # --- Optimization ---
    batch_size: int = field(32, "global batch in sequences per optimizer step "
                            "(per accumulated batch), split across replicas")
    max_steps: int = field(1500, "optimizer steps; the learning-rate schedule "
                           "spans exactly these")
    learning_rate: float = field(2e-3, "peak learning rate, reached after "
                                 "warmup, then cosine decay")
    # -1: min(100, max_steps // 10), so a short run gets a short warmup.
    warmup_steps: int = field(
        -1, "steps of linear warmup from 0 to learning_rate; -1: "
        "min(100, max_steps / 10)")
    min_learning_rate_ratio: float = field(
        0.1, "the cosine decay ends at learning_rate x this")
    weight_decay: float = field(0.1, "AdamW's decoupled weight decay (biases "
                                "and norms exempt)")
    beta_1: float = field(0.9, "Adam's first-moment decay")
    # 0.99 rather than 0.999: small batches, short runs (as nanoGPT).
    beta_2: float = field(0.99, "Adam's second-moment decay")
    clipnorm: float = field(1.0, "clip the global gradient norm to this; 0 "
                            "turns clipping off")

    # --- Loop ---
    eval_every: int = field(250, "steps between validations (and "
                            "checkpoints)")
    eval_batches: int = field(20, "validation batches per periodic "
                              "evaluation; the final one uses all")
    seed: int = field(0, "seeds weights, dropout, the split, shuffling, "
                      "masking and the sample")
    # Keras' own "auto" turns XLA off on CPU and under every strategy.
    jit_compile: str = field(
        "auto", "auto: XLA on a single device; true/false force it; "
        "autocluster: XLA fuses element-wise ops, matmuls on oneDNN (for "
        "mixed_bfloat16 on CPUs with AMX)", JIT_COMPILE)
    strategy: str = field(
        "auto", "auto: MirroredStrategy over several GPUs (or logical CPUs), "
        "else one device; multi_worker reads TF_CONFIG", STRATEGIES)
    cpu_devices: int = field(0, "split the host CPU into this many logical "
                             "devices (0: leave it whole)")
    precision: str = field(
        "float32", "float32, mixed_float16 (GPUs) or mixed_bfloat16 (TPUs, "
        "recent CPUs): 16-bit compute, float32 weights", PRECISIONS)
    # Accumulated across compiled steps: activation memory of one batch.
    grad_accum_steps: int = field(
        1, "batches of batch_size whose gradients make one optimizer step")
    # Two parts keep both cores of a small CPU busy under XLA.
    batch_splits: int = field(
        0, "parts each batch is computed in, side by side in one compiled "
        "step (0: 2 on a single CPU device under XLA, else 1)")
    checkpoint_every: int = field(0, "steps between checkpoints (0: at every "
                                  "evaluation)")
    deterministic: bool = field(False, "TensorFlow's deterministic ops: "
                                "bit-identical reruns and resumes")
    output_dir: str = field("", "the run directory (default: runs/<data or "
                            "preset>-<objective>)")
    verbose: int = field(1, "1: progress bar, 2: one line per evaluation, 0: "
                         "silent", (0, 1, 2))

    def resolved_warmup_steps(self):
        if self.warmup_steps >= 0:
            return self.warmup_steps
        return min(100, self.max_steps // 10)


@dataclasses.dataclass(frozen=True)
class TrainConfig(RunSettings, ModelSettings):
    """Everything a pre-training run depends on.

    The defaults are the `small` preset: the main job, which trains in about
    three minutes on two CPU cores (0.8 M parameters, 6 M tokens, about 14
    passes over the 0.47 MB default corpus). Presets in
    `keras_tfm/configs/*.json` and `--config FILE` override any field;
    command-line flags override those. The resolved config is saved as
    `config.json` in the run directory.
    """

    # --- Data ---
    data: tuple = field(
        (), "text files or globs (UTF-8, .gz too), or a directory written by "
        "`keras-tfm prepare`; empty: Python's own pydoc_data topics")
    validation_fraction: float = field(
        0.1, "share of the corpus (in blocks of consecutive windows) held "
        "out for validation")
    tokenizer: str = field(
        "byte", "byte (260 ids, nothing unknown) or wordpiece (trained on the "
        "corpus)", TOKENIZERS)
    vocabulary_size: int = field(
        2000, "target WordPiece vocabulary size, special tokens included")
    # Windows of a prepared corpus cross document boundaries ("concat") or
    # attend within their own document only ("documents").
    packing: str = field(
        "concat", "concat: windows run across documents; documents: a token "
        "attends only within its own document (prepared corpora)", PACKINGS)

    # --- Objective ---
    objective: str = field(
        "causal", "causal (GPT-style next token) or masked (BERT-style MLM)",
        OBJECTIVES)

    # --- Output ---
    sample_tokens: int = field(200, "tokens generated as a sample at the end "
                               "(0: none)")
    sample_prompt: str = field("", "the sample's prompt (default: the start "
                               "of a validation sequence)")
    preset: str = field("small", "the preset this config came from "
                        "(informational)")

    def __post_init__(self):
        validate(self)

    def to_dict(self):
        config = dataclasses.asdict(self)
        config["data"] = list(self.data)
        return config


def check(condition, message):
    if not condition:
        raise ConfigError(message)


def check_choices(config, names):
    """Every named field holds one of its declared choices."""
    fields = {f.name: f for f in dataclasses.fields(config)}
    for name in names:
        allowed = fields[name].metadata["choices"]
        value = getattr(config, name)
        check(
            value in allowed,
            f"{name} must be one of {', '.join(map(str, allowed))}; got "
            f"{value!r}.",
        )


def check_positive_ints(config, names):
    for name in names:
        value = getattr(config, name)
        check(
            isinstance(value, int) and value > 0,
            f"{name} must be a positive integer; got {value!r}.",
        )


def check_non_negative_ints(config, names):
    for name in names:
        value = getattr(config, name)
        check(
            isinstance(value, int) and value >= 0,
            f"{name} must be a non-negative integer; got {value!r}.",
        )


def check_optimization(config):
    """The optimizer and schedule fields every run config shares."""
    check(
        math.isfinite(config.learning_rate) and config.learning_rate > 0,
        f"learning_rate must be a positive number; got {config.learning_rate}.",
    )
    check(
        config.warmup_steps == -1
        or 0 <= config.warmup_steps < config.max_steps,
        f"warmup_steps ({config.warmup_steps}) must be below max_steps "
        f"({config.max_steps}) (or -1 for the default): lower "
        "--warmup-steps.",
    )
    check(
        0.0 <= config.min_learning_rate_ratio <= 1.0,
        "min_learning_rate_ratio must be in [0, 1]; got "
        f"{config.min_learning_rate_ratio}.",
    )
    check(config.weight_decay >= 0,
          f"weight_decay must be >= 0; got {config.weight_decay}.")
    for name in ("beta_1", "beta_2"):
        value = getattr(config, name)
        check(0.0 <= value < 1.0, f"{name} must be in [0, 1); got {value}.")
    check(
        math.isfinite(config.clipnorm) and config.clipnorm >= 0,
        f"clipnorm must be >= 0 (0 turns clipping off); got "
        f"{config.clipnorm}.",
    )


def check_architecture(config):
    """The model fields: sizes, heads, activation, dropout."""
    from keras_tfm.layers.activations import get_activation
    from keras_tfm.layers.checks import check_heads_divide

    try:
        check_heads_divide(config.hidden_dim, config.num_heads)
    except ValueError as e:
        raise ConfigError(
            f"{e} (change --hidden-dim or --num-heads)"
        ) from None
    check(
        config.position_embedding != "rotary"
        or (config.hidden_dim // config.num_heads) % 2 == 0,
        "rotary position embeddings need an even head size "
        "(hidden_dim / num_heads).",
    )
    check(0.0 <= config.dropout < 1.0,
          f"dropout must be in [0, 1); got {config.dropout}.")
    check(config.layer_norm_epsilon > 0,
          f"layer_norm_epsilon must be positive; got "
          f"{config.layer_norm_epsilon}.")
    try:
        get_activation(config.activation)
    except ValueError:
        raise ConfigError(
            f"unknown activation {config.activation!r}: use "
            "gelu_approximate, gelu, relu, silu or another Keras activation "
            "name."
        ) from None


def validate_model_settings(config):
    check_choices(config, ("position_embedding",))
    check_positive_ints(config, (
        "sequence_length", "num_layers", "num_heads", "hidden_dim",
        "intermediate_dim",
    ))
    check_architecture(config)


def validate_run_settings(config):
    check_choices(config, ("jit_compile", "strategy", "precision", "verbose"))
    check_positive_ints(config, (
        "batch_size", "max_steps", "eval_every", "eval_batches",
        "grad_accum_steps",
    ))
    check_non_negative_ints(config, (
        "cpu_devices", "checkpoint_every", "batch_splits",
    ))
    check_optimization(config)


def validate(config):
    """Raises `ConfigError` naming the first value that cannot work."""
    validate_model_settings(config)
    validate_run_settings(config)
    check_choices(config, ("tokenizer", "objective", "packing"))
    check_positive_ints(config, ("vocabulary_size",))
    check_non_negative_ints(config, ("sample_tokens",))
    check(
        0.0 < config.validation_fraction < 1.0,
        "validation_fraction must be between 0 and 1; got "
        f"{config.validation_fraction}.",
    )
    check(
        config.tokenizer != "wordpiece" or config.vocabulary_size > 10,
        "a WordPiece vocabulary_size must be above 10.",
    )
    check(
        all(isinstance(d, str) and d for d in config.data),
        "data must be a list of file paths or globs.",
    )
    check(
        config.packing != "documents" or config.position_embedding != "rotary",
        "packing 'documents' restarts positions in every document, which "
        "rotary embeddings do not support yet: use --position-embedding "
        "learned or sinusoidal.",
    )


FIELDS = {f.name: f for f in dataclasses.fields(TrainConfig)}

# Fields that may change when a run resumes: they do not change what is
# trained (only where, how fast, and what is printed).
RUNTIME_FIELDS = (
    "output_dir",
    "verbose",
    "strategy",
    "cpu_devices",
    "jit_compile",
    "batch_splits",
    "checkpoint_every",
    "eval_batches",
    "sample_tokens",
    "sample_prompt",
    "preset",
)


def differences(saved, config, runtime_fields=RUNTIME_FIELDS):
    """Fields, other than `runtime_fields`, where two configs differ."""
    return [
        f.name
        for f in dataclasses.fields(config)
        if f.name not in runtime_fields
        and getattr(saved, f.name) != getattr(config, f.name)
    ]


def preset_names():
    return sorted(
        name[: -len(".json")]
        for name in os.listdir(CONFIG_DIR)
        if name.endswith(".json")
    )


def read_config_file(name_or_path):
    """The overrides in a preset name (`tiny`) or a JSON file path."""
    path = name_or_path
    if not os.path.isfile(path):
        path = os.path.join(CONFIG_DIR, f"{name_or_path}.json")
        if not os.path.isfile(path):
            raise UserError(
                f"no config file or preset named '{name_or_path}': pass a "
                f"JSON file or one of {', '.join(preset_names())}."
            )
    try:
        values = files.read_json(path, "config file")
    except UnicodeDecodeError:
        raise UserError(f"config file '{path}' is not UTF-8 JSON.") from None
    except ValueError as e:
        raise UserError(f"{e}: fix or replace it.") from None
    if not isinstance(values, dict):
        raise UserError(f"config file '{path}' must hold a JSON object.")
    values.setdefault(
        "preset", os.path.splitext(os.path.basename(path))[0]
    )
    return values


def make_config(config_file=None, config_class=TrainConfig, **overrides):
    """Builds a config from a preset or file plus overrides.

    Unknown keys, wrong types and values that cannot work raise
    `ConfigError` with the fix.
    """
    fields = {f.name: f for f in dataclasses.fields(config_class)}
    values = read_config_file(config_file) if config_file else {}
    values.update({k: v for k, v in overrides.items() if v is not None})
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ConfigError(
            f"unknown config key '{unknown[0]}': valid keys are "
            f"{', '.join(fields)}."
        )
    return config_class(
        **{k: coerce(fields[k], v) for k, v in values.items()}
    )


def coerce(field, value):
    """`value` as `field`'s type, or `ConfigError` naming the field."""
    key, kind = field.name, field.type
    if kind is tuple:
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key} must be a list; got {value!r}.")
        return tuple(value)
    if kind is bool and isinstance(value, bool):
        return value
    if kind is float and isinstance(value, (int, float)) and not isinstance(
        value, bool
    ):
        return float(value)
    if kind is str and isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, kind) and not (
        kind is int and isinstance(value, bool)
    ):
        return value
    raise ConfigError(f"{key} must be of type {kind.__name__}; got {value!r}.")


def save_config(config, path):
    files.write_json(path, config.to_dict())


def read_run_config_values(run_dir):
    """The fields saved in a run's `config.json`, as a dict.

    Raises:
        UserError: the file cannot be read or does not hold an object.
    """
    path = os.path.join(run_dir, "config.json")
    try:
        values = files.read_json(path, "run config")
    except (OSError, ValueError) as e:
        raise UserError(
            f"{e}: the run directory '{run_dir}' is damaged; restore "
            "config.json or start the run over with --restart."
        ) from None
    if not isinstance(values, dict):
        raise UserError(f"'{path}' does not hold a config object.")
    return values


def load_run_config(run_dir, config_class=TrainConfig):
    """The config saved in a run directory.

    Raises:
        UserError: `config.json` is missing, damaged or no longer valid.
    """
    path = os.path.join(run_dir, "config.json")
    if not os.path.isfile(path):
        raise UserError(
            f"no config.json in '{run_dir}': point at a run directory "
            "written by keras-tfm."
        )
    values = read_run_config_values(run_dir)
    try:
        return make_config(config_class=config_class, **values)
    except ConfigError as e:
        raise UserError(
            f"'{path}' holds a config this version cannot use ({e})"
        ) from None
