"""WER and CER with jiwer, as percentages, with the counts they come from."""
from __future__ import annotations


def error_rates(references: list[str], hypotheses: list[str]) -> dict:
    """{"wer", "cer"} in percent over the whole set (errors / reference words or characters)."""
    import jiwer
    if len(references) != len(hypotheses):
        raise ValueError(f"{len(references)} references but {len(hypotheses)} hypotheses")
    if not references:
        raise ValueError("no utterances to score")
    # jiwer refuses empty reference strings; an empty reference scores every hypothesis word
    # as an insertion, which we count by hand.
    pairs = [(r, h) for r, h in zip(references, hypotheses) if r.strip()]
    refs, hyps = [p[0] for p in pairs], [p[1] for p in pairs]
    words = jiwer.process_words(refs, hyps)
    chars = jiwer.process_characters(refs, hyps)
    extra_w = sum(len(h.split()) for r, h in zip(references, hypotheses) if not r.strip())
    extra_c = sum(len(h) for r, h in zip(references, hypotheses) if not r.strip())
    n_words = sum(len(r.split()) for r in refs)
    n_chars = sum(len(r) for r in refs)
    w_err = words.substitutions + words.deletions + words.insertions + extra_w
    c_err = chars.substitutions + chars.deletions + chars.insertions + extra_c
    return {"wer": 100.0 * w_err / max(n_words, 1), "cer": 100.0 * c_err / max(n_chars, 1),
            "words": n_words, "utterances": len(references)}
