import os
import sys
from pathlib import Path

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.append(str(ROOT / "tools"))  # tools import their _setup helper by plain name

import hashlib  # noqa: E402
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


STREAM_MODEL = "conformer-ctc-xs-w2"
# The code whose change makes a new streaming file (as tools/demo.py keys its cache).
STREAM_CODE = ("tfq_asr/convert/export.py", "tfq_asr/convert/lowering.py",
               "tfq_asr/convert/packing.py", "tfq_asr/models/streaming.py")
DEMO = ROOT / "tfq_asr" / "data" / "demo"
STREAM_CACHE = ROOT / "build" / "stream_core"


def _run_checked(cmd, timeout, env):
    res = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=timeout, env=env)
    if res.returncode != 0:
        pytest.fail(f"{' '.join(map(str, cmd))} exited {res.returncode}\n{res.stdout[-4000:]}\n{res.stderr[-4000:]}")


@pytest.fixture(scope="session")
def w2_stream_model() -> Path:
    """The streaming w2 file, converted once and cached under build/ by content."""
    from tfq_asr.models import PRETRAINED_DIR
    h = hashlib.sha256()
    for p in sorted((PRETRAINED_DIR / STREAM_MODEL).iterdir()) + [ROOT / c for c in STREAM_CODE]:
        if p.is_file() and p.suffix in (".npz", ".json", ".py"):
            h.update(p.read_bytes())
    path = STREAM_CACHE / f"{STREAM_MODEL}-stream-{h.hexdigest()[:16]}.tflite"
    if not path.exists():
        STREAM_CACHE.mkdir(parents=True, exist_ok=True)
        for old in STREAM_CACHE.glob(f"{STREAM_MODEL}-stream-*.tflite"):
            old.unlink()
        env = dict(os.environ, TF_USE_LEGACY_KERAS="1", TF_CPP_MIN_LOG_LEVEL="2")
        _run_checked([sys.executable, ROOT / "tools" / "convert.py", "--model", STREAM_MODEL,
                      "--streaming", "--out", path], timeout=600, env=env)
    return path


@pytest.fixture(scope="session")
def demo_wavs(tmp_path_factory) -> dict:
    """Demo FLACs as 16-bit PCM WAVs (the same samples the Python side reads)."""
    import soundfile as sf
    out = tmp_path_factory.mktemp("wav")
    files = {}
    for flac in sorted(DEMO.glob("*.flac")):
        data, sr = sf.read(str(flac), dtype="int16")
        wav = out / (flac.stem + ".wav")
        sf.write(str(wav), data, sr, subtype="PCM_16")
        files[flac] = wav
    assert files, f"no demo audio in {DEMO}"
    return files


@pytest.fixture(scope="session")
def w2_python_text(w2_stream_model, demo_wavs) -> dict:
    from tfq_asr.audio import load_audio
    from tfq_asr.streaming import Recognizer
    r = Recognizer(w2_stream_model)
    try:
        return {demo_wavs[f]: r.transcribe(load_audio(f)) for f in demo_wavs}
    finally:
        r.close()


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
