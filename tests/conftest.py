import os
import sys
from pathlib import Path

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.append(str(ROOT / "tools"))  # tools import their _setup helper by plain name

import subprocess  # noqa: E402

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def native_op_library():
    """build/native/libtfq_litert.so up to date (unless $TFQ_LITERT_LIB points elsewhere)."""
    if not os.environ.get("TFQ_LITERT_LIB"):
        for cmd in (["cmake", "-S", ROOT / "converters", "-B", ROOT / "build" / "native",
                     "-DCMAKE_BUILD_TYPE=Release"],
                    ["cmake", "--build", ROOT / "build" / "native", "-j2", "--target", "tfq_litert"]):
            res = subprocess.run([str(c) for c in cmd], capture_output=True, text=True)
            assert res.returncode == 0, res.stdout + res.stderr

TINY_TEXT = """The quick brown fox jumps over the lazy dog.
%
She sells 3 sea shells by the sea shore.
%
A stitch in time saves nine.  Look before you leap!
%
Every cloud has a silver lining.
%
All that glitters is not gold.
%
Actions speak louder than words, my friend.
%
Better late than never, they said in 1999.
%
Practice makes perfect; time heals all wounds.
%
The early bird catches the worm.
%
Where there's a will, there's a way.
"""


@pytest.fixture(scope="session")
def tiny_corpus(tmp_path_factory):
    """A corpus of a few utterances synthesized by the real corpus tool (all three engines)."""
    from tools.make_corpus import build_corpus
    root = tmp_path_factory.mktemp("corpus")
    text = root / "text.txt"
    text.write_text(TINY_TEXT)
    out = root / "corpus"
    counts = build_corpus(out, {"train": 12, "dev": 3, "test": 3}, seed=1, text_files=[text], workers=2,
                          dev_frac=0.2, test_frac=0.2, progress=False)
    return out, counts
