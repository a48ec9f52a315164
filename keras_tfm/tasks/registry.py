"""The fine-tuning tasks by name, imported only when asked for."""

import importlib

from keras_tfm.errors import UserError

# task name -> (module, object)
TASK_OBJECTS = {
    "classification": ("keras_tfm.tasks.classification", "TASK"),
    "translation": ("keras_tfm.tasks.seq2seq", "TRANSLATION"),
    "summarization": ("keras_tfm.tasks.seq2seq", "SUMMARIZATION"),
}


def get_task(name):
    if name not in TASK_OBJECTS:
        raise UserError(
            f"unknown task '{name}': use one of {', '.join(TASK_OBJECTS)}."
        )
    module, attribute = TASK_OBJECTS[name]
    return getattr(importlib.import_module(module), attribute)
