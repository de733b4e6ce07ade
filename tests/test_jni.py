"""The JNI bridge of the Android app on the host JVM (issue 6 item 2).

converters/jni/tfq_jni.c is built into libtfq_jni.so (the streaming core inside, as on Android);
the app's com.tfqasr classes (android_demo/app/src/main/java/com/tfqasr) and tests/java/JniCheck
are compiled with the JDK's javac (warnings are errors) and run on the JVM:
(a) every demo utterance streamed in random chunks through the bridge gives the Python
    Recognizer's transcript, and each partial is a prefix of the next;
(b) misuse (missing files, NaN samples, accept after finish, use after close) raises the
    documented exception with the core's message, and the recognizer stays usable;
(c) the library exports exactly the native methods the Java classes declare (javac -h).
Missing JDK tools fail with the Debian package to install, never skip.
"""
from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BRIDGE = ROOT / "android_demo" / "app" / "src" / "main" / "java" / "com" / "tfqasr"
CHECK = ROOT / "tests" / "java" / "JniCheck.java"
BUILD = ROOT / "build" / "native"
JDK_PACKAGE = "openjdk-17-jdk-headless"


def _tool(name: str) -> str:
    path = shutil.which(name)
    if not path:
        pytest.fail(f"{name} not found: install the Debian package {JDK_PACKAGE} "
                    f"(it is in DEBS of the Makefile; `make deps` installs it)")
    return path


def _run(cmd, timeout=600) -> subprocess.CompletedProcess:
    res = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=timeout)
    if res.returncode != 0:
        pytest.fail(f"{' '.join(map(str, cmd))} exited {res.returncode}\n"
                    f"{res.stdout[-4000:]}\n{res.stderr[-4000:]}")
    return res


@pytest.fixture(scope="module")
def jni_library() -> Path:
    _run(["cmake", "-S", ROOT / "converters", "-B", BUILD, "-DCMAKE_BUILD_TYPE=Release",
          "-DTFQ_BUILD_JNI=ON"])
    _run(["cmake", "--build", BUILD, "-j2", "--target", "tfq_jni"], timeout=900)
    lib = BUILD / "libtfq_jni.so"
    assert lib.is_file()
    return lib


@pytest.fixture(scope="module")
def classes(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("jni_classes")
    _run([_tool("javac"), "-Xlint:all", "-Werror", "--release", "17", "-d", out, "-h", out / "h",
          *sorted(BRIDGE.glob("*.java")), CHECK])
    return out


def _java(classes: Path, lib: Path, *args) -> list[dict]:
    from tfq_asr.runtime.litert import litert_library_path
    res = _run([_tool("java"), f"-Dtfq.jni.library={lib}", "-cp", classes, "JniCheck", args[0],
                litert_library_path(), *args[1:]])
    return [json.loads(line) for line in res.stdout.splitlines()]


@pytest.mark.parametrize("seed", [1, 2])
def test_jni_transcripts_equal_python_recognizer(jni_library, classes, w2_stream_model,
                                                 demo_wavs, w2_python_text, seed):
    files = list(demo_wavs.values())
    lines = _java(classes, jni_library, "transcribe", w2_stream_model, seed, *files)
    assert [Path(l["audio"]) for l in lines] == files
    for line in lines:
        wav = Path(line["audio"])
        assert line["text"] == w2_python_text[wav], wav.name
        chain = line["partials"] + [line["text"]]
        for a, b in zip(chain, chain[1:]):
            assert b.startswith(a), (wav.name, a, b)
        assert line["sample_rate"] == 16000 and line["chunk_frames"] > 0
        assert 0 < line["rtf"] < 1, line            # a 4 s file, computed on this CPU
        assert line["steps"] >= int(line["seconds"] * 100) // line["chunk_frames"]


def test_jni_misuse_raises_documented_exceptions(jni_library, classes, w2_stream_model,
                                                 demo_wavs, w2_python_text):
    wav = next(iter(demo_wavs.values()))
    text = w2_python_text[wav]
    got = {l["case"]: l for l in _java(classes, jni_library, "errors", w2_stream_model, wav)}

    def raised(case, exception, *words, status=None):
        entry = got[case]
        assert entry.get("exception") == exception, entry
        for w in words:
            assert w in entry["message"], entry
        if status is not None:
            assert entry["status"] == status, entry

    raised("missing model", "com.tfqasr.TfqException", "/nonexistent/model.tflite",
           "cannot open", status=-102)
    raised("missing litert", "com.tfqasr.TfqException", "/nonexistent/libLiteRt.so", status=-104)
    raised("zero threads", "java.lang.IllegalArgumentException", "numThreads 0")
    raised("wav is not a wav", "java.io.IOException", "not a WAV file")
    raised("bad range", "java.lang.IndexOutOfBoundsException", "outside an array")
    raised("nan sample", "java.lang.IllegalArgumentException", "NaN", "nothing was consumed")
    assert got["after nan"]["returned"] == text
    raised("accept after finish", "com.tfqasr.TfqException", "after finish", status=-106)
    raised("finish twice", "com.tfqasr.TfqException", "after finish", status=-106)
    assert got["partial after finish"]["returned"] == text
    assert got["recognizer still usable"]["returned"] == text
    raised("stream after close", "java.lang.IllegalStateException", "closed")
    raised("stream after recognizer close", "java.lang.IllegalStateException", "closed")
    raised("recognizer after close", "java.lang.IllegalStateException", "is closed")
    assert got["empty accept and finish"]["returned"] == ""


def test_jni_exports_match_java_native_methods(jni_library, classes):
    declared = set()
    for header in (classes / "h").glob("*.h"):
        declared |= set(re.findall(r"JNIEXPORT \S+ JNICALL (Java_\w+)", header.read_text()))
    assert declared, "javac -h wrote no JNI declarations"
    nm = _run(["nm", "-D", "--defined-only", jni_library]).stdout
    exported = {l.split()[-1] for l in nm.splitlines() if " T Java_" in l}
    assert exported == declared
