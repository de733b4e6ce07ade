"""The C streaming core (converters/stream/, libtfq_stream.so) and tfq_transcribe.

(a) the C log-mel frontend against tfq_asr.frontend (bit for bit) over several chunkings, and
    its mel filterbank against librosa;
(b) tfq_transcribe on the bundled demo audio gives the Python Recognizer's transcripts, for
    several --chunk-samples values and both WAV encodings;
(c) error paths: clear one-line messages and non-zero exits;
(d) the core and tfq_transcribe built with AddressSanitizer + UBSan, one transcription and the
    error paths;
(e) aarch64: cross-compiled, run under qemu with the aarch64 libLiteRt.so of the pinned wheel:
    the same transcript as on x86-64 (the NEON kernels inside the real runtime).
Missing compilers or emulators fail with the Debian package to install, never skip.
"""
from __future__ import annotations

import ctypes
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
CONVERTERS = ROOT / "converters"
BUILD = ROOT / "build"
AARCH64_SYSROOT = Path("/usr/aarch64-linux-gnu")
LITERT_VERSION = "2.3.0"


def _require_tool(tool: str, package: str) -> None:
    if not shutil.which(tool):
        pytest.fail(f"{tool} not found: install the Debian package {package} "
                    f"(it is in DEBS of the Makefile; `make deps` installs it)")


def _run(cmd, timeout=300, env=None) -> str:
    res = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=timeout, env=env)
    if res.returncode != 0:
        pytest.fail(f"{' '.join(map(str, cmd))} exited {res.returncode}\n{res.stdout[-4000:]}\n{res.stderr[-4000:]}")
    return res.stdout


def _cmake_build(build_dir: Path, *options: str, target: str) -> None:
    _require_tool("cmake", "cmake")
    _run(["cmake", "-S", CONVERTERS, "-B", build_dir, *options])
    _run(["cmake", "--build", build_dir, "-j2", "--target", target], timeout=900)


def _litert_x86() -> Path:
    from tfq_asr.runtime.litert import litert_library_path
    return litert_library_path()


def _errors(stderr: str) -> str:
    """stderr without LiteRT's own INFO/WARNING log lines."""
    return "\n".join(l for l in stderr.splitlines() if not l.startswith(("INFO: ", "WARNING: ")))


@pytest.fixture(scope="module")
def native() -> Path:
    _require_tool("cc", "gcc")
    build = BUILD / "native"
    _cmake_build(build, "-DCMAKE_BUILD_TYPE=Release", target="tfq_transcribe")
    return build


# The converted streaming w2 file, the demo WAVs and the Python Recognizer's transcripts are
# session fixtures of conftest.py (tests/test_jni.py compares against the same ones).
@pytest.fixture(scope="module")
def model(w2_stream_model) -> Path:
    return w2_stream_model


@pytest.fixture(scope="module")
def wavs(demo_wavs) -> dict:
    return demo_wavs


@pytest.fixture(scope="module")
def python_text(w2_python_text) -> dict:
    return w2_python_text


def _transcribe(exe, model, files, *opts, litert=None, runner=(), env=None, timeout=300):
    cmd = [*runner, exe, "--litert", litert or _litert_x86(), *opts, model, *files]
    res = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=timeout, env=env)
    if res.returncode != 0:
        pytest.fail(f"{' '.join(map(str, cmd))} exited {res.returncode}\n{_errors(res.stderr)[-4000:]}")
    lines = [json.loads(l) for l in res.stdout.splitlines()]
    assert [l["audio"] for l in lines] == [str(f) for f in files]
    return lines


# ---- (a) frontend -----------------------------------------------------------------------------

class _Params(ctypes.Structure):
    _fields_ = [(n, ctypes.c_int) for n in ("sample_rate", "n_mels", "win", "hop", "n_fft")] + \
               [(n, ctypes.c_double) for n in ("fmin", "fmax", "log_floor")]


class CFrontend:
    def __init__(self, lib_path: Path, **params):
        lib = self.lib = ctypes.CDLL(str(lib_path))
        vp = ctypes.c_void_p
        lib.tfq_frontend_create.restype = vp
        lib.tfq_frontend_create.argtypes = [vp, ctypes.c_char_p, ctypes.c_size_t]
        lib.tfq_frontend_destroy.argtypes = [vp]
        lib.tfq_frontend_reset.argtypes = [vp]
        lib.tfq_frontend_accept.restype = ctypes.c_long
        lib.tfq_frontend_accept.argtypes = [vp, vp, ctypes.c_size_t, vp, ctypes.c_size_t]
        lib.tfq_frontend_pending_frames.restype = ctypes.c_size_t
        lib.tfq_frontend_pending_frames.argtypes = [vp, ctypes.c_size_t]
        lib.tfq_frontend_mel_basis.restype = ctypes.POINTER(ctypes.c_float)
        lib.tfq_frontend_mel_basis.argtypes = [vp, ctypes.POINTER(ctypes.c_int), ctypes.POINTER(ctypes.c_int)]
        self.params = _Params()
        lib.tfq_frontend_default_params(ctypes.byref(self.params))
        for k, v in params.items():
            setattr(self.params, k, v)
        err = ctypes.create_string_buffer(200)
        self.fe = lib.tfq_frontend_create(ctypes.byref(self.params), err, len(err))
        assert self.fe, err.value

    def basis(self) -> np.ndarray:
        m, b = ctypes.c_int(), ctypes.c_int()
        ptr = self.lib.tfq_frontend_mel_basis(self.fe, ctypes.byref(m), ctypes.byref(b))
        return np.ctypeslib.as_array(ptr, shape=(m.value * b.value,)).reshape(m.value, b.value).copy()

    def accept(self, x: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(x, np.float32)
        n = self.lib.tfq_frontend_pending_frames(self.fe, x.size)
        out = np.zeros((max(n, 1), self.params.n_mels), np.float32)
        got = self.lib.tfq_frontend_accept(self.fe, x.ctypes.data, x.size, out.ctypes.data, n)
        assert got == n
        return out[:n]

    def close(self):
        self.lib.tfq_frontend_destroy(self.fe)


def test_mel_filterbank_equals_librosa(native):
    import librosa
    fe = CFrontend(native / "libtfq_stream.so")
    ref = librosa.filters.mel(sr=16000, n_fft=400, n_mels=80, fmin=20, fmax=7600)
    ours = fe.basis()
    fe.close()
    assert ours.shape == ref.shape
    np.testing.assert_allclose(ours, ref, rtol=1e-6, atol=0)
    print(f"mel basis: {np.mean(ours == ref):.4f} of the weights bit-identical to librosa")


@pytest.mark.parametrize("chunking", ["whole", "1", "7", "160", "399", "400", "401", "1600", "random"])
def test_frontend_equals_python_log_mel(native, chunking):
    from tfq_asr.frontend import log_mel
    rng = np.random.default_rng(hash(chunking) % 1000)
    x = (rng.standard_normal(16000 * 2 + 123) * 0.1).astype(np.float32)
    x[:3000] *= 1e-4                      # quiet start: the log floor matters
    x[5000:5400] = 0.0                    # an all-zero frame
    x[9000:9100] = np.sign(x[9000:9100])  # full scale
    ref = log_mel(x)
    fe = CFrontend(native / "libtfq_stream.so")
    try:
        if chunking == "whole":
            sizes = [x.size]
        elif chunking == "random":
            sizes = list(rng.integers(0, 900, size=200))
        else:
            sizes = [int(chunking)] * (x.size // int(chunking) + 1)
        parts, at = [], 0
        for s in sizes:
            parts.append(fe.accept(x[at:at + s]))
            at += s
        parts.append(fe.accept(x[at:]))
        ours = np.concatenate(parts)
    finally:
        fe.close()
    assert ours.shape == ref.shape
    # Both compute in double and round once to float32: identical unless a double rounding
    # error straddles a float32 boundary (odds about 1e-8 per value).
    diff = ours != ref
    assert diff.mean() < 1e-4, f"{diff.sum()} of {diff.size} values differ"
    np.testing.assert_array_max_ulp(ours, ref, maxulp=1)


@pytest.mark.parametrize("n_fft", [2, 3, 6, 8, 12, 50, 97, 98, 105, 400, 401, 512, 594, 1000,
                                   16383, 16384])
def test_frontend_any_fft_length(native, n_fft):
    """The half-length transform of even lengths and the plain one of odd lengths against
    numpy's rfft, in float64, with the same window and mel basis as the C side.  The lengths
    have each kind of FFT pass both first (no twiddles) and later: radix 2 (12, 400), 3 (105,
    594 = 2 * 27 * 11), 4 (512), 5 (50, 400) and a generic prime (98 = 2 * 7 * 7,
    105 = 3 * 5 * 7, 16383 = 3 * 43 * 127)."""
    win = min(n_fft, 400)
    hop = max(1, win // 2)
    fe = CFrontend(native / "libtfq_stream.so", n_fft=n_fft, win=win, hop=hop, n_mels=8,
                   fmax=7600.0 if n_fft >= 50 else 8000.0)
    try:
        rng = np.random.default_rng(n_fft)
        x = (rng.standard_normal(win + 5 * hop) * 0.1).astype(np.float32)
        ours = fe.accept(x)
        basis = fe.basis().astype(np.float64)
    finally:
        fe.close()
    n = 1 + (x.size - win) // hop
    window = (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(win) / win)).astype(np.float32)
    frames = np.stack([x[i * hop:i * hop + win] * window for i in range(n)]).astype(np.float64)
    spec = np.abs(np.fft.rfft(frames, n=n_fft, axis=-1)) ** 2
    ref = np.log(spec @ basis.T + 1e-6)
    assert ours.shape == ref.shape
    np.testing.assert_allclose(ours, ref, rtol=1e-6, atol=1e-6)


# ---- (b) transcripts --------------------------------------------------------------------------

def test_transcripts_equal_python_recognizer(native, model, wavs, python_text):
    files = list(wavs.values())
    lines = _transcribe(native / "tfq_transcribe", model, files)
    for line in lines:
        assert line["text"] == python_text[Path(line["audio"])], line["audio"]
        assert line["rtf"] > 0
    rtf = sum(l["rtf"] * l["seconds"] for l in lines) / sum(l["seconds"] for l in lines)
    print(f"tfq_transcribe x86-64 RTF {rtf:.4f} over {sum(l['seconds'] for l in lines):.1f} s")


@pytest.mark.parametrize("chunk", [1, 333, 5120, 1 << 20])
def test_any_chunking_gives_the_same_transcript(native, model, wavs, python_text, chunk):
    files = list(wavs.values())[:2]
    for line in _transcribe(native / "tfq_transcribe", model, files, "--chunk-samples", chunk):
        assert line["text"] == python_text[Path(line["audio"])]


def test_float_wav_and_threads(native, model, wavs, python_text, tmp_path):
    import soundfile as sf
    src = list(wavs.values())[0]
    data, sr = sf.read(str(src), dtype="float32")
    f32 = tmp_path / "float.wav"
    sf.write(str(f32), data, sr, subtype="FLOAT")
    (line,) = _transcribe(native / "tfq_transcribe", model, [f32], "--threads", 2)
    assert line["text"] == python_text[src]


# ---- (c) errors -------------------------------------------------------------------------------

def _fails(exe, *args, code=None, contains=(), litert=None, env=None):
    cmd = [str(exe), "--litert", str(litert or _litert_x86()), *map(str, args)]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env)
    err = _errors(res.stderr)
    assert res.returncode != 0, f"{cmd} succeeded:\n{res.stdout}"
    assert res.returncode in (1, 2), f"{cmd} crashed ({res.returncode}):\n{err}"
    if code is not None:
        assert res.returncode == code, err
    lines = [l for l in err.splitlines() if l.startswith("tfq_transcribe: ")]
    assert lines, err
    for c in contains:
        assert c in err, err
    return err


def _variants(model: Path, tmp: Path) -> dict:
    """Broken copies of the model: (path, words the message must contain)."""
    b = model.read_bytes()
    out = {}

    def put(name, data, *words):
        p = tmp / f"{name}.tflite"
        p.write_bytes(data)
        out[name] = (p, words)

    key = b"\x07\x00\x00\x00tfq_asr\x00"
    assert key in b
    put("no-metadata", b.replace(key, b"\x07\x00\x00\x00tfq_xyz\x00"), "not a streaming model")
    put("not-streaming", b.replace(b'"streaming"', b'"streamxng"'), "not a streaming model")
    put("no-vocabulary", b.replace(b'"vocabulary"', b'"vocabularx"'), "streaming.vocabulary")
    i = b.index(b'"chunk_frames": ') + len(b'"chunk_frames": ')
    put("bad-json", b[:i] + b"x" + b[i + 1:], "not valid JSON")  # same length: offsets stay
    put("bad-state", b.replace(b'"shape": [1, 32, 144]', b'"shape": [1, 32, 145]', 1), "state")
    # Two states on the same tensors: the swapped bindings would exchange one memory twice.
    put("shared-state", b.replace(b'"input": "block1_key", "output": "block1_key_next"',
                                  b'"input": "block0_key", "output": "block0_key_next"', 1),
        "another state")
    for n in (16, 100, 5000, len(b) // 2, len(b) - 100):
        put(f"truncated-{n}", b[:n], "truncated")
    put("text", b"hello, not a model at all\n", "not a valid .tflite")
    # A RESHAPE whose constant shape no longer fits its input: XNNPACK fails to prepare it, so
    # LiteRT opens the file and then refuses the output layouts (this once crashed the core).
    off, size = _first_reshape_shape(b)
    shape = np.frombuffer(b[off:off + size], np.int32).copy()
    shape[-1] += 1
    put("bad-reshape", b[:off] + shape.tobytes() + b[off + size:], "OutputTensorLayouts failed")
    return out


def _first_reshape_shape(b: bytes) -> tuple[int, int]:
    """(file offset, bytes) of the first RESHAPE's constant shape input held outside the flatbuffer."""
    from ai_edge_litert import schema_py_generated as schema
    m = schema.Model.GetRootAs(b, 0)
    sg = m.Subgraphs(0)
    for i in range(sg.OperatorsLength()):
        op = sg.Operators(i)
        code = m.OperatorCodes(op.OpcodeIndex())
        if max(code.BuiltinCode(), code.DeprecatedBuiltinCode()) != schema.BuiltinOperator.RESHAPE:
            continue
        ins = op.InputsAsNumpy()
        buf = m.Buffers(sg.Tensors(ins[1]).Buffer()) if len(ins) > 1 and ins[1] >= 0 else None
        if buf is not None and buf.Offset() > 1 and buf.Size() >= 8:
            return buf.Offset(), buf.Size()
    raise AssertionError("no RESHAPE with a constant shape outside the flatbuffer")


def test_error_messages(native, model, wavs, tmp_path):
    exe = native / "tfq_transcribe"
    wav = list(wavs.values())[0]
    _fails(exe, tmp_path / "missing.tflite", wav, code=1, contains=("missing.tflite", "cannot open"))
    for name, (path, words) in _variants(model, tmp_path).items():
        _fails(exe, path, wav, code=1, contains=(path.name, *words))
    _fails(exe, model, wav, code=1, litert=tmp_path / "libLiteRt.so", contains=("cannot load the LiteRT runtime",))


def _bad_wavs(tmp: Path, good: Path) -> dict:
    import soundfile as sf
    data, sr = sf.read(str(good), dtype="int16")
    out = {}
    (tmp / "text.wav").write_text("not audio")
    out["text.wav"] = "not a WAV"
    sf.write(str(tmp / "stereo.wav"), np.stack([data, data], 1), sr, subtype="PCM_16")
    out["stereo.wav"] = "2 channels"
    sf.write(str(tmp / "8k.wav"), data[::2], 8000, subtype="PCM_16")
    out["8k.wav"] = "8000 Hz"
    sf.write(str(tmp / "pcm24.wav"), data, sr, subtype="PCM_24")
    out["pcm24.wav"] = "24 bits"
    raw = good.read_bytes()
    (tmp / "truncated.wav").write_bytes(raw[:len(raw) // 2])
    out["truncated.wav"] = "truncated WAV"
    (tmp / "header-only.wav").write_bytes(raw[:20])
    out["header-only.wav"] = "WAV"
    nan = np.zeros(8000, np.float32)
    nan[4000] = np.nan
    sf.write(str(tmp / "nan.wav"), nan, sr, subtype="FLOAT")
    out["nan.wav"] = "NaN"
    out["missing.wav"] = "cannot open"
    return out


def test_bad_wav_files(native, model, wavs, python_text, tmp_path):
    exe = native / "tfq_transcribe"
    good = list(wavs.values())[0]
    for name, words in _bad_wavs(tmp_path, good).items():
        _fails(exe, model, tmp_path / name, code=2, contains=(name, words))
    # A bad file among good ones: the good ones are still transcribed, the exit says 2.
    res = subprocess.run([str(exe), "--litert", str(_litert_x86()), str(model), str(good),
                          str(tmp_path / "text.wav")], capture_output=True, text=True, timeout=120)
    assert res.returncode == 2
    assert json.loads(res.stdout.splitlines()[0])["text"] == python_text[good]
    for args in (["--threads", "0"], ["--chunk-samples", "x"], ["--bogus", "1"], []):
        res = subprocess.run([str(exe), *args, str(model)], capture_output=True, text=True, timeout=60)
        assert res.returncode == 2 and "tfq_transcribe" in res.stderr + res.stdout


# ---- (d) sanitizers ---------------------------------------------------------------------------

def test_transcribe_under_asan_ubsan(model, wavs, python_text, tmp_path):
    _require_tool("cc", "gcc")
    build = BUILD / "asan"
    _cmake_build(build, "-DTFQ_SANITIZE=ON", "-DCMAKE_BUILD_TYPE=Debug", target="tfq_transcribe")
    # LiteRT's C++ runtime keeps allocations until exit: leaks are checked in our code only.
    supp = tmp_path / "lsan.supp"
    supp.write_text("leak:libLiteRt.so\n")
    env = dict(os.environ, ASAN_OPTIONS="detect_leaks=1:abort_on_error=0",
               LSAN_OPTIONS=f"suppressions={supp}:print_suppressions=0",
               UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1")
    exe = build / "tfq_transcribe"
    wav = list(wavs.values())[0]
    (line,) = _transcribe(exe, model, [wav], "--chunk-samples", 777, env=env)
    assert line["text"] == python_text[wav]
    for name, (path, words) in _variants(model, tmp_path).items():
        if name.startswith(("truncated-5000", "bad-state", "no-vocabulary", "bad-json", "not-streaming")):
            _fails(exe, path, wav, code=1, contains=words, env=env)
    for name, words in _bad_wavs(tmp_path, wav).items():
        if name in ("truncated.wav", "header-only.wav", "nan.wav"):
            _fails(exe, model, tmp_path / name, code=2, contains=(words,), env=env)


def test_metadata_mutations_under_asan_ubsan(model, wavs, tmp_path):
    """Random same-length byte changes inside the metadata JSON (the flatbuffer's offsets stay
    valid): every run ends with a transcript or a clear error, never a sanitizer report."""
    build = BUILD / "asan"
    _cmake_build(build, "-DTFQ_SANITIZE=ON", "-DCMAKE_BUILD_TYPE=Debug", target="tfq_transcribe")
    supp = tmp_path / "lsan.supp"
    supp.write_text("leak:libLiteRt.so\n")
    env = dict(os.environ, ASAN_OPTIONS="detect_leaks=1:abort_on_error=0",
               LSAN_OPTIONS=f"suppressions={supp}:print_suppressions=0",
               UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1")
    b = bytearray(model.read_bytes())
    start = b.index(b'{"streaming"')
    end = start + int.from_bytes(b[start - 4:start], "little")  # the [ubyte] vector's length
    assert b[end - 1:end] == b"}", "the metadata JSON is not where the test expects it"
    rng = np.random.default_rng(7)
    wav = list(wavs.values())[0]
    alphabet = b'{}[]",:0123456789-.eE \\utrfn'
    outcomes = {}
    for i in range(24):
        m = bytearray(b)
        for _ in range(int(rng.integers(1, 4))):
            m[int(rng.integers(start, end))] = alphabet[int(rng.integers(len(alphabet)))]
        path = tmp_path / f"mut{i}.tflite"
        path.write_bytes(bytes(m))
        res = subprocess.run([str(build / "tfq_transcribe"), "--litert", str(_litert_x86()), str(path), str(wav)],
                             capture_output=True, text=True, timeout=120, env=env)
        err = _errors(res.stderr)
        assert res.returncode in (0, 1), f"mutation {i}: exit {res.returncode}\n{err[-3000:]}"
        assert "runtime error" not in err and "Sanitizer" not in err, err[-3000:]
        if res.returncode:
            assert any(l.startswith("tfq_transcribe: ") and path.name in l for l in err.splitlines()), err
        outcomes[res.returncode] = outcomes.get(res.returncode, 0) + 1
    print(f"metadata mutations: {outcomes}")


def _damaged_copies(model: Path, tmp: Path, n: int, seed: int) -> list[Path]:
    """n seeded damaged copies of the model, in turn: bit flips, an overwritten run of bytes,
    a truncation."""
    b = model.read_bytes()
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        m = bytearray(b)
        kind = i % 3
        if kind == 0:
            for _ in range(int(rng.integers(1, 9))):
                m[int(rng.integers(len(m)))] ^= 1 << int(rng.integers(8))
        elif kind == 1:
            at = int(rng.integers(len(m)))
            run = rng.integers(0, 256, int(rng.integers(1, 65)), dtype=np.uint8).tobytes()
            m[at:at + len(run)] = run[:len(m) - at]
        else:
            m = m[:int(rng.integers(len(m)))]
        path = tmp / f"damaged{i}.tflite"
        path.write_bytes(bytes(m))
        paths.append(path)
    return paths


def test_whole_file_mutations_under_asan_ubsan(model, wavs, tmp_path):
    """Seeded random damage anywhere in the file (bit flips, overwritten runs, truncation): every
    run ends with a transcript or a clear error naming the file, never a crash or a sanitizer
    report.  (A file whose builtin op failed to prepare once crashed the core: bad-reshape above.)"""
    build = BUILD / "asan"
    _cmake_build(build, "-DTFQ_SANITIZE=ON", "-DCMAKE_BUILD_TYPE=Debug", target="tfq_transcribe")
    env = dict(os.environ, ASAN_OPTIONS="detect_leaks=0:abort_on_error=0",
               UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1")
    wav = list(wavs.values())[0]
    outcomes = {}
    for i, path in enumerate(_damaged_copies(model, tmp_path, 40, seed=11)):
        res = subprocess.run([str(build / "tfq_transcribe"), "--litert", str(_litert_x86()), str(path), str(wav)],
                             capture_output=True, text=True, timeout=120, env=env)
        err = _errors(res.stderr)
        assert res.returncode in (0, 1), f"damage {i}: exit {res.returncode}\n{err[-3000:]}"
        assert "runtime error" not in err and "Sanitizer" not in err, err[-3000:]
        if res.returncode:
            assert any(l.startswith("tfq_transcribe: ") and path.name in l for l in err.splitlines()), err
        outcomes[res.returncode] = outcomes.get(res.returncode, 0) + 1
    print(f"whole-file damage: {outcomes}")


# One process opens every broken file in turn through the Python Recognizer (the path of
# tools/transcribe.py and the demo) and prints one JSON line per file before and after, so a
# crash names the file it died on.
_PYTHON_OPENS = """
import json, sys
from tfq_asr import Recognizer
from tfq_asr.audio import load_audio
wav = load_audio(sys.argv[1])
for path in sys.argv[2:]:
    print(json.dumps({"file": path}), flush=True)
    try:
        r = Recognizer(path)
        r.transcribe(wav)
        r.close()
        out = {"file": path, "ok": True}
    except Exception as e:  # noqa: BLE001 - the kind of error is what the test checks
        out = {"file": path, "error": type(e).__name__, "message": str(e)}
    print(json.dumps(out), flush=True)
"""


def test_python_recognizer_refuses_damaged_files(model, wavs, tmp_path):
    """The broken files of the C core's tests through the Python Recognizer: each one
    transcribes or is refused with our error type naming the file, never a crash or a Python
    KeyError. (LiteRtCreateModelFromFile crashed the process on 3 of 120 damaged files before
    the Python runtime ran the core's structural check, tfq_tflite_check, first; and streaming
    metadata missing a field raised KeyError from inside the Recognizer.)"""
    files = [p for p, _ in _variants(model, tmp_path).values()]
    b = model.read_bytes()
    chunk = re.search(rb'"chunk_frames": (\d\d+)', b).group(0)  # same length: offsets stay
    for name, old, new in [("no-state-input", b'{"input": "', b'{"inpux": "'),
                           ("chunk-string", chunk, chunk[:-2] + b'""'),
                           ("state-shape-zero", b'"shape": [1, ', b'"shape": [0, ')]:
        assert old in b, name
        files.append(tmp_path / f"{name}.tflite")
        files[-1].write_bytes(b.replace(old, new, 1))
    files += _damaged_copies(model, tmp_path, 45, seed=21)
    env = dict(os.environ, TF_USE_LEGACY_KERAS="1", TF_CPP_MIN_LOG_LEVEL="3")
    res = subprocess.run([sys.executable, "-c", _PYTHON_OPENS, str(list(wavs.values())[0])] + [str(f) for f in files],
                         capture_output=True, text=True, timeout=600, env=env, cwd=ROOT)
    lines = [json.loads(l) for l in res.stdout.splitlines() if l.startswith("{")]
    assert res.returncode == 0, f"exit {res.returncode} on {lines[-1]['file'] if lines else '?'}\n{res.stderr[-2000:]}"
    results = [l for l in lines if len(l) > 1]
    assert len(results) == len(files)
    outcomes = {}
    for r in results:
        if not r.get("ok"):
            assert r["error"] in ("UserError", "LiteRtError", "TfqOpError"), r
            assert Path(r["file"]).name in r["message"], r
        key = r.get("error", "ok")
        outcomes[key] = outcomes.get(key, 0) + 1
    named = {Path(r["file"]).stem: r for r in results}
    for name in ("no-state-input", "chunk-string", "state-shape-zero", "bad-state", "shared-state"):
        assert named[name].get("error") == "UserError", named[name]
    for name in ("truncated-16", "truncated-5000", "text"):
        assert "not a valid .tflite model" in named[name]["message"], named[name]
    print(f"Python Recognizer on {len(files)} broken files: {outcomes}")


# ---- (e) aarch64 under qemu -------------------------------------------------------------------

def _litert_aarch64() -> Path:
    """libLiteRt.so of the pinned wheel for aarch64, extracted once under build/."""
    dest = BUILD / f"litert-aarch64-{LITERT_VERSION}" / "libLiteRt.so"
    if dest.is_file():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.parent / "download"
    _run([sys.executable, "-m", "pip", "download", "-q", "--only-binary=:all:", "--no-deps",
          "--platform", "manylinux_2_27_aarch64", "--python-version", "3.11",
          f"ai-edge-litert=={LITERT_VERSION}", "-d", tmp], timeout=600)
    (wheel,) = tmp.glob("ai_edge_litert-*aarch64.whl")
    with zipfile.ZipFile(wheel) as z:
        data = z.read("ai_edge_litert/libLiteRt.so")
    part = dest.with_suffix(".part")
    part.write_bytes(data)
    part.rename(dest)
    shutil.rmtree(tmp)
    return dest


# qemu-user 7.2 shows an aarch64 process the host's /proc/cpuinfo (x86 fields only), and
# LiteRT's CPU detection (cpuinfo, for XNNPACK) crashes on it inside LiteRtCreateCompiledModel,
# with or without our op.  qemu's -L prefix is searched first for every path the guest opens, so
# a prefix holding the aarch64 libraries and an aarch64-style cpuinfo fixes that.
FAKE_CPUINFO = """processor\t: 0
BogoMIPS\t: 50.00
Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp
CPU implementer\t: 0x41
CPU architecture: 8
CPU variant\t: 0x3
CPU part\t: 0xd0c
CPU revision\t: 1

"""
# Utterances whose transcript is the same on both architectures.  Not all are: XNNPACK runs the
# builtin float ops with other kernels on aarch64 (its own rounding), and near-ties of this weak
# model flip: test-000032 reads "acxescisze" there and "acxuscisze" on x86-64, with the NEON
# kernels and with the reference kernels alike (ours are bit-identical across ISAs).
AARCH64_UTTERANCES = ("test-000017", "test-000038")


def _qemu_root() -> Path:
    root = BUILD / "qemu-aarch64-root"
    (root / "proc").mkdir(parents=True, exist_ok=True)
    lib = root / "lib"
    if not lib.is_symlink():
        lib.symlink_to(AARCH64_SYSROOT / "lib")
    (root / "proc" / "cpuinfo").write_text(FAKE_CPUINFO)
    return root


def test_aarch64_transcript_under_qemu_equals_x86(native, model, wavs):
    if platform.machine() in ("aarch64", "arm64"):
        pytest.fail("this test cross-compiles from x86-64; on aarch64 run the x86 tests natively")
    _require_tool("aarch64-linux-gnu-gcc", "gcc-aarch64-linux-gnu")
    _require_tool("qemu-aarch64", "qemu-user")
    if not (AARCH64_SYSROOT / "lib" / "libstdc++.so.6").exists():
        pytest.fail("aarch64 libstdc++ missing: install the Debian package libstdc++6-arm64-cross")
    build = BUILD / "aarch64"
    _cmake_build(build, f"-DCMAKE_TOOLCHAIN_FILE={CONVERTERS / 'cmake' / 'aarch64-linux-gnu.cmake'}",
                 "-DCMAKE_BUILD_TYPE=Release", target="tfq_transcribe")
    lib = _litert_aarch64()
    files = [w for f, w in wavs.items() if f.stem in AARCH64_UTTERANCES]
    assert len(files) == len(AARCH64_UTTERANCES)
    qemu = ["qemu-aarch64", "-L", _qemu_root()]
    x86 = _transcribe(native / "tfq_transcribe", model, files)
    arm = _transcribe(build / "tfq_transcribe", model, files, litert=lib, runner=qemu, timeout=600)
    assert [l["text"] for l in arm] == [l["text"] for l in x86]
    # The NEON kernels (qemu's default CPU has SDOT) against the reference kernels, in the real
    # runtime: bit-identical layers give the same transcript.
    ref = _transcribe(build / "tfq_transcribe", model, files[:1], litert=lib, runner=qemu, timeout=600,
                      env=dict(os.environ, TFQ_KERNELS_ISA="ref"))
    assert ref[0]["text"] == arm[0]["text"]
    rtf = lambda lines: sum(l["rtf"] * l["seconds"] for l in lines) / sum(l["seconds"] for l in lines)
    print(f"RTF x86-64 {rtf(x86):.4f}, aarch64 under qemu {rtf(arm):.4f} (reference kernels {rtf(ref):.4f})")


def test_interleaved_streams_on_one_recognizer(native, model, wavs, python_text):
    """Streams of one recognizer share its state buffers: chunks of two utterances fed in
    turn (each step saves the other stream's state and loads its own) give each utterance's
    own transcript, and a stream destroyed while resident leaves the next one a clean start."""
    import soundfile as sf
    lib = ctypes.CDLL(str(native / "libtfq_stream.so"))
    vp, cp = ctypes.c_void_p, ctypes.c_char_p
    lib.tfq_recognizer_open.argtypes = [cp, cp, ctypes.c_int, ctypes.POINTER(vp), cp, ctypes.c_size_t]
    lib.tfq_recognizer_close.argtypes = [vp]
    lib.tfq_stream_create.argtypes = [vp, ctypes.POINTER(vp), cp, ctypes.c_size_t]
    lib.tfq_stream_accept.argtypes = [vp, vp, ctypes.c_size_t]
    lib.tfq_stream_finish.argtypes = [vp, ctypes.POINTER(cp)]
    lib.tfq_stream_destroy.argtypes = [vp]
    err = ctypes.create_string_buffer(512)
    r = vp()
    assert lib.tfq_recognizer_open(str(model).encode(), str(_litert_x86()).encode(), 1, ctypes.byref(r),
                                   err, len(err)) == 0, err.value
    files = list(wavs.values())[:3]
    audio = [np.ascontiguousarray(sf.read(f, dtype="float32")[0]) for f in files]
    try:
        abandoned = vp()  # fed, then destroyed while its state is resident
        assert lib.tfq_stream_create(r, ctypes.byref(abandoned), err, len(err)) == 0
        assert lib.tfq_stream_accept(abandoned, audio[2].ctypes.data, 16000) == 0
        lib.tfq_stream_destroy(abandoned)
        streams = [vp(), vp()]
        for s in streams:
            assert lib.tfq_stream_create(r, ctypes.byref(s), err, len(err)) == 0
        piece, pos = 3000, [0, 0]
        while any(p < len(a) for p, a in zip(pos, audio[:2])):
            for i in range(2):
                n = min(piece, len(audio[i]) - pos[i])
                if n > 0:
                    chunk = audio[i][pos[i]:pos[i] + n]
                    assert lib.tfq_stream_accept(streams[i], chunk.ctypes.data, n) == 0
                    pos[i] += n
        for i, s in enumerate(streams):
            text = cp()
            assert lib.tfq_stream_finish(s, ctypes.byref(text)) == 0
            assert text.value.decode() == python_text[files[i]], files[i]
            lib.tfq_stream_destroy(s)
    finally:
        lib.tfq_recognizer_close(r)
