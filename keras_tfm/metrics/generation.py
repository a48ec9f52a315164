"""How generated text is scored: sacreBLEU and ROUGE.

- Translation: corpus BLEU from sacreBLEU (`sacrebleu.metrics.BLEU` with
  its defaults: 13a tokenization, cased, exponential smoothing) on
  detokenized text, the form WMT reports and the only one comparable
  across tokenizers. The signature string names those settings and the
  sacreBLEU version; print it with every score.
- Summarization: ROUGE-1, ROUGE-2 and ROUGE-L F1 from Google's
  `rouge_score` with the Porter stemmer, as SciTLDR's figures are computed
  here. With several references per document, SciTLDR's protocol
  ("multi-target max") keeps, per document, the scores against the one
  reference that maximizes ROUGE-1, then averages over documents. This
  reproduces the Lead-1 figures of `shared/data/scitldr/SOURCE.md` on its
  test set (31.3 / 11.4 / 24.1); taking each metric's own maximum instead
  gives 31.3 / 12.3 / 25.0.

All scores are on a 0-100 scale.
"""

import numpy as np

ROUGE_TYPES = ("rouge1", "rouge2", "rougeL")


def bleu(hypotheses, references):
    """Corpus sacreBLEU of detokenized, cased hypotheses.

    Args:
        hypotheses: list of str.
        references: list of str (one reference each), or list of lists of
            str (the same number of references for each hypothesis).

    Returns:
        A dict: `bleu` (0-100), `precisions` (the 1- to 4-gram precisions,
        0-100), `brevity_penalty`, `hypothesis_length` and
        `reference_length` (13a tokens), and `signature`, sacreBLEU's
        description of the settings.
    """
    from sacrebleu.metrics import BLEU

    if len(hypotheses) != len(references):
        raise ValueError(
            f"{len(hypotheses)} hypotheses but {len(references)} references"
        )
    streams = _reference_streams(references)
    metric = BLEU()
    result = metric.corpus_score(list(hypotheses), streams)
    return {
        "bleu": float(result.score),
        "precisions": [float(p) for p in result.precisions],
        "brevity_penalty": float(result.bp),
        "hypothesis_length": int(result.sys_len),
        "reference_length": int(result.ref_len),
        "signature": str(metric.get_signature()),
    }


def _reference_streams(references):
    # sacreBLEU wants one list per reference position.
    if all(isinstance(r, str) for r in references):
        return [list(references)]
    counts = {len(r) for r in references}
    if len(counts) != 1:
        raise ValueError(
            "bleu needs the same number of references for every hypothesis; "
            f"got counts {sorted(counts)}"
        )
    return [list(stream) for stream in zip(*references)]


def rouge(hypotheses, references, best_by="rouge1"):
    """Mean ROUGE-1/2/L F1 (stemmed), best over each document's references.

    Args:
        hypotheses: list of str.
        references: list of str, or list of lists of str (any number, at
            least one, per hypothesis).
        best_by: `"rouge1"` (SciTLDR's protocol): all three scores come
            from the reference with the highest ROUGE-1 F1 (the first on a
            tie). `None`: each metric takes its own best reference.

    Returns:
        A dict: `rouge1`, `rouge2`, `rougeL` (0-100, means over documents)
        and `documents`.
    """
    from rouge_score import rouge_scorer

    if len(hypotheses) != len(references):
        raise ValueError(
            f"{len(hypotheses)} hypotheses but {len(references)} references"
        )
    if best_by not in (None, *ROUGE_TYPES):
        raise ValueError(f"best_by must be one of {ROUGE_TYPES} or None")
    scorer = rouge_scorer.RougeScorer(list(ROUGE_TYPES), use_stemmer=True)
    totals = np.zeros(len(ROUGE_TYPES))
    for hypothesis, refs in zip(hypotheses, references):
        refs = [refs] if isinstance(refs, str) else list(refs)
        if not refs:
            raise ValueError("every hypothesis needs at least one reference")
        # (references, types) F1; score(target, prediction).
        scores = np.array([
            [result.fmeasure for result in
             (s[name] for name in ROUGE_TYPES)]
            for s in (scorer.score(ref, hypothesis) for ref in refs)
        ])
        if best_by is None:
            totals += scores.max(axis=0)
        else:
            totals += scores[int(np.argmax(
                scores[:, ROUGE_TYPES.index(best_by)]))]
    means = 100.0 * totals / max(1, len(hypotheses))
    return {
        **{name: float(value) for name, value in zip(ROUGE_TYPES, means)},
        "documents": len(hypotheses),
    }
