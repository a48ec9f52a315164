"""Translation and summarization: text in, text out, with a `Seq2SeqLM`.

`keras-tfm finetune --task translation` trains on two line-aligned files
(`SOURCE_FILE TARGET_FILE`), `--task summarization` on a JSON Lines file
(`keras_tfm.data.parallel`), through the shared `finetune()` run; this
module holds the two task objects it calls (`TRANSLATION`,
`SUMMARIZATION`: one class, parameterized by the metric), and the
`evaluate` and `predict` commands' seq2seq side.

- Model: a `Seq2SeqLM` of the config's architecture, with one vocabulary
  for sources and targets and the output projection tied to the shared
  embedding. `--num-decoder-layers` (0: as many as the encoder) and
  `--target-sequence-length` size the decoder.
- From scratch: a byte tokenizer, or WordPiece learned on the training
  sources and targets together (one shared vocabulary; never on the
  validation examples).
- From `--init RUN`: the pre-training run's tokenizer, and its LM copied
  into the encoder (`Seq2SeqLM.load_encoder_weights`); with
  `--decoder-from-init` and a causal run, into the decoder's self-attention
  and feed-forward too. A tokenizer that turns more than 1% of the task's
  tokens into `[UNK]` (trained on another language) is refused.
- Loss: cross-entropy over the target tokens (padding weighs 0), with
  `--label-smoothing`.
- Evaluation: each periodic one scores the validation targets' tokens
  (loss, the training objective, and token accuracy) on `eval_batches`
  batches, cheaply; the final one scores all of them, then decodes the
  whole validation set with beam search (`--beam-size`, GNMT
  `--length-penalty`, at most `--target-sequence-length` tokens) and
  scores the text: sacreBLEU for translation, ROUGE-1/2/L (best over the
  references by ROUGE-1, SciTLDR's protocol) for summarization
  (`keras_tfm.metrics.generation`).
"""

import dataclasses
import os
import weakref

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from keras_tfm import tokenizers
from keras_tfm.data.parallel import pad_rows
from keras_tfm.data.parallel import read_parallel
from keras_tfm.data.parallel import seq2seq_dataset
from keras_tfm.data.parallel import split_validation
from keras_tfm.data.parallel import token_lists
from keras_tfm.data.parallel import tokenize_pairs
from keras_tfm.errors import UserError
from keras_tfm.metrics import generation as generation_metrics

# An --init tokenizer that turns more of the task's tokens into [UNK]
# cannot represent its text.
UNKNOWN_RATE_LIMIT = 0.01
# Validation outputs shown in metrics.json.
SAMPLES = 5


@dataclasses.dataclass
class Seq2SeqData:
    """The training and validation examples of a run, as text and ids."""

    train: object  # ParallelData
    validation: object
    train_pairs: object  # TokenizedPairs
    validation_pairs: object

    @property
    def source(self):
        return self.validation.name

    @property
    def train_examples(self):
        return len(self.train)

    @property
    def validation_examples(self):
        return len(self.validation)


def read_run_data(config):
    """`(train, validation)` `ParallelData` of a `FinetuneConfig`:
    `--validation-data`, or a seeded `validation_fraction` of `--data`."""
    fields = dict(source_field=config.source_field,
                  target_field=config.target_field)
    train = read_parallel(config.task, config.data, **fields, flag="--data")
    if config.validation_data:
        validation = read_parallel(config.task, config.validation_data,
                                   **fields, flag="--validation-data")
        return train, validation
    return split_validation(train, config.validation_fraction, config.seed)


# === Loss and token scores ===


def token_losses(labels, logits, label_smoothing=0.0):
    """`(loss, cross_entropy)` per token, `(batch, length)` float32.

    With label smoothing `e` the target distribution is `1 - e` on the
    label plus `e` spread evenly over the vocabulary (Szegedy et al., 2016;
    Keras' `CategoricalCrossentropy(label_smoothing=e)`), computed without
    a one-hot matrix: `(1 - e) * nll + e * (logsumexp - mean(logits))`.
    """
    logits = ops.cast(logits, "float32")
    log_z = ops.logsumexp(logits, axis=-1)
    labels = ops.expand_dims(ops.cast(labels, "int32"), -1)
    nll = log_z - ops.take_along_axis(logits, labels, axis=-1)[..., 0]
    if not label_smoothing:
        return nll, nll
    uniform = log_z - ops.mean(logits, axis=-1)
    return (1.0 - label_smoothing) * nll + label_smoothing * uniform, nll


class SmoothedCrossEntropy(keras.losses.Loss):
    """Token cross-entropy from logits, with label smoothing, averaged over
    the tokens whose sample weight is not 0."""

    def __init__(self, label_smoothing=0.0, name="smoothed_cross_entropy",
                 reduction="mean_with_sample_weight"):
        super().__init__(name=name, reduction=reduction)
        self.label_smoothing = label_smoothing

    def call(self, y_true, y_pred):
        return token_losses(y_true, y_pred, self.label_smoothing)[0]

    def get_config(self):
        return {**super().get_config(),
                "label_smoothing": self.label_smoothing}


_SCORERS = weakref.WeakKeyDictionary()


def _scorer(model, label_smoothing):
    """A `tf.function`: one batch -> the sums of its tokens' loss, cross-
    entropy and correct predictions, and its token count."""
    cache = _SCORERS.setdefault(model, {})
    if label_smoothing not in cache:
        ids = tf.TensorSpec([None, None], tf.int32)
        # The function is kept per model: a proxy, not the model itself,
        # so the model (and this entry) can still be freed.
        model = weakref.proxy(model)

        @tf.function(input_signature=[
            {"encoder_token_ids": ids, "decoder_token_ids": ids},
            ids,
            tf.TensorSpec([None, None], tf.float32),
        ])
        def score(inputs, labels, weights):
            logits = model(inputs, training=False)
            loss, nll = token_losses(labels, logits, label_smoothing)
            correct = tf.cast(
                tf.equal(tf.argmax(logits, -1, output_type=tf.int32),
                         labels), tf.float32)
            return tf.stack([tf.reduce_sum(loss * weights),
                             tf.reduce_sum(nll * weights),
                             tf.reduce_sum(correct * weights),
                             tf.reduce_sum(weights)])

        cache[label_smoothing] = score
    return cache[label_smoothing]


def token_scores(model, pairs, batch_size, label_smoothing=0.0,
                 max_batches=None):
    """Teacher-forced figures over the target tokens of `pairs` (the end
    token included, padding not): `loss` (the training objective, label
    smoothing included), `cross_entropy` (without) and `accuracy` (of the
    argmax), in order over the first `max_batches` batches (all if None).
    """
    score = _scorer(model, float(label_smoothing))
    totals = np.zeros(4)
    dataset = seq2seq_dataset(pairs, batch_size, training=False)
    for i, (inputs, labels, weights) in enumerate(dataset):
        if max_batches is not None and i >= max_batches:
            break
        totals += score(inputs, labels, weights).numpy()
    loss, nll, correct, count = totals
    count = max(count, 1.0)
    return {"loss": loss / count, "cross_entropy": nll / count,
            "accuracy": correct / count, "tokens": int(totals[3])}


# === Decoding ===


_DECODERS = weakref.WeakKeyDictionary()


def decoder_function(model, beam_size, length_penalty, max_length):
    """The cached `tf.function` of `generation.seq2seq.make_decoder`:
    greedy search for `beam_size == 1`, else beam search."""
    from keras_tfm.generation import seq2seq as decoding

    cache = _DECODERS.setdefault(model, {})
    key = (beam_size, float(length_penalty), max_length)
    # Kept per model: the decoder gets a proxy, so the model can be freed.
    model = weakref.proxy(model)
    if key not in cache:
        if beam_size == 1:
            cache[key] = decoding.make_decoder(model, "greedy",
                                               max_length=max_length)
        else:
            cache[key] = decoding.make_decoder(
                model, "beam", max_length=max_length, beam_size=beam_size,
                length_penalty=length_penalty,
            )
    return cache[key]


def output_texts(tokenizer, token_ids):
    """Generated ids `(batch, length)` -> `(batch,)` strings, in
    TensorFlow ops: detokenized (special tokens dropped), surrounding
    whitespace stripped. The SavedModel runs the same ops."""
    return tf.strings.strip(tokenizer.detokenize(token_ids))


def source_ids(tokenizer, texts, sequence_length):
    """Encoder inputs of raw texts as training prepared them: `[EOS]` and
    the tokens, cut to `sequence_length`, int32 `(len(texts), width)`."""
    rows = [np.concatenate([[tokenizer.eos_id], ids])
            for ids in token_lists(tokenizer, list(texts))]
    width = min(sequence_length, max(len(row) for row in rows))
    return pad_rows(rows, width, tokenizer.pad_id)


def generate_texts(model, tokenizer, encoder_ids, beam_size, length_penalty,
                   max_length, batch_size):
    """Decodes every row of `encoder_ids` in batches of `batch_size`; each
    batch is cut to its longest source. Returns a list of str."""
    decode = decoder_function(model, beam_size, length_penalty, max_length)
    outputs = []
    for start in range(0, len(encoder_ids), batch_size):
        batch = encoder_ids[start : start + batch_size]
        width = max(1, int((batch != tokenizer.pad_id).sum(1).max()))
        ids = decode(tf.constant(batch[:, :width]))["token_ids"]
        outputs.extend(
            text.decode("utf-8", errors="replace")
            for text in output_texts(tokenizer, ids).numpy()
        )
    return outputs


# === Runs ===


def check_run(run_dir, task_name):
    """A one-line error unless `run_dir` is a `task_name` run."""
    from keras_tfm.training.run import check_run_directory
    from keras_tfm.training.run import run_kind

    check_run_directory(run_dir)
    kind = run_kind(run_dir)
    if kind != task_name:
        what = ("a pre-training run" if kind == "pretrain"
                else f"a {kind} run")
        raise UserError(
            f"'{run_dir}' is {what}, not a {task_name} run: pass the "
            f"--output-dir of `keras-tfm finetune --task {task_name}`."
        )


def load_run(run_dir, task_name):
    """`(config, tokenizer, model)` of a finished seq2seq run, or a
    one-line `UserError`."""
    from keras_tfm.models import Seq2SeqLM
    from keras_tfm.tasks.finetune import load_finetune_config
    from keras_tfm.training import run as run_module

    check_run(run_dir, task_name)
    config = load_finetune_config(run_dir)
    model = run_module.load_model(run_dir, command="finetune")
    if not isinstance(model, Seq2SeqLM):
        raise UserError(
            f"'{run_dir}/model.keras' holds a {type(model).__name__}, not a "
            "Seq2SeqLM: the run directory is inconsistent."
        )
    tokenizer = tokenizers.load_tokenizer(os.path.join(run_dir, "tokenizer"))
    return config, tokenizer, model


def check_beam_size(beam_size):
    if isinstance(beam_size, bool) or not isinstance(beam_size, int) or (
        beam_size < 1
    ):
        raise UserError(
            f"--beam-size must be a positive integer (1: greedy); got "
            f"{beam_size!r}."
        )


class Seq2SeqTask:
    """A seq2seq task of `finetune()` (see `tasks/finetune.py`).

    Args:
        name: `"translation"` or `"summarization"`.
        metric: `"bleu"` or `"rouge"`: how the decoded validation set is
            scored.
    """

    run_files = ()
    history_columns = (
        "step",
        "train_loss",
        "val_loss",
        "val_accuracy",
        "learning_rate",
        "examples_seen",
        "elapsed_seconds",
    )

    def __init__(self, name, metric):
        self.name = name
        self.metric = metric
        self.unit = "pairs" if metric == "bleu" else "documents"
        # (key, (train, validation)) of the last read: check_inputs,
        # build_tokenizer and load_data read the same files once.
        self._read = None

    def _data(self, config):
        key = [config.task, config.data, config.validation_data,
               config.source_field, config.target_field,
               config.validation_fraction, config.seed]
        for path in config.data + config.validation_data:
            if os.path.isfile(path):
                info = os.stat(path)
                key.append((info.st_size, info.st_mtime_ns))
        key = repr(key)
        if self._read is None or self._read[0] != key:
            self._read = (key, read_run_data(config))
        return self._read[1]

    # === finetune() ===

    def check_inputs(self, config):
        """The data files, and the `--init` settings that cannot work."""
        from keras_tfm.tasks.finetune import init_config

        self._data(config)
        if config.decoder_from_init and not config.init:
            raise UserError(
                "--decoder-from-init starts the decoder from a pre-training "
                "run: pass --init RUN too, or drop it."
            )
        if config.init and config.decoder_from_init:
            pretrained = init_config(config.init)
            if pretrained.objective != "causal":
                raise UserError(
                    f"--decoder-from-init needs a causal LM, and --init "
                    f"'{config.init}' is a {pretrained.objective} one: drop "
                    "--decoder-from-init (the encoder still starts from it)."
                )
            if config.num_decoder_layers not in (0, pretrained.num_layers):
                layers = pretrained.num_layers
                raise UserError(
                    f"--decoder-from-init copies the LM's {layers} blocks, "
                    "but --num-decoder-layers is "
                    f"{config.num_decoder_layers}: drop one of the two."
                )

    def build_tokenizer(self, config):
        """From scratch: bytes, or one WordPiece vocabulary learned on the
        training sources and targets together."""
        if config.tokenizer == "byte":
            return tokenizers.ByteTokenizer()
        train, _ = self._data(config)
        return tokenizers.WordPieceTokenizer.train(
            train.sources + train.targets, config.vocabulary_size)

    def load_data(self, config, tokenizer, run_dir):
        """The examples as text and ids. An `--init` tokenizer that cannot
        code the task's text is refused here, before the run starts."""
        del run_dir  # nothing of the data is saved in the run
        train, validation = self._data(config)
        lengths = (config.sequence_length, config.target_sequence_length)
        train_pairs = tokenize_pairs(tokenizer, train, *lengths)
        if config.init:
            for what, rate in (
                ("targets", train_pairs.target_unknown_rate),
                ("sources", train_pairs.source_unknown_rate),
            ):
                if rate > UNKNOWN_RATE_LIMIT:
                    raise UserError(
                        f"the tokenizer of --init '{config.init}' turns "
                        f"{rate:.1%} of the training {what}' tokens into "
                        f"[UNK] (the limit is {UNKNOWN_RATE_LIMIT:.0%}): it "
                        "was not trained on this text; pre-train on text "
                        "like it (or with --tokenizer byte), or fine-tune "
                        "from scratch without --init."
                    )
        return Seq2SeqData(
            train=train,
            validation=validation,
            train_pairs=train_pairs,
            validation_pairs=tokenize_pairs(tokenizer, validation, *lengths),
        )

    def build_model(self, config, tokenizer, data, init_model):
        """A `Seq2SeqLM` of the config's architecture (an `--init` run's,
        copied into the config), sized by the tokenizer, with the init
        LM's weights in its encoder (and decoder)."""
        from keras_tfm.models import Seq2SeqLM

        model = Seq2SeqLM(
            vocabulary_size=tokenizer.vocabulary_size,
            num_layers=config.num_layers,
            num_heads=config.num_heads,
            hidden_dim=config.hidden_dim,
            intermediate_dim=config.intermediate_dim,
            max_sequence_length=config.sequence_length,
            num_decoder_layers=config.num_decoder_layers or None,
            max_decoder_sequence_length=config.target_sequence_length,
            dropout=config.dropout,
            position_embedding=config.position_embedding,
            layer_norm_epsilon=config.layer_norm_epsilon,
            normalize_first=config.normalize_first,
            tie_embeddings=config.tie_embeddings,
            use_bias=config.use_bias,
            activation=config.activation,
            pad_token_id=tokenizer.pad_id,
        )
        if init_model is not None:
            try:
                model.load_encoder_weights(
                    init_model, decoder_from_lm=config.decoder_from_init
                )
            except ValueError as e:
                raise UserError(
                    f"cannot start from --init '{config.init}': {e}"
                ) from None
        return model

    def trainable_model(self, model, config):
        return model

    def compile_kwargs(self, config):
        return {
            "loss": SmoothedCrossEntropy(config.label_smoothing),
            "weighted_metrics": [
                keras.metrics.SparseCategoricalAccuracy("accuracy")
            ],
        }

    def train_dataset(self, config, tokenizer, data, start_batch):
        return seq2seq_dataset(
            data.train_pairs,
            config.batch_size,
            training=True,
            seed=config.seed,
            start_step=start_batch,
        )

    def evaluate(self, model, trainer, config, tokenizer, data, final):
        """Token loss and accuracy (the first `eval_batches` batches; all
        at the end); at the end also the decoded validation set's score."""
        figures = token_scores(
            model, data.validation_pairs, config.batch_size,
            config.label_smoothing, None if final else config.eval_batches,
        )
        result = {
            "val_loss": figures["loss"],
            "val_accuracy": figures["accuracy"],
            "val_cross_entropy": figures["cross_entropy"],
        }
        if not final:
            return result
        decoding = {
            "beam_size": config.beam_size,
            "length_penalty": config.length_penalty,
            "max_length": config.target_sequence_length,
        }
        outputs = generate_texts(
            model, tokenizer, data.validation_pairs.encoder_ids,
            batch_size=config.batch_size, **decoding,
        )
        scores = self.score(outputs, data.validation.references)
        return {
            **result,
            **validation_figures(scores),
            "decoding": decoding,
            "outputs": outputs,
        }

    def score(self, outputs, references):
        """The task's metric of decoded `outputs` against `references`
        (lists of references per example)."""
        if self.metric == "bleu":
            result = generation_metrics.bleu(
                outputs, [refs[0] for refs in references])
            return {
                "bleu": result["bleu"],
                "bleu_signature": result["signature"],
                "bleu_precisions": result["precisions"],
                "bleu_brevity_penalty": result["brevity_penalty"],
            }
        result = generation_metrics.rouge(outputs, references)
        return {name: result[name]
                for name in generation_metrics.ROUGE_TYPES}

    def final_metrics(self, figures, data):
        samples = [
            {"source": source, "reference": references[0], "output": output}
            for source, references, output in zip(
                data.validation.sources[:SAMPLES],
                data.validation.references[:SAMPLES],
                figures["outputs"][:SAMPLES],
            )
        ]
        pairs = data.train_pairs
        return {
            **{k: v for k, v in figures.items()
               if k.startswith("val_") or k == "bleu_signature"},
            # val_loss is the training objective (with label smoothing);
            # val_cross_entropy is without it.
            "val_perplexity": float(np.exp(min(figures["val_cross_entropy"],
                                               700.0))),
            "decoding": figures["decoding"],
            "validation_source": data.source,
            "train_source_truncated": pairs.source_truncated,
            "train_target_truncated": pairs.target_truncated,
            "train_source_unknown_rate": pairs.source_unknown_rate,
            "train_target_unknown_rate": pairs.target_unknown_rate,
            "val_samples": samples,
        }

    def save_files(self, run_dir, data):
        pass

    def format_metrics(self, metrics):
        return "\n".join([
            f"validation: {self.metric_line(metrics, 'val_')} over "
            f"{metrics['validation_examples']:,} {self.unit} "
            f"({_decoding_text(metrics['decoding'])}); loss "
            f"{metrics['val_loss']:.4f}, token accuracy "
            f"{metrics['val_accuracy']:.4f}",
            *self._signature_lines(metrics),
            f"trained {metrics['steps']} steps ({metrics['epochs']:.2f} "
            f"epochs of {metrics['train_examples']:,} {self.unit}) in "
            f"{metrics['train_seconds']:.0f} s",
        ])

    def metric_line(self, figures, prefix=""):
        """The task's score as text, from `figures[prefix + "bleu"]` or
        the three ROUGE figures."""
        if self.metric == "bleu":
            return f"BLEU {figures[prefix + 'bleu']:.2f}"
        return (f"ROUGE-1 {figures[prefix + 'rouge1']:.2f}, ROUGE-2 "
                f"{figures[prefix + 'rouge2']:.2f}, ROUGE-L "
                f"{figures[prefix + 'rougeL']:.2f}")

    def _signature_lines(self, figures):
        if self.metric == "bleu":
            return [f"sacreBLEU signature: {figures['bleu_signature']}"]
        return ["ROUGE: F1 with stemming (rouge_score), best reference by "
                "ROUGE-1"]

    # === keras-tfm evaluate / predict ===

    def evaluate_run(self, run_dir, data_paths=None, batch_size=32,
                     beam_size=None):
        """The task's score of a finished run on its own validation data
        or on `data_paths` (translation: SOURCE_FILE TARGET_FILE;
        summarization: a JSONL file), decoding with `beam_size` beams (the
        run's setting by default), plus teacher-forced token loss and
        accuracy.

        Raises:
            UserError: not a finished run of this task, or bad data.
        """
        from keras_tfm.tasks.finetune import load_finetune_config

        if batch_size < 1:
            raise UserError("--batch-size must be a positive integer.")
        if beam_size is not None:
            check_beam_size(beam_size)
        check_run(run_dir, self.name)
        config = load_finetune_config(run_dir)
        # The data first: a bad file is reported before the model loads.
        if data_paths:
            examples = read_parallel(
                self.name, data_paths, config.source_field,
                config.target_field, flag="--data",
            )
        else:
            examples = read_run_data(config)[1]
        config, tokenizer, model = load_run(run_dir, self.name)
        pairs = tokenize_pairs(tokenizer, examples, config.sequence_length,
                               config.target_sequence_length)
        decoding = {
            "beam_size": beam_size or config.beam_size,
            "length_penalty": config.length_penalty,
            "max_length": config.target_sequence_length,
        }
        outputs = generate_texts(model, tokenizer, pairs.encoder_ids,
                                 batch_size=batch_size, **decoding)
        tokens = token_scores(model, pairs, batch_size,
                              config.label_smoothing)
        return {
            "data": examples.name,
            "examples": len(examples),
            **self.score(outputs, examples.references),
            "decoding": decoding,
            "loss": tokens["loss"],
            "cross_entropy": tokens["cross_entropy"],
            "accuracy": tokens["accuracy"],
            "source_truncated": pairs.source_truncated,
        }

    def format_evaluation(self, results):
        return "\n".join([
            f"{self.metric_line(results)} over {results['examples']:,} "
            f"{self.unit} ({results['data']}; "
            f"{_decoding_text(results['decoding'])}); token accuracy "
            f"{results['accuracy']:.4f}, cross-entropy "
            f"{results['cross_entropy']:.4f}",
            *self._signature_lines(results),
        ])

    def predict_run(self, run_dir, texts, batch_size=32, beam_size=None):
        """The output (translation or summary) of each text, with the run's
        Keras model (`keras_tfm.export.tasks` predicts with its exported
        TFLite files).

        Returns:
            A list of `{"text", "output"}`.
        """
        if batch_size < 1:
            raise UserError("--batch-size must be a positive integer.")
        if beam_size is not None:
            check_beam_size(beam_size)
        config, tokenizer, model = load_run(run_dir, self.name)
        outputs = generate_texts(
            model, tokenizer,
            source_ids(tokenizer, texts, config.sequence_length),
            beam_size=beam_size or config.beam_size,
            length_penalty=config.length_penalty,
            max_length=config.target_sequence_length,
            batch_size=batch_size,
        )
        return [{"text": text, "output": output}
                for text, output in zip(texts, outputs)]

    def format_prediction(self, answer):
        return answer["output"]


def validation_figures(scores):
    """`Seq2SeqTask.score`'s figures under `val_` names (the BLEU
    signature, which names how BLEU was computed, keeps its own)."""
    return {name if name == "bleu_signature" else f"val_{name}": value
            for name, value in scores.items()}


def _decoding_text(decoding):
    if decoding["beam_size"] == 1:
        return f"greedy, at most {decoding['max_length']} tokens"
    return (f"beam {decoding['beam_size']}, length penalty "
            f"{decoding['length_penalty']:g}, at most "
            f"{decoding['max_length']} tokens")


TRANSLATION = Seq2SeqTask("translation", "bleu")
SUMMARIZATION = Seq2SeqTask("summarization", "rouge")
