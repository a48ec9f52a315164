import keras
import keras_hub


def default_metrics():
    """Perplexity (exp of mean token cross-entropy) and token accuracy."""
    return [
        keras_hub.metrics.Perplexity(from_logits=True, name="perplexity"),
        keras.metrics.SparseCategoricalAccuracy(name="accuracy"),
    ]
