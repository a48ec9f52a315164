"""The pre-training config: one frozen dataclass, named JSON presets."""

import dataclasses
import json
import os

from keras_tfm.errors import ConfigError
from keras_tfm.errors import UserError

CONFIG_DIR = os.path.join(os.path.dirname(os.path.dirname(__file__)), "configs")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Everything a pre-training run depends on.

    The defaults are the `small` preset: the main job, which trains in about
    three minutes on two CPU cores (0.8 M parameters, 6 M tokens, about 14
    passes over the 0.47 MB default corpus). Presets in `keras_tfm/configs/*.json`
    and `--config FILE` override any field; command-line flags override
    those. The resolved config is saved as `config.json` in the run
    directory.
    """

    # --- Data ---
    # Text files or globs (UTF-8). Empty: Python's own pydoc_data topics.
    data: tuple = ()
    # Share of the corpus (in blocks of consecutive windows) held out.
    validation_fraction: float = 0.1
    # "byte" (260 ids, no training, nothing unknown) or "wordpiece".
    tokenizer: str = "byte"
    # Target WordPiece vocabulary size, special tokens included.
    vocabulary_size: int = 2000

    # --- Model ---
    # "causal" (GPT-style next token) or "masked" (BERT-style MLM).
    objective: str = "causal"
    # Tokens per training sequence; also the model's max_sequence_length.
    sequence_length: int = 128
    # Transformer blocks in the stack.
    num_layers: int = 4
    # Attention heads per block; must divide hidden_dim (head size 32).
    num_heads: int = 4
    # Width of the residual stream and the token embeddings.
    hidden_dim: int = 128
    # Feed-forward width; 4 x hidden_dim as in GPT-2.
    intermediate_dim: int = 512
    # Dropout on embeddings, attention and both residual branches. Off by
    # default: on the small run 0.1 gave 1.82 bits/byte against 1.68 and
    # cost 40% of the speed (measured, 1500 steps).
    dropout: float = 0.0
    # "learned" (GPT-2), "sinusoidal" (Vaswani et al.) or "rotary" (RoPE).
    position_embedding: str = "learned"
    # Added to the variance in every layer norm.
    layer_norm_epsilon: float = 1e-5
    # Pre-LN blocks: stable at a high learning rate with a short warmup.
    normalize_first: bool = True
    # Output projection = transposed token embedding (fewer parameters).
    tie_embeddings: bool = True
    # Biases in dense layers and layer norms.
    use_bias: bool = True
    # tanh-approximate GELU is cheaper than the exact one under XLA.
    activation: str = "gelu_approximate"

    # --- Optimization ---
    # Global batch (sequences per step), split across replicas.
    batch_size: int = 32
    # Optimizer steps; the learning-rate schedule spans exactly these.
    max_steps: int = 1500
    # Peak learning rate, reached after warmup, then cosine decay.
    learning_rate: float = 2e-3
    # Steps of linear warmup from 0 to learning_rate.
    warmup_steps: int = 100
    # The cosine decay ends at learning_rate * this.
    min_learning_rate_ratio: float = 0.1
    # AdamW's decoupled weight decay; biases and norms are exempt.
    weight_decay: float = 0.1
    # Adam's first-moment decay.
    beta_1: float = 0.9
    # 0.99 rather than 0.999: small batches, short runs (as nanoGPT).
    beta_2: float = 0.99
    # Clip the global gradient norm to this (0 turns clipping off).
    clipnorm: float = 1.0

    # --- Loop ---
    # Steps between validations (and checkpoints): a Keras "epoch".
    eval_every: int = 250
    # Validation batches per periodic evaluation (the final one uses all).
    eval_batches: int = 20
    # Seeds weights, dropout, the split, shuffling, masking and the sample.
    seed: int = 0
    # "auto": XLA on a single device, off under multi-device strategies
    # (where Keras cannot compile); "true" / "false" force it.
    # "autocluster": graph mode with XLA fusing the element-wise and
    # reduction ops, matmuls left to TensorFlow's oneDNN kernels; with
    # precision "mixed_bfloat16" on a CPU with AMX (Intel Xeon 4th gen and
    # later) this trains large models ~1.5x faster than "true".
    jit_compile: str = "auto"
    # "auto": MirroredStrategy over all GPUs (or logical CPUs) if there
    # are several, else one device; "default", "mirrored", "multi_worker"
    # (MultiWorkerMirroredStrategy from TF_CONFIG) or "tpu".
    strategy: str = "auto"
    # Split the host CPU into this many logical devices, so MirroredStrategy
    # can run without GPUs (0: leave the CPU whole).
    cpu_devices: int = 0
    # "float32", "mixed_float16" (GPUs) or "mixed_bfloat16" (TPUs, recent
    # CPUs): compute in 16 bits, keep weights in float32.
    precision: str = "float32"
    # Micro-batches of batch_size summed into one optimizer step: an
    # effective batch of batch_size x grad_accum_steps with the activation
    # memory of batch_size.
    grad_accum_steps: int = 1
    # Parts each micro-batch is split into inside one compiled step, their
    # gradients summed (the same update). XLA runs the parts' forward and
    # backward passes side by side, which keeps both cores of a small CPU
    # busy while one runs a single-threaded element-wise op: 1.05-1.09x on
    # two cores (nano, small, compute). 0: auto, 2 for a single-device CPU
    # run under XLA or autocluster whose micro-batch divides by 2, else 1.
    batch_splits: int = 0
    # Steps between checkpoints; 0: at every evaluation (eval_every).
    checkpoint_every: int = 0
    # TensorFlow's deterministic ops: bit-identical reruns and resumes.
    deterministic: bool = False
    # Where the run directory goes; empty: runs/<preset>-<objective>.
    output_dir: str = ""
    # Keras' progress bar: 1 bar, 2 one line per eval, 0 silent.
    verbose: int = 1
    # Tokens generated as a sample at the end (0: none).
    sample_tokens: int = 200
    # The sample's prompt; empty: the start of a validation sequence.
    sample_prompt: str = ""
    # The preset this config came from (informational).
    preset: str = "small"

    def __post_init__(self):
        validate(self)

    def to_dict(self):
        config = dataclasses.asdict(self)
        config["data"] = list(self.data)
        return config


def _check(condition, message):
    if not condition:
        raise ConfigError(message)


def validate(config):
    """Raises `ConfigError` naming the first value that cannot work."""
    choices = {
        "tokenizer": ("byte", "wordpiece"),
        "objective": ("causal", "masked"),
        "position_embedding": ("learned", "sinusoidal", "rotary"),
        "jit_compile": ("auto", "true", "false", "autocluster"),
        "strategy": ("auto", "default", "mirrored", "multi_worker", "tpu"),
        "precision": ("float32", "mixed_float16", "mixed_bfloat16"),
    }
    for key, allowed in choices.items():
        value = getattr(config, key)
        _check(
            value in allowed,
            f"{key} must be one of {', '.join(allowed)}; got {value!r}.",
        )
    for key in (
        "sequence_length",
        "num_layers",
        "num_heads",
        "hidden_dim",
        "intermediate_dim",
        "batch_size",
        "max_steps",
        "eval_every",
        "eval_batches",
        "vocabulary_size",
        "grad_accum_steps",
    ):
        value = getattr(config, key)
        _check(
            isinstance(value, int) and value > 0,
            f"{key} must be a positive integer; got {value!r}.",
        )
    _check(
        config.hidden_dim % config.num_heads == 0,
        f"hidden_dim ({config.hidden_dim}) must be divisible by num_heads "
        f"({config.num_heads}): change --hidden-dim or --num-heads.",
    )
    _check(
        config.position_embedding != "rotary"
        or (config.hidden_dim // config.num_heads) % 2 == 0,
        "rotary position embeddings need an even head size "
        "(hidden_dim / num_heads).",
    )
    _check(
        0.0 < config.validation_fraction < 1.0,
        "validation_fraction must be between 0 and 1; got "
        f"{config.validation_fraction}.",
    )
    _check(0.0 <= config.dropout < 1.0, "dropout must be in [0, 1).")
    for key in ("cpu_devices", "checkpoint_every", "sample_tokens",
                "batch_splits"):
        _check(
            isinstance(getattr(config, key), int) and getattr(config, key) >= 0,
            f"{key} must be a non-negative integer.",
        )
    _check(config.learning_rate > 0, "learning_rate must be positive.")
    _check(
        0 <= config.warmup_steps < config.max_steps,
        f"warmup_steps ({config.warmup_steps}) must be below max_steps "
        f"({config.max_steps}).",
    )
    _check(
        config.tokenizer != "wordpiece" or config.vocabulary_size > 10,
        "a WordPiece vocabulary_size must be above 10.",
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


def differences(saved, config):
    """Fields, other than `RUNTIME_FIELDS`, where two configs differ."""
    return [
        name
        for name in FIELDS
        if name not in RUNTIME_FIELDS
        and getattr(saved, name) != getattr(config, name)
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
        with open(path, encoding="utf-8") as f:
            values = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"config file '{path}' is not valid JSON: {e}") from None
    if not isinstance(values, dict):
        raise UserError(f"config file '{path}' must hold a JSON object.")
    values.setdefault(
        "preset", os.path.splitext(os.path.basename(path))[0]
    )
    return values


def make_config(config_file=None, **overrides):
    """Builds a `TrainConfig` from a preset or file plus overrides.

    Unknown keys, wrong types and values that cannot work raise
    `ConfigError` with the fix.
    """
    values = read_config_file(config_file) if config_file else {}
    values.update({k: v for k, v in overrides.items() if v is not None})
    unknown = sorted(set(values) - set(FIELDS))
    if unknown:
        raise ConfigError(
            f"unknown config key '{unknown[0]}': valid keys are "
            f"{', '.join(FIELDS)}."
        )
    return TrainConfig(**{k: _coerce(k, v) for k, v in values.items()})


def _coerce(key, value):
    kind = FIELDS[key].type
    if kind is tuple:
        if isinstance(value, str):
            value = [value]
        return tuple(value)
    if kind is bool and isinstance(value, bool):
        return value
    if kind is float and isinstance(value, (int, float)):
        return float(value)
    if kind is str and isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, kind) and not (kind is int and isinstance(value, bool)):
        return value
    raise ConfigError(f"{key} must be of type {kind.__name__}; got {value!r}.")


def save_config(config, path):
    temporary = path + ".tmp"
    with open(temporary, "w", encoding="utf-8") as f:
        json.dump(config.to_dict(), f, indent=2)
    os.replace(temporary, path)


def load_run_config(run_dir):
    """The `TrainConfig` saved in a run directory."""
    path = os.path.join(run_dir, "config.json")
    if not os.path.isfile(path):
        raise UserError(
            f"no config.json in '{run_dir}': point at a run directory "
            "written by `keras-tfm pretrain`."
        )
    with open(path, encoding="utf-8") as f:
        values = json.load(f)
    return make_config(**values)
