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
