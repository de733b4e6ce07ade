import numpy as np
import pytest

from tfq_asr.decode import BeamDecoder, GreedyDecoder, beam_search_decode, greedy_decode, log_softmax
from tfq_asr.text import NUM_CLASSES, encode


def peaky(path: str, blank_between=()) -> np.ndarray:
    """Logits putting almost all mass on one class per frame; '_' is the blank."""
    ids = [0 if ch == "_" else encode(ch)[0] for ch in path]
    x = np.full((len(ids), NUM_CLASSES), -10.0)
    x[np.arange(len(ids)), ids] = 10.0
    return x


@pytest.mark.parametrize("path, text", [
    ("hh_ee_l_ll_oo", "hello"),
    ("hhel_lo", "hello"),
    ("hello", "helo"),          # no blank between the l's: they merge
    ("____", ""),
    ("a_ _b", "a b"),
    ("", ""),
])
def test_greedy_collapses_repeats_and_drops_blanks(path, text):
    logits = peaky(path) if path else np.zeros((0, NUM_CLASSES))
    assert greedy_decode(logits) == text


@pytest.mark.parametrize("path", ["hh_ee_l_ll_oo", "it's_ a  test", "__x__"])
def test_beam_equals_greedy_on_peaky_logits(path):
    assert beam_search_decode(peaky(path), beam_width=4) == greedy_decode(peaky(path))


def test_beam_finds_the_most_probable_labelling_where_greedy_does_not():
    # Two frames over {blank, a}: P(blank)=0.6, P(a)=0.4 each. Greedy: "" (0.36).
    # Labelling "a" = aa + a_ + _a = 0.16 + 0.24 + 0.24 = 0.64 > 0.36.
    p = np.full((2, NUM_CLASSES), 1e-9)
    a = encode("a")[0]
    p[:, 0], p[:, a] = 0.6, 0.4
    logp = np.log(p / p.sum(1, keepdims=True))
    assert greedy_decode(logp) == ""
    assert beam_search_decode(logp, beam_width=4) == "a"


def test_logits_and_log_probs_give_the_same_text():
    x = np.random.default_rng(0).normal(size=(60, NUM_CLASSES)) * 3
    assert beam_search_decode(x) == beam_search_decode(log_softmax(x))
    assert greedy_decode(x) == greedy_decode(log_softmax(x))


@pytest.mark.parametrize("seed", range(5))
def test_incremental_equals_offline_for_random_chunkings(seed):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(200, NUM_CLASSES)) * 4
    cuts = np.sort(rng.choice(np.arange(1, 200), size=rng.integers(1, 20), replace=False))
    chunks = np.split(x, cuts)
    g, b = GreedyDecoder(), BeamDecoder(beam_width=6)
    for c in chunks + [x[:0]]:
        g.accept(c)
        b.accept(c)
    assert g.finish() == greedy_decode(x)
    assert b.finish() == beam_search_decode(x, beam_width=6)


def test_bad_input():
    with pytest.raises(ValueError, match="shape"):
        greedy_decode(np.zeros(5))
    with pytest.raises(ValueError, match="NaN"):
        beam_search_decode(np.full((3, NUM_CLASSES), np.nan))
    with pytest.raises(ValueError, match="beam_width"):
        BeamDecoder(0)


def test_greedy_partials_stay_prefixes_with_stray_spaces():
    from tfq_asr.text import BLANK
    space = encode(" ")[0]
    path = [space, BLANK] + encode("ab") + [BLANK, space, BLANK, space] + encode("c") + [space]
    logits = np.full((len(path), NUM_CLASSES), -5.0, np.float32)
    logits[np.arange(len(path)), path] = 5.0
    d, partials = GreedyDecoder(), []
    for row in logits:
        d.accept(row[None])
        partials.append(d.text)
    assert d.finish() == "ab c" and all(d.finish().startswith(p) for p in partials)
