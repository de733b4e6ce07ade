"""The Android demo app (android_demo/), tools/android_assets.py and tools/android_bench.sh, on a
machine without Android SDK, NDK, Gradle or device (issue 6 items 1 and 4):

(a) static: every path the Gradle and CMake files name exists; the asset names agree between
    app/build.gradle, tools/android_assets.py and MainActivity; the manifest declares
    RECORD_AUDIO and the launcher activity; no TODO/FIXME/placeholder in android_demo/;
(b) the app's CMakeLists configures with the host compiler (FindJNI), and as Android would
    build it (ANDROID set, cross gcc for aarch64): libtfq_jni.so lands in the directory Gradle
    collects from, with 16 KB aligned segments;
(c) Java: the classes without android.* compile with javac -Xlint:all -Werror; MainActivity
    compiles against hand-written android.* stubs (tests/android_stubs) and an R class made from
    the app's resources; the app's benchmark (com.tfqasr.demo.Benchmark) runs on the JVM over
    the host build of the app's native library and gives the Python Recognizer's transcript;
(d) tools/android_assets.py writes the model, the WAV (the FLAC's samples) and the reference;
(e) tools/android_bench.sh: bash -n, shellcheck, --help, a clear failure without NDK/adb or
    without a device, and a whole run against a fake NDK (a host toolchain) and a fake adb
    whose "device" is a local folder.
Missing host tools fail with the Debian package to install, never skip.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
APP = ROOT / "android_demo" / "app"
MAIN = APP / "src" / "main"
JAVA = MAIN / "java"
CPP = MAIN / "cpp"
STUBS = ROOT / "tests" / "android_stubs"
BENCH = ROOT / "tools" / "android_bench.sh"
ASSETS_TOOL = ROOT / "tools" / "android_assets.py"
DEMO = ROOT / "tfq_asr" / "data" / "demo"
BENCH_UTTERANCE = "test-000017.flac"
ANDROID_NS = "{http://schemas.android.com/apk/res/android}"
# Persistent, so that later runs rebuild incrementally (the test budget is seconds).
BUILD = ROOT / "build" / "test_android_demo"


def _tool(name: str, package: str) -> str:
    path = shutil.which(name)
    if not path:
        pytest.fail(f"{name} not found: install the Debian package {package} "
                    f"(it is in DEBS of the Makefile; `make deps` installs it)")
    return path


def _run(cmd, timeout=300, env=None, cwd=None) -> subprocess.CompletedProcess:
    res = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=timeout,
                         env=env, cwd=cwd)
    if res.returncode != 0:
        pytest.fail(f"{' '.join(map(str, cmd))} exited {res.returncode}\n"
                    f"{res.stdout[-4000:]}\n{res.stderr[-4000:]}")
    return res


def _litert_x86() -> Path:
    from tfq_asr.runtime.litert import litert_library_path
    return litert_library_path()


def _java_files() -> list[Path]:
    return sorted((ROOT / "android_demo").rglob("*.java"))


def _uses_android(path: Path) -> bool:
    return re.search(r"^import android\.", path.read_text(), re.M) is not None


# ---- (a) static checks -------------------------------------------------------------------------

def test_gradle_files_name_existing_paths():
    settings = (ROOT / "android_demo" / "settings.gradle").read_text()
    for module in re.findall(r"include\s+'(:[\w-]+)'", settings):
        assert (ROOT / "android_demo" / module[1:] / "build.gradle").is_file(), module
    gradle = (APP / "build.gradle").read_text()
    cmake_paths = re.findall(r"path\s+'([^']+)'", gradle)
    assert cmake_paths == ["src/main/cpp/CMakeLists.txt"], cmake_paths
    assert (APP / cmake_paths[0]).is_file()
    assert "version '3.22.1'" in gradle and "compileSdk 34" in gradle and "minSdk 26" in gradle
    assert "abiFilters 'arm64-v8a', 'x86_64'" in gradle
    assert "targets 'tfq_jni'" in gradle
    wrapper = (ROOT / "android_demo" / "gradle" / "wrapper" / "gradle-wrapper.properties").read_text()
    assert re.search(r"distributionUrl=.*gradle-8\.\d+(\.\d+)?-bin\.zip", wrapper)
    props = (ROOT / "android_demo" / "gradle.properties").read_text()
    assert re.search(r"^litertVersion=2\.\d+\.\d+$", props, re.M)
    # The app's CMakeLists reaches converters/ by a relative path: it must land there.
    cmake = (CPP / "CMakeLists.txt").read_text()
    rel = re.search(r'CMAKE_CURRENT_SOURCE_DIR\}/([./]+converters)"', cmake).group(1)
    assert (CPP / rel / "CMakeLists.txt").resolve() == ROOT / "converters" / "CMakeLists.txt"
    # The JNI sources that CMake compiles into libtfq_jni.so.
    assert (ROOT / "converters" / "jni" / "tfq_jni.c").is_file()


def test_asset_names_agree():
    gradle = (APP / "build.gradle").read_text()
    listed = re.search(r"def tfqAssets = \[([^\]]*)\]", gradle).group(1)
    gradle_names = re.findall(r"'([^']+)'", listed)
    activity = (JAVA / "com" / "tfqasr" / "demo" / "MainActivity.java").read_text()
    java_names = [re.search(rf'{c} = "([^"]+)"', activity).group(1)
                  for c in ("MODEL_ASSET", "BENCH_WAV_ASSET", "BENCH_TEXT_ASSET")]
    tool = ASSETS_TOOL.read_text()
    tool_names = [re.search(rf'^{c} = "([^"]+)"', tool, re.M).group(1)
                  for c in ("MODEL_ASSET", "WAV_ASSET", "TEXT_ASSET")]
    assert gradle_names == java_names == tool_names
    # Generated files stay out of git.
    assert "/android_demo/app/src/main/assets/" in (ROOT / ".gitignore").read_text().splitlines()


def test_manifest_declares_permission_and_activity():
    root = ET.parse(MAIN / "AndroidManifest.xml").getroot()
    perms = [e.get(ANDROID_NS + "name") for e in root.iter("uses-permission")]
    assert "android.permission.RECORD_AUDIO" in perms
    activities = [e for e in root.iter("activity")]
    assert activities, "no activity in the manifest"
    launcher = None
    for a in activities:
        actions = [e.get(ANDROID_NS + "name") for e in a.iter("action")]
        cats = [e.get(ANDROID_NS + "name") for e in a.iter("category")]
        if "android.intent.action.MAIN" in actions and "android.intent.category.LAUNCHER" in cats:
            launcher = a
    assert launcher is not None, "no MAIN/LAUNCHER activity"
    assert launcher.get(ANDROID_NS + "exported") == "true"
    name = launcher.get(ANDROID_NS + "name")
    src = JAVA / (name.replace(".", "/") + ".java")
    assert src.is_file(), f"manifest activity {name}: no {src}"
    assert re.search(r"class MainActivity extends Activity\b", src.read_text())
    # Every Java file that uses android.* is an activity the manifest declares (those are
    # compiled against stubs only; everything else compiles against the JDK).
    declared = {JAVA / (a.get(ANDROID_NS + "name").replace(".", "/") + ".java") for a in activities}
    assert {p for p in _java_files() if _uses_android(p)} <= declared


def test_no_unfinished_markers():
    pattern = re.compile(r"TODO|FIXME|placeholder", re.I)
    hits = []
    for p in sorted((ROOT / "android_demo").rglob("*")):
        if p.is_file() and "assets" not in p.relative_to(ROOT / "android_demo").parts:
            for i, line in enumerate(p.read_text(errors="replace").splitlines(), 1):
                if pattern.search(line):
                    hits.append(f"{p.relative_to(ROOT)}:{i}: {line.strip()}")
    assert not hits, "\n".join(hits)


def test_resources_referenced_by_the_activity_exist():
    ids, layouts, strings = _resources()
    for p in _java_files():
        if _uses_android(p):
            text = p.read_text()
            for kind, names in (("id", ids), ("layout", layouts), ("string", strings)):
                for ref in re.findall(rf"\bR\.{kind}\.(\w+)", text):
                    assert ref in names, f"{p.name}: R.{kind}.{ref} is not in res/"
    for name in re.findall(r'@string/(\w+)', (MAIN / "res" / "layout" / "activity_main.xml").read_text()
                           + (MAIN / "AndroidManifest.xml").read_text()):
        assert name in strings, f"@string/{name} is not in res/values/strings.xml"


def _resources() -> tuple[set, set, list]:
    res = MAIN / "res"
    ids, layouts = set(), set()
    for f in (res / "layout").glob("*.xml"):
        layouts.add(f.stem)
        for el in ET.parse(f).iter():
            v = el.get(ANDROID_NS + "id")
            if v and v.startswith("@+id/"):
                ids.add(v[5:])
    strings = [e.get("name") for e in ET.parse(res / "values" / "strings.xml").getroot().iter("string")]
    assert len(strings) == len(set(strings)), "duplicate string names"
    return ids, layouts, strings


# ---- (b) the app's CMake -----------------------------------------------------------------------

def test_app_cmake_configures_on_host(tmp_path):
    _tool("cmake", "cmake")
    _tool("javac", "openjdk-17-jdk-headless")  # FindJNI uses the JDK of javac
    _run(["cmake", "-S", CPP, "-B", tmp_path / "host"])
    cache = (tmp_path / "host" / "CMakeCache.txt").read_text()
    for opt, value in (("TFQ_BUILD_JNI", "ON"), ("TFQ_BUILD_PROGRAMS", "OFF"), ("TFQ_WERROR", "OFF")):
        assert re.search(rf"^{opt}:BOOL={value}$", cache, re.M), opt
    targets = _run(["cmake", "--build", tmp_path / "host", "--target", "help"]).stdout
    assert "tfq_jni" in targets and "tfq_transcribe" not in targets


def test_app_cmake_android_layout_aarch64():
    """As Gradle drives it: ANDROID set, an output directory passed in, an aarch64 compiler
    (Debian's cross gcc instead of the NDK's clang; the JDK's jni.h instead of the NDK's)."""
    _tool("aarch64-linux-gnu-gcc", "gcc-aarch64-linux-gnu")
    javac = Path(_tool("javac", "openjdk-17-jdk-headless")).resolve()
    jdk_include = javac.parent.parent / "include"
    out = BUILD / "android-aarch64-out"
    build = BUILD / "android-aarch64"
    _run(["cmake", "-S", CPP, "-B", build, "-DANDROID=ON",
          f"-DCMAKE_TOOLCHAIN_FILE={ROOT / 'converters' / 'cmake' / 'aarch64-linux-gnu.cmake'}",
          f"-DCMAKE_LIBRARY_OUTPUT_DIRECTORY={out}", "-DCMAKE_BUILD_TYPE=Debug",
          f"-DCMAKE_C_FLAGS=-I{jdk_include} -I{jdk_include / 'linux'}"])
    _run(["cmake", "--build", build, "-j2", "--target", "tfq_jni"], timeout=600)
    lib = out / "libtfq_jni.so"
    assert lib.is_file(), f"libtfq_jni.so not in CMAKE_LIBRARY_OUTPUT_DIRECTORY {out}"
    headers = _run([_tool("readelf", "binutils"), "-h", "-l", "-d", "-W", lib]).stdout
    assert "AArch64" in headers
    aligns = re.findall(r"^\s*LOAD\s.*\s(0x[0-9a-f]+)$", headers, re.M)
    assert aligns and all(int(a, 16) >= 0x4000 for a in aligns), aligns
    assert "libLiteRt" not in headers, "libLiteRt.so must be dlopened, not linked"
    symbols = _run(["readelf", "--dyn-syms", "-W", lib]).stdout
    assert "Java_com_tfqasr_TfqRecognizer_nativeOpen" in symbols
    # The debug build type keeps optimized code (the app shows RTF).
    for target in ("tfq_jni", "tfq_kernels_obj"):
        flags = (build / "tfq" / "CMakeFiles" / f"{target}.dir" / "flags.make").read_text()
        assert re.search(r"^C_FLAGS = .*-g -O2 ", flags, re.M), target


# ---- (c) Java ----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def classes(tmp_path_factory) -> Path:
    """The Java files without android.* compiled with the JDK, warnings as errors."""
    javac = _tool("javac", "openjdk-17-jdk-headless")
    plain = [p for p in _java_files() if not _uses_android(p)]
    assert any(p.name == "Benchmark.java" for p in plain)
    out = tmp_path_factory.mktemp("android_classes")
    _run([javac, "-Xlint:all", "-Werror", "--release", "17", "-d", out, *plain])
    return out


def test_plain_java_compiles(classes):
    assert (classes / "com" / "tfqasr" / "demo" / "StreamingSession.class").is_file()
    assert (classes / "com" / "tfqasr" / "TfqRecognizer.class").is_file()


def test_activity_compiles_against_stubs(tmp_path):
    javac = _tool("javac", "openjdk-17-jdk-headless")
    ids, layouts, strings = _resources()

    def cls(name, names):
        body = "".join(f"    public static final int {n} = {i + 1};\n" for i, n in enumerate(sorted(names)))
        return f"  public static final class {name} {{\n{body}  }}\n"

    r_java = tmp_path / "src" / "com" / "tfqasr" / "demo" / "R.java"
    r_java.parent.mkdir(parents=True)
    r_java.write_text("package com.tfqasr.demo;\n\npublic final class R {\n"
                      + cls("id", ids) + cls("layout", layouts) + cls("string", strings) + "}\n")
    _run([javac, "-Xlint:all", "-Werror", "--release", "17", "-d", tmp_path / "out",
          *sorted(STUBS.rglob("*.java")), r_java, *_java_files()])
    assert (tmp_path / "out" / "com" / "tfqasr" / "demo" / "MainActivity.class").is_file()


@pytest.fixture(scope="module")
def host_jni() -> Path:
    """libtfq_jni.so built for the host from the app's own CMakeLists."""
    _tool("cmake", "cmake")
    _tool("javac", "openjdk-17-jdk-headless")
    build = BUILD / "host"
    _run(["cmake", "-S", CPP, "-B", build, "-DCMAKE_BUILD_TYPE=Release"])
    _run(["cmake", "--build", build, "-j2", "--target", "tfq_jni"], timeout=600)
    lib = build / "libtfq_jni.so"
    assert lib.is_file()
    return lib


@pytest.fixture(scope="module")
def bench_wav(tmp_path_factory) -> Path:
    import soundfile as sf
    data, sr = sf.read(str(DEMO / BENCH_UTTERANCE), dtype="int16")
    wav = tmp_path_factory.mktemp("bench") / "bench.wav"
    sf.write(str(wav), data, sr, subtype="PCM_16")
    return wav


def test_benchmark_on_host_jvm(classes, host_jni, w2_stream_model, bench_wav):
    java = _tool("java", "openjdk-17-jdk-headless")
    res = _run([java, f"-Dtfq.jni.library={host_jni}", "-cp", classes, "com.tfqasr.demo.Benchmark",
                "--litert", _litert_x86(), "--threads", "1", w2_stream_model, bench_wav], timeout=120)
    line = [l for l in res.stdout.splitlines() if l.startswith("{")]
    assert len(line) == 1, res.stdout
    r = json.loads(line[0])
    from tfq_asr.audio import load_audio
    from tfq_asr.streaming import Recognizer
    rec = Recognizer(w2_stream_model)
    try:
        expected = rec.transcribe(load_audio(DEMO / BENCH_UTTERANCE))
    finally:
        rec.close()
    assert r["text"] == expected
    assert r["seconds"] == pytest.approx(70961 / 16000, abs=1e-3)
    assert r["chunks"] == -(-70961 // 2560)  # 160 ms chunks
    assert 0 < r["rtf"] <= r["wall_rtf"] < 1
    assert r["steps"] >= 1
    # Usage errors: exit 2 with the usage line.
    bad = subprocess.run([java, "-cp", str(classes), "com.tfqasr.demo.Benchmark", "--threads", "0",
                          "m", "w"], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "--threads 0" in bad.stderr


# ---- (d) tools/android_assets.py ---------------------------------------------------------------

def _assets_tool(*args) -> subprocess.CompletedProcess:
    env = dict(os.environ, TF_USE_LEGACY_KERAS="1")
    return subprocess.run([sys.executable, str(ASSETS_TOOL), *map(str, args)], capture_output=True,
                          text=True, timeout=600, env=env)


def test_android_assets(tmp_path, w2_stream_model):
    import soundfile as sf
    out = tmp_path / "assets"
    res = _assets_tool("--out", out, "--model-file", w2_stream_model)
    assert res.returncode == 0, res.stderr
    assert sorted(p.name for p in out.iterdir()) == ["bench.txt", "bench.wav",
                                                     "conformer-ctc-xs-w2-stream.tflite"]
    assert (out / "conformer-ctc-xs-w2-stream.tflite").read_bytes() == w2_stream_model.read_bytes()
    wav, sr = sf.read(str(out / "bench.wav"), dtype="int16")
    flac, flac_sr = sf.read(str(DEMO / BENCH_UTTERANCE), dtype="int16")
    assert sr == flac_sr == 16000 and np.array_equal(wav, flac)
    assert sf.info(str(out / "bench.wav")).subtype == "PCM_16"
    assert (out / "bench.txt").read_text() == \
        "if you have a mad dog with rabies you take a gun and shoot him\n"
    assert "conformer-ctc-xs-w2" in res.stdout and "w2-sc64" in res.stdout
    # A file that is no streaming model is refused; nothing half-written is left behind.
    bad = _assets_tool("--out", out, "--model-file", DEMO / "demo.tsv")
    assert bad.returncode == 2 and "demo.tsv" in bad.stderr and "Traceback" not in bad.stderr
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]
    bad = _assets_tool("--out", out, "--utterance", "missing.flac")
    assert bad.returncode == 2 and "missing.flac" in bad.stderr and BENCH_UTTERANCE in bad.stderr


# ---- (e) tools/android_bench.sh ----------------------------------------------------------------

def test_bench_script_syntax_and_lint():
    _run(["bash", "-n", BENCH])
    _run([_tool("shellcheck", "shellcheck"), BENCH])
    res = _run(["bash", BENCH, "--help"])
    assert "usage: tools/android_bench.sh" in res.stdout and "--serial" in res.stdout
    bad = subprocess.run(["bash", str(BENCH), "--threads", "x"], capture_output=True, text=True)
    assert bad.returncode == 2 and "--threads x" in bad.stderr


def _env_without_android(path: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANDROID")}
    env["PATH"] = path
    return env


def _path_without_adb(where: Path) -> str:
    """A PATH holding everything of the current one except adb (links in one folder)."""
    farm = where / "path"
    shutil.rmtree(farm, ignore_errors=True)
    farm.mkdir(parents=True)
    for d in os.environ["PATH"].split(os.pathsep):
        if not os.path.isdir(d):
            continue
        for name in os.listdir(d):
            if name != "adb" and not (farm / name).exists():
                (farm / name).symlink_to(Path(d) / name)
    return str(farm)


def test_bench_without_ndk_and_adb(tmp_path):
    res = subprocess.run(["bash", str(BENCH)], capture_output=True, text=True, timeout=60,
                         env=_env_without_android(_path_without_adb(tmp_path)))
    assert res.returncode == 1
    assert "Android NDK" in res.stderr and "ANDROID_NDK_HOME" in res.stderr
    assert "adb" in res.stderr and "platform-tools" in res.stderr
    assert res.stdout == ""


FAKE_ADB = r"""#!/usr/bin/env bash
# Fake adb: the "device" is the local machine; DEVICES says what `adb devices` lists.
set -euo pipefail
[[ ${1:-} == -s ]] && shift 2
cmd=$1; shift
case $cmd in
  devices) printf 'List of devices attached\n%b\n' "${DEVICES}" ;;
  shell)
    case "$*" in
      "getprop ro.product.cpu.abi") echo x86_64 ;;
      "getprop ro.product.model") echo "fake phone" ;;
      *) bash -c "$*" ;;
    esac ;;
  push)
    dest=${!#}
    for ((i = 1; i < $#; i++)); do cp -r "${!i}" "$dest"; done ;;
  *) echo "fake adb: $cmd unsupported" >&2; exit 1 ;;
esac
"""


@pytest.fixture()
def fake_android(tmp_path) -> dict:
    """A fake NDK whose toolchain file is empty (a host build) and a fake adb.  They live at a
    fixed place under build/ so that the script's build folder (which remembers the NDK and the
    compiler paths) is reused between test runs."""
    fake = BUILD / "fake-android"
    ndk = fake / "ndk"
    (ndk / "build" / "cmake").mkdir(parents=True, exist_ok=True)
    (ndk / "build" / "cmake" / "android.toolchain.cmake").write_text("# host toolchain\n")
    bin_dir = fake / "bin"
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / "adb").write_text(FAKE_ADB)
    (bin_dir / "adb").chmod(0o755)
    env = _env_without_android(f"{bin_dir}{os.pathsep}{_path_without_adb(fake)}")
    env["ANDROID_NDK_HOME"] = str(ndk)
    env["TFQ_BENCH_DEVICE_DIR"] = str(tmp_path / "device" / "tfq")
    return env


def test_bench_without_device(fake_android):
    for devices, expected in (("", "no Android device: adb devices lists none"),
                              ("abc\\tunauthorized", "unauthorized"),
                              ("a\\tdevice\\nb\\tdevice", "several devices")):
        env = dict(fake_android, DEVICES=devices)
        res = subprocess.run(["bash", str(BENCH)], capture_output=True, text=True, timeout=60, env=env)
        assert res.returncode == 1, res.stderr
        assert expected in res.stderr
    env = dict(fake_android, DEVICES="a\\tdevice")
    res = subprocess.run(["bash", str(BENCH), "--serial", "zzz"], capture_output=True, text=True,
                         timeout=60, env=env)
    assert res.returncode == 1 and "no device zzz" in res.stderr


def test_bench_whole_run_on_fake_device(fake_android, tmp_path, w2_stream_model):
    """Build (host toolchain), push, run twice, table: the script's whole path but the NDK,
    the AAR download and the conversions (the w2 model is given with --model)."""
    env = dict(fake_android, DEVICES="fake0\\tdevice")
    work = BUILD / "bench-work"
    res = subprocess.run(["bash", str(BENCH), "--policies", "w2", "--model", f"w2={w2_stream_model}",
                          "--model", f"again={w2_stream_model}", "--litert", str(_litert_x86()),
                          "--runs", "2", "--work", str(work),
                          "--audio", str(DEMO / BENCH_UTTERANCE), "--audio", str(DEMO / "test-000032.flac")],
                         capture_output=True, text=True, timeout=600, env=env)
    assert res.returncode == 0, res.stdout + res.stderr
    rows = (work / "android_bench.tsv").read_text().splitlines()
    header = rows[0].split("\t")
    table = [dict(zip(header, r.split("\t"))) for r in rows[1:]]
    assert [r["policy"] for r in table] == ["w2", "again"]
    for r in table:
        assert int(r["bytes"]) == w2_stream_model.stat().st_size
        assert 0 < float(r["rtf_min"]) <= float(r["rtf_median"]) <= float(r["rtf_max"]) < 1
        assert float(r["audio_seconds"]) == pytest.approx(
            _seconds(BENCH_UTTERANCE) + _seconds("test-000032.flac"), abs=2e-3)
        assert r["abi"] == "x86_64" and r["device"] == "fake phone" and r["threads"] == "1"
    assert table[0]["text"] == table[1]["text"] and table[0]["text"]
    mb = f"{w2_stream_model.stat().st_size / 1e6:.2f}"
    assert re.search(rf"^w2\s+{re.escape(mb)}\s+0\.\d{{4}}\s", res.stdout, re.M), res.stdout
    # Nothing left on the "device" without --keep, nor in the work folder's temporaries.
    assert not (tmp_path / "device" / "tfq").exists()
    assert not list(work.glob(".tmp.*"))


def _seconds(name: str) -> float:
    import soundfile as sf
    return sf.info(str(DEMO / name)).frames / 16000
