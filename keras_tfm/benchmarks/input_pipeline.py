"""The input pipeline alone: tokens per second it delivers, from text in
memory and from a prepared directory, against what the train step takes.

A pipeline that delivers batches much faster than the step consumes them
keeps the step from waiting; the benchmark reports the ratio.
"""

import time

from keras_tfm import data
from keras_tfm.data.prepared import open_prepared


def tokens_per_second(dataset, tokens_per_batch, batches=200, warmup=5):
    """Batches drawn from `dataset` as fast as it gives them."""
    iterator = iter(dataset)
    for _ in range(warmup):
        next(iterator)
    start = time.perf_counter()
    for _ in range(batches):
        next(iterator)
    return batches * tokens_per_batch / (time.perf_counter() - start)


def input_rates(config, texts=None, prepared=None, batches=200):
    """Tokens/s of the training stream, `{"memory": ..., "prepared": ...}`
    for what is given (text strings, a prepared directory)."""
    tokens_per_batch = config.batch_size * config.sequence_length
    rates = {}
    if texts:
        from keras_tfm import tokenizers

        tokenizer = tokenizers.ByteTokenizer()
        lm_data = data.prepare_lm_data(tokenizer, texts,
                                       config.sequence_length)
        rates["memory"] = tokens_per_second(
            data.make_dataset(lm_data.train, config.batch_size,
                              config.objective, tokenizer),
            tokens_per_batch, batches,
        )
    if prepared:
        corpus = open_prepared(prepared, verify=False)
        rates["prepared"] = tokens_per_second(
            corpus.train_dataset(config.sequence_length, config.batch_size,
                                 objective=config.objective),
            tokens_per_batch, batches,
        )
    return rates
