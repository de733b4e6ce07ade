"""Character vocabulary and text normalisation shared by the corpus tool, training and decoding.

Vocabulary: index 0 is the CTC blank, then space, apostrophe and a-z (29 classes).
"""
from __future__ import annotations

import re
import unicodedata

from num2words import num2words

BLANK = 0
CHARS = " '" + "abcdefghijklmnopqrstuvwxyz"
VOCAB = ("<blank>",) + tuple(CHARS)
NUM_CLASSES = len(VOCAB)
_CHAR_TO_ID = {c: i + 1 for i, c in enumerate(CHARS)}

_ORDINAL = re.compile(r"\b(\d+)(st|nd|rd|th)\b")
_DECIMAL = re.compile(r"\b(\d+)\.(\d+)\b")
_NUMBER = re.compile(r"\d+")
_THOUSANDS = re.compile(r"(?<=\d),(?=\d{3}\b)")
_SYMBOLS = {"&": " and ", "%": " percent ", "$": " dollars ", "+": " plus ", "=": " equals ", "@": " at "}


def _spell(match: re.Match) -> str:
    return " " + num2words(int(match.group(0))) + " "


def normalize(text: str) -> str:
    """Lower-case, spell out numbers, map everything else to the vocabulary.

    >>> normalize("He paid $3.50 for 2 apples, on the 21st!")
    "he paid dollars three point five zero for two apples on the twenty first"
    """
    text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    text = text.replace("`", "'").replace("\u2019", "'")
    text = _THOUSANDS.sub("", text)  # "5,000" is one number
    for sym, word in _SYMBOLS.items():
        text = text.replace(sym, word)
    text = _ORDINAL.sub(lambda m: " " + num2words(int(m.group(1)), to="ordinal") + " ", text)
    text = _DECIMAL.sub(lambda m: " " + num2words(int(m.group(1))) + " point "
                        + " ".join(num2words(int(d)) for d in m.group(2)) + " ", text)
    text = _NUMBER.sub(_spell, text)
    text = text.lower().replace("-", " ")
    text = re.sub(r"[^a-z' ]+", " ", text)
    # Apostrophes only inside words ("don't"), not as quotes.
    text = re.sub(r"(?<![a-z])'|'(?![a-z])", " ", text)
    return re.sub(r"\s+", " ", text).strip()


def encode(text: str) -> list[int]:
    """Map normalised text to class ids; raises ValueError naming the first bad character."""
    try:
        return [_CHAR_TO_ID[c] for c in text]
    except KeyError as err:
        raise ValueError(f"character {err.args[0]!r} is not in the vocabulary (a-z, apostrophe, space);"
                         " normalise the text first") from None


def decode_ids(ids) -> str:
    """Class ids (no blanks expected, blanks skipped) back to text: words joined by one space,
    none at either end (CTC may emit a space first, or two in a row; the C core's decoder,
    converters/stream/stream.c append_text, gives the same text)."""
    return " ".join("".join(CHARS[i - 1] for i in ids if i != BLANK).split())
