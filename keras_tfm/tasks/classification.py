"""Text classification: labelled text in, one label per text out.

`keras-tfm finetune --task classification` trains a `TextClassifier` on a
TSV/CSV/JSONL file of labelled text (`keras_tfm.data.labelled`) through
the shared `finetune()` run; this module is the task object it calls, and
the `evaluate` and `predict` commands' classification side.

- From `--init RUN`: the pre-training run's tokenizer, and a classifier of
  its language model's exact architecture (read from the model itself:
  config.json's `vocabulary_size` is the WordPiece target, not the size),
  causal if the run was, with the backbone weights copied in.
- From scratch: a byte or WordPiece tokenizer (trained on the training
  texts only) and the config's architecture as a bidirectional encoder,
  the kind a masked init gives: a classifier reads the whole text at once,
  so nothing is gained by hiding later tokens, and `pooling="auto"` is
  then the mean over the tokens (`default_pooling`).
- Validation: `--validation-data`, read with the training labels (an
  unseen label is an error), or a seeded, stratified `validation_fraction`
  of the training file.
- Every evaluation, periodic and final, scores the whole validation set:
  loss, accuracy and macro F1 (`classification_metrics`); metrics.json
  adds the confusion matrix and the label names, which the run also keeps
  in `labels.json` (class id `i` is `labels[i]`).
"""

import dataclasses
import os

import numpy as np

from keras_tfm import files
from keras_tfm import tokenizers
from keras_tfm.data.labelled import LabelledData
from keras_tfm.data.labelled import classification_dataset
from keras_tfm.data.labelled import read_labelled
from keras_tfm.errors import UserError
from keras_tfm.metrics.classification import classification_metrics

NAME = "classification"
LABELS_FILE = "labels.json"


@dataclasses.dataclass
class ClassificationData:
    """The training and validation examples of a run.

    Attributes:
        train: `LabelledData` to train on.
        validation: `LabelledData` to score, with the training label ids.
        source: where the validation examples come from, for messages.
    """

    train: LabelledData
    validation: LabelledData
    source: str

    @property
    def label_names(self):
        return self.train.label_names

    @property
    def num_classes(self):
        return self.train.num_classes

    @property
    def train_examples(self):
        return len(self.train)

    @property
    def validation_examples(self):
        return len(self.validation)


def subset(data, indices):
    return LabelledData(
        texts=[data.texts[i] for i in indices],
        labels=data.labels[indices],
        label_names=data.label_names,
    )


def split_validation(data, fraction, seed):
    """`(train, validation)`: a seeded, stratified `fraction` held out.

    Each class gives `round(fraction * its count)` examples, but always
    keeps one for training; both parts stay in file order.

    Raises:
        UserError: too few examples to hold any out.
    """
    rng = np.random.default_rng(seed)
    held = []
    for label in range(data.num_classes):
        members = np.flatnonzero(data.labels == label)
        rng.shuffle(members)
        count = min(int(round(len(members) * fraction)), len(members) - 1)
        held.extend(members[: max(count, 0)].tolist())
    if not held:
        raise UserError(
            f"{len(data)} examples are too few to hold out a validation "
            f"fraction of {fraction:g}: pass --validation-data, a larger "
            "--validation-fraction or more data."
        )
    held = np.sort(np.array(held))
    kept = np.setdiff1d(np.arange(len(data)), held)
    return subset(data, kept), subset(data, held)


def read_run_data(config, label_names=None):
    """The `ClassificationData` a `FinetuneConfig` names.

    Raises:
        UserError: a missing, empty or unreadable file, a missing column,
            one class only, a validation label the training data lacks.
    """
    if len(config.data) != 1:
        raise UserError(
            "classification trains on one labelled file (TSV, CSV or "
            f"JSONL); --data names {len(config.data)}."
        )
    if len(config.validation_data) > 1:
        raise UserError(
            "classification validates on one labelled file; "
            f"--validation-data names {len(config.validation_data)}."
        )
    columns = dict(text_column=config.text_column,
                   label_column=config.label_column)
    train = read_labelled(config.data[0], **columns,
                          require_two_classes=True)
    if label_names is not None and list(label_names) != train.label_names:
        raise UserError(
            f"the labels of '{config.data[0]}' ({', '.join(train.label_names)}"
            f") are not the run's ({', '.join(label_names)}, in "
            f"{LABELS_FILE}): the file changed; resume with the original "
            "data, or pass --restart."
        )
    if config.validation_data:
        validation = read_labelled(config.validation_data[0], **columns,
                                   label_names=train.label_names)
        return ClassificationData(train, validation,
                                  config.validation_data[0])
    train, validation = split_validation(train, config.validation_fraction,
                                         config.seed)
    return ClassificationData(
        train, validation,
        f"{config.validation_fraction:g} of {config.data[0]}",
    )


def scores(logits, labels, num_classes):
    """Loss (mean cross-entropy, nats), accuracy, macro F1 and the rest of
    `classification_metrics` for logits `(n, num_classes)`."""
    logits = np.asarray(logits, np.float64)
    log_probs = logits - logits.max(-1, keepdims=True)
    log_probs -= np.log(np.exp(log_probs).sum(-1, keepdims=True))
    labels = np.asarray(labels)
    loss = -log_probs[np.arange(len(labels)), labels].mean()
    return {"loss": float(loss),
            **classification_metrics(labels, logits, num_classes)}


def softmax(logits):
    logits = np.asarray(logits, np.float64)
    exp = np.exp(logits - logits.max(-1, keepdims=True))
    return exp / exp.sum(-1, keepdims=True)


def predict_logits(model, tokenizer, texts, sequence_length, batch_size):
    """Logits `(len(texts), num_classes)`, texts prepared as in training."""
    dataset = classification_dataset(
        texts, None, tokenizer, sequence_length, batch_size, training=False
    )
    return np.asarray(model.predict(dataset, verbose=0), np.float32)


def check_run(run_dir):
    """A one-line error unless `run_dir` is a classification run."""
    from keras_tfm.training.run import check_run_directory
    from keras_tfm.training.run import run_kind

    check_run_directory(run_dir)
    kind = run_kind(run_dir)
    if kind != NAME:
        what = ("a pre-training run" if kind == "pretrain"
                else f"a {kind} run")
        raise UserError(
            f"'{run_dir}' is {what}, not a classification run: pass the "
            "--output-dir of `keras-tfm finetune --task classification`."
        )


def load_labels(run_dir):
    path = os.path.join(run_dir, LABELS_FILE)
    try:
        labels = files.read_json(path, "label file")
    except FileNotFoundError:
        raise UserError(
            f"no {LABELS_FILE} in '{run_dir}': the run is damaged; retrain "
            "it with --restart."
        ) from None
    except ValueError as e:
        raise UserError(f"{e}: retrain the run with --restart.") from None
    if not (isinstance(labels, list) and len(labels) >= 2
            and all(isinstance(name, str) for name in labels)):
        raise UserError(f"'{path}' does not hold a list of label names.")
    return labels


def load_run(run_dir):
    """`(config, tokenizer, label_names, model)` of a finished
    classification run, or a one-line `UserError`."""
    from keras_tfm.models import TextClassifier
    from keras_tfm.tasks.finetune import load_finetune_config
    from keras_tfm.training import run as run_module

    check_run(run_dir)
    config = load_finetune_config(run_dir)
    labels = load_labels(run_dir)
    model = run_module.load_model(run_dir, command="finetune")
    if not isinstance(model, TextClassifier):
        raise UserError(
            f"'{run_dir}/model.keras' holds a {type(model).__name__}, not a "
            "TextClassifier: the run directory is inconsistent."
        )
    if model.num_classes != len(labels):
        raise UserError(
            f"'{run_dir}/model.keras' has {model.num_classes} classes but "
            f"{LABELS_FILE} names {len(labels)}: the run directory is "
            "inconsistent."
        )
    tokenizer = tokenizers.load_tokenizer(os.path.join(run_dir, "tokenizer"))
    return config, tokenizer, labels, model


def run_validation_data(config, label_names):
    """The run's validation examples, as its config recorded them:
    `(LabelledData, description)`."""
    path = (config.validation_data or config.data)[0]
    if not os.path.isfile(path):
        raise UserError(
            f"the run's validation data '{path}' is not there (paths are as "
            "the run was started): pass --data FILE."
        )
    if config.validation_data:
        examples = read_labelled(path, config.text_column,
                                 config.label_column, label_names=label_names)
        return examples, path
    data = read_run_data(config, label_names)
    return data.validation, data.source


def format_confusion(matrix, labels):
    """The confusion matrix as aligned text: rows true, columns predicted."""
    width = max(5, *(len(name) for name in labels),
                *(len(str(n)) for row in matrix for n in row))
    lines = ["confusion matrix (rows: true label, columns: predicted):",
             " " * width + "".join(f"  {name:>{width}}" for name in labels)]
    for name, row in zip(labels, matrix):
        lines.append(f"{name:>{width}}"
                     + "".join(f"  {n:>{width}}" for n in row))
    return "\n".join(lines)


class ClassificationTask:
    """The classification task of `finetune()` (see `tasks/finetune.py`)."""

    name = NAME
    run_files = (LABELS_FILE,)
    history_columns = (
        "step",
        "train_loss",
        "val_loss",
        "val_accuracy",
        "val_macro_f1",
        "learning_rate",
        "examples_seen",
        "elapsed_seconds",
    )

    def __init__(self):
        # (key, ClassificationData) of the last read: check_inputs,
        # build_tokenizer and load_data read the same files once.
        self._read = None

    def _data(self, config, label_names=None):
        key = [config.data, config.validation_data, config.text_column,
               config.label_column, config.validation_fraction, config.seed]
        for path in config.data + config.validation_data:
            if os.path.isfile(path):
                info = os.stat(path)
                key.append((info.st_size, info.st_mtime_ns))
        key = repr(key)
        if self._read is None or self._read[0] != key:
            self._read = (key, read_run_data(config))
        data = self._read[1]
        if label_names is not None and list(label_names) != data.label_names:
            read_run_data(config, label_names)  # raises, naming both
        return data

    # === finetune() ===

    def check_inputs(self, config):
        self._data(config)

    def build_tokenizer(self, config):
        """From scratch: bytes, or WordPiece learned on the training
        texts (never the validation ones)."""
        if config.tokenizer == "byte":
            return tokenizers.ByteTokenizer()
        return tokenizers.WordPieceTokenizer.train(
            self._data(config).train.texts, config.vocabulary_size
        )

    def load_data(self, config, tokenizer, run_dir):
        """The examples; a resumed run (`run_dir`) checks that the data's
        labels are still the ones in its labels.json."""
        labels = load_labels(run_dir) if run_dir else None
        return self._data(config, labels)

    def build_model(self, config, tokenizer, data, init_model):
        """A `TextClassifier`: the init language model's architecture and
        backbone weights, or the config's architecture from scratch."""
        from keras_tfm.models import CausalLM
        from keras_tfm.models import TextClassifier
        from keras_tfm.models.text_classifier import BACKBONE_ARCHITECTURE
        from keras_tfm.models.text_classifier import default_pooling
        from keras_tfm.tasks.finetune import init_config

        if init_model is not None:
            lm_config = init_model.get_config()
            architecture = {name: lm_config[name]
                            for name in BACKBONE_ARCHITECTURE}
            causal = isinstance(init_model, CausalLM)
            pad_token_id = lm_config.get("pad_token_id", tokenizer.pad_id)
        else:
            # From scratch, or resuming a run whose weights come from its
            # checkpoint: the config holds the architecture (an --init
            # run's, copied by `with_init_architecture`).
            architecture = dict(
                vocabulary_size=tokenizer.vocabulary_size,
                num_layers=config.num_layers,
                num_heads=config.num_heads,
                hidden_dim=config.hidden_dim,
                intermediate_dim=config.intermediate_dim,
                max_sequence_length=config.sequence_length,
                position_embedding=config.position_embedding,
                layer_norm_epsilon=config.layer_norm_epsilon,
                normalize_first=config.normalize_first,
                use_bias=config.use_bias,
                activation=config.activation,
            )
            causal = bool(config.init) and (
                init_config(config.init).objective == "causal"
            )
            pad_token_id = tokenizer.pad_id
        pooling = config.pooling
        if pooling == "auto":
            pooling = default_pooling(causal)
        model = TextClassifier(
            **architecture,
            num_classes=data.num_classes,
            dropout=config.dropout,
            causal=causal,
            pooling=pooling,
            pad_token_id=pad_token_id,
            classifier_dropout=config.classifier_dropout,
        )
        if init_model is not None:
            try:
                model.load_backbone_weights(init_model)
            except ValueError as e:
                raise UserError(
                    f"cannot start from --init '{config.init}': {e}"
                ) from None
        return model

    def trainable_model(self, model, config):
        """`model`, with its backbone frozen under `--freeze-backbone`."""
        if config.freeze_backbone:
            for layer in model.backbone_layers():
                layer.trainable = False
        return model

    def compile_kwargs(self, config):
        import keras

        return {
            "loss": keras.losses.SparseCategoricalCrossentropy(
                from_logits=True
            ),
            "metrics": [keras.metrics.SparseCategoricalAccuracy("accuracy")],
        }

    def train_dataset(self, config, tokenizer, data, start_batch):
        return classification_dataset(
            data.train.texts,
            data.train.labels,
            tokenizer,
            config.sequence_length,
            config.batch_size,
            training=True,
            seed=config.seed,
            start_step=start_batch,
        )

    def evaluate(self, model, trainer, config, tokenizer, data, final):
        """Loss, accuracy and macro F1 over the whole validation set (the
        periodic figures are the final ones' kind, on the same examples)."""
        logits = predict_logits(model, tokenizer, data.validation.texts,
                                config.sequence_length, config.batch_size)
        figures = scores(logits, data.validation.labels, data.num_classes)
        return {f"val_{name}": value for name, value in figures.items()}

    def final_metrics(self, figures, data):
        majority = np.bincount(data.train.labels,
                               minlength=data.num_classes).argmax()
        return {
            "val_accuracy": figures["val_accuracy"],
            "val_loss": figures["val_loss"],
            "val_macro_f1": figures["val_macro_f1"],
            "labels": data.label_names,
            "confusion_matrix": figures["val_confusion_matrix"],
            "val_precision": figures["val_precision"],
            "val_recall": figures["val_recall"],
            "val_f1": figures["val_f1"],
            "val_support": figures["val_support"],
            # Always answering the training data's most frequent label.
            "majority_class_accuracy": float(
                np.mean(data.validation.labels == majority)
            ),
            "validation_source": data.source,
        }

    def save_files(self, run_dir, data):
        files.write_json(os.path.join(run_dir, LABELS_FILE),
                         data.label_names)

    def format_metrics(self, metrics):
        return "\n".join([
            f"validation: accuracy {metrics['val_accuracy']:.4f}, macro F1 "
            f"{metrics['val_macro_f1']:.4f}, loss {metrics['val_loss']:.4f} "
            f"over {metrics['validation_examples']:,} examples (majority "
            f"class {metrics['majority_class_accuracy']:.4f})",
            format_confusion(metrics["confusion_matrix"], metrics["labels"]),
            f"trained {metrics['steps']} steps ({metrics['epochs']:.2f} "
            f"epochs of {metrics['train_examples']:,} examples) in "
            f"{metrics['train_seconds']:.0f} s",
        ])

    # === keras-tfm evaluate / predict ===

    def evaluate_run(self, run_dir, data_paths=None, batch_size=32,
                     beam_size=None):
        """Accuracy, macro F1, loss and the confusion matrix of a finished
        run on a labelled file (default: its own validation data).

        Raises:
            UserError: not a finished classification run, a bad file, or
                a label the run was not trained on.
        """
        del beam_size  # a classifier does not decode
        if batch_size < 1:
            raise UserError("--batch-size must be a positive integer.")
        if data_paths and len(data_paths) != 1:
            raise UserError(
                "evaluate a classifier on one labelled file; --data names "
                f"{len(data_paths)}."
            )
        check_run(run_dir)
        from keras_tfm.tasks.finetune import load_finetune_config

        config = load_finetune_config(run_dir)
        labels = load_labels(run_dir)
        if data_paths:
            # The file first: a bad one is reported before the model loads.
            examples = read_labelled(
                data_paths[0], config.text_column, config.label_column,
                label_names=labels,
            )
            source = data_paths[0]
        else:
            examples, source = run_validation_data(config, labels)
        config, tokenizer, labels, model = load_run(run_dir)
        logits = predict_logits(model, tokenizer, examples.texts,
                                config.sequence_length, batch_size)
        return {
            "data": source,
            "examples": len(examples),
            "labels": labels,
            **scores(logits, examples.labels, len(labels)),
        }

    def format_evaluation(self, results):
        return "\n".join([
            f"accuracy {results['accuracy']:.4f}, macro F1 "
            f"{results['macro_f1']:.4f}, loss {results['loss']:.4f} over "
            f"{results['examples']:,} examples ({results['data']})",
            format_confusion(results["confusion_matrix"], results["labels"]),
        ])

    def predict_run(self, run_dir, texts, batch_size=32, beam_size=None):
        """The label, its probability and every label's probability for
        each text, with the run's Keras model (`keras_tfm.export.tasks`
        predicts with its exported TFLite file).

        Returns:
            A list of `{"text", "label", "probability", "probabilities"}`
            (`probabilities`: label name -> probability).
        """
        del beam_size
        if batch_size < 1:
            raise UserError("--batch-size must be a positive integer.")
        config, tokenizer, labels, model = load_run(run_dir)
        probabilities = softmax(predict_logits(
            model, tokenizer, texts, config.sequence_length, batch_size
        ))
        return answers(texts, labels, probabilities)

    def format_prediction(self, answer):
        return f"{answer['label']}\t{answer['probability']:.4f}\t" + (
            answer["text"])


def answers(texts, labels, probabilities):
    """`predict_run`'s answers from probabilities `(texts, classes)`."""
    result = []
    for text, row in zip(texts, probabilities):
        best = int(np.argmax(row))
        result.append({
            "text": text,
            "label": labels[best],
            "probability": float(row[best]),
            "probabilities": {name: float(p)
                              for name, p in zip(labels, row)},
        })
    return result


TASK = ClassificationTask()
