import pytest

from tfq_asr.errors import UserError
from tfq_asr.manifest import read_manifest, write_manifest


def test_round_trip(tmp_path):
    rows = [{"path": "a.flac", "duration": "1.5", "voice": "v", "engine": "espeak", "text": "hello there"}]
    write_manifest(tmp_path / "m.tsv", rows)
    (u,) = read_manifest(tmp_path / "m.tsv")
    assert u.path == (tmp_path / "a.flac").resolve() and u.duration == 1.5 and u.text == "hello there"


@pytest.mark.parametrize("content, message", [
    ("", "empty"),
    ("file\tsentence\n", "lacks column"),
    ("path\tduration\ttext\na.flac\tfast\thi\n", "not a number"),
    ("path\ttext\na.flac\n", "expected 2"),
    ("path\ttext\n", "no utterances"),
])
def test_bad_manifests(tmp_path, content, message):
    p = tmp_path / "bad.tsv"
    p.write_text(content)
    with pytest.raises(UserError, match=message):
        read_manifest(p)


def test_missing_manifest(tmp_path):
    with pytest.raises(UserError, match="not found"):
        read_manifest(tmp_path / "nope.tsv")


def test_limit_takes_the_first_utterances_and_refuses_below_one(tmp_path):
    rows = [{"path": f"{i}.flac", "duration": "1", "voice": "v", "engine": "e", "text": f"t{i}"} for i in range(5)]
    write_manifest(tmp_path / "m.tsv", rows)
    assert [u.text for u in read_manifest(tmp_path / "m.tsv", 2)] == ["t0", "t1"]
    assert len(read_manifest(tmp_path / "m.tsv", 9)) == len(read_manifest(tmp_path / "m.tsv")) == 5
    for bad in (0, -1, 2.5, True):  # a negative slice used to drop utterances from the end
        with pytest.raises(UserError, match="limit"):
            read_manifest(tmp_path / "m.tsv", bad)
