import pytest

from tfq_asr.text import NUM_CLASSES, VOCAB, decode_ids, encode, normalize


def test_vocabulary_layout():
    assert VOCAB[0] == "<blank>" and VOCAB[1] == " " and VOCAB[2] == "'" and VOCAB[3] == "a"
    assert NUM_CLASSES == 29


@pytest.mark.parametrize("raw, norm", [
    ("Hello, World!", "hello world"),
    ("I have 3 cats and 21 dogs.", "i have three cats and twenty one dogs"),
    ("The 2nd time", "the second time"),
    ("About 5,000 people, 1,234,567 ants", "about five thousand people one million two hundred and thirty four "
                                           "thousand five hundred and sixty seven ants"),
    ("It costs 3.5", "it costs three point five"),
    ("Don't 'quote' me", "don't quote me"),
    ("rock & roll -- 100%", "rock and roll one hundred percent"),
    ("Café naïve", "cafe naive"),
    ("   ", ""),
])
def test_normalize(raw, norm):
    assert normalize(raw) == norm


def test_encode_decode_round_trip():
    s = "it's a test"
    assert decode_ids(encode(s)) == s
    assert 0 not in encode(s)


def test_encode_rejects_unnormalised_text():
    with pytest.raises(ValueError, match="'!'"):
        encode("hi!")


def test_decoded_text_has_single_spaces_and_none_at_the_ends():
    space = encode(" ")[0]
    ids = [space, space] + encode("it's") + [space, space, space] + encode("a") + [space]
    assert decode_ids(ids) == "it's a"  # CTC may emit these; the C core writes the same text
    assert decode_ids([space]) == "" and decode_ids([]) == ""
