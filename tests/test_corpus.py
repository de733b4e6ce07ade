import soundfile as sf

from tfq_asr.manifest import MANIFEST_COLUMNS, read_manifest
from tfq_asr.text import encode
from tools import make_corpus


def test_tiny_corpus_is_complete(tiny_corpus):
    out, counts = tiny_corpus
    assert counts == {"train": 12, "dev": 3, "test": 3}
    for split in counts:
        header = (out / f"{split}.tsv").read_text().splitlines()[0].split("\t")
        assert tuple(header) == MANIFEST_COLUMNS
        for u in read_manifest(out / f"{split}.tsv"):
            audio, sr = sf.read(u.path)
            assert sr == 16000 and audio.ndim == 1
            assert abs(len(audio) / sr - u.duration) < 1e-3
            assert 0.0 < abs(audio).max() <= 1.0
            encode(u.text)  # in the vocabulary


def test_test_split_holds_out_voices_and_sentences(tiny_corpus):
    out, _ = tiny_corpus
    train = read_manifest(out / "train.tsv")
    test = read_manifest(out / "test.tsv")
    assert not {u.text for u in train} & {u.text for u in test}
    held = {v.key for v in make_corpus.all_voices() if v.held_out()}
    assert all(f"{u.engine}:{u.voice}" in held for u in test)
    assert not any(f"{u.engine}:{u.voice}" in held for u in train)


def test_corpus_is_deterministic(tiny_corpus, tmp_path):
    out, _ = tiny_corpus
    text = out.parent / "text.txt"
    again = tmp_path / "again"
    make_corpus.build_corpus(again, {"train": 12, "dev": 3, "test": 3}, seed=1, text_files=[text], workers=1,
                             dev_frac=0.2, test_frac=0.2, progress=False)
    assert (again / "train.tsv").read_text() == (out / "train.tsv").read_text()
    first = read_manifest(out / "train.tsv")[0]
    a, _ = sf.read(first.path)
    b, _ = sf.read(again / "audio" / "train" / first.path.name)
    assert (a == b).all()


def test_only_renders_those_splits_as_in_the_whole_corpus(tiny_corpus, tmp_path):
    """--only test gives the whole corpus's test split (one random stream plans every split
    in turn, so a corpus of --train 0 has another one), and nothing else."""
    out, _ = tiny_corpus
    text = out.parent / "text.txt"
    part = tmp_path / "part"
    written = make_corpus.build_corpus(part, {"train": 12, "dev": 3, "test": 3}, seed=1, text_files=[text],
                                       workers=1, dev_frac=0.2, test_frac=0.2, progress=False, only=["test"])
    assert written == {"test": 3}
    assert (part / "test.tsv").read_text() == (out / "test.tsv").read_text()
    assert not (part / "train.tsv").exists() and not (part / "audio" / "train").exists()
    alone = tmp_path / "alone"
    make_corpus.build_corpus(alone, {"train": 0, "dev": 3, "test": 3}, seed=1, text_files=[text], workers=1,
                             dev_frac=0.2, test_frac=0.2, progress=False)
    assert (alone / "test.tsv").read_text() != (out / "test.tsv").read_text()


def test_sentences_are_normalised(tmp_path):
    f = tmp_path / "t.txt"
    f.write_text("I owe you 25 dollars.  Really?\n%\nOK\n%\n  -- Somebody Famous\n")
    sents = make_corpus.read_sentences([f], min_words=1)
    assert "i owe you twenty five dollars" in sents
    assert "really" in sents
    assert not any("famous" in s for s in sents)


def test_bad_counts_are_refused_before_anything_is_written(tmp_path):
    from tests.tool_runner import assert_one_line_error, run_tool
    out = tmp_path / "corpus"
    for extra, message in ((["--train", "-5"], "--train -5"), (["--workers", "0"], "--workers 0"),
                           (["--train", "0", "--dev", "0", "--test", "0"], "nothing to synthesize"),
                           (["--test", "0", "--only", "test"], "--only test with --test 0")):
        assert_one_line_error(run_tool("make_corpus.py", "--out", out, *extra, isolated=True), message)
    assert not out.exists()
