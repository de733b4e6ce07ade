#!/usr/bin/env bash
# Measure tfq-asr on your own Android phone: builds tfq_transcribe (the C streaming core, the
# program of converters/stream/transcribe_main.c) with the Android NDK, converts the streaming
# conformer-ctc-xs as fp32, litert-int8, w4 and w2, pushes everything to the phone over adb and
# prints their real-time factors side by side.  `tools/android_bench.sh --help` for the options;
# android_demo/README.md describes it with the app.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PROG=android_bench

usage() {
  cat <<EOF
usage: tools/android_bench.sh [options]

Builds tfq_transcribe for the phone with the NDK, converts the streaming conformer-ctc-xs for
each policy (cached under --work), pushes program, libraries, models and audio to
$DEVICE_DIR_DEFAULT with adb, runs each model --runs times and prints, per policy: file
size, RTF (median over the runs; compute time / audio time, 1 thread unless --threads) and
the transcript.

options:
  --serial SERIAL       the adb device (needed when several are connected)
  --threads N           LiteRT CPU threads (default 1)
  --runs N              runs per model; the table shows the median RTF (default 3)
  --policies "LIST"     among fp32 litert-int8 w4 w2 w4-convq8 w2-convq8 (default: all six;
                        -convq8: the bundle with int8 convolution inputs, as make demo runs it)
  --model NAME=FILE     measure an already converted streaming .tflite as row NAME (repeatable;
                        NAME may be one of the policies, which then is not converted)
  --audio FILE          16 kHz mono .flac/.wav to transcribe (repeatable; default: the demo
                        utterance tfq_asr/data/demo/test-000017.flac)
  --litert PATH         libLiteRt.so for the phone's ABI; default: extracted from the LiteRT
                        AAR (com.google.ai.edge.litert:litert:VERSION, downloaded with curl
                        from Google's Maven repository, else Maven Central)
  --litert-version V    that AAR's version (default $LITERT_VERSION_DEFAULT, the release of the
                        ai-edge-litert wheel the converter uses; 2.1.6 or newer is required)
  --ndk DIR             Android NDK (default: \$ANDROID_NDK_HOME, \$ANDROID_NDK_ROOT,
                        \$ANDROID_NDK, else the newest \$ANDROID_HOME/ndk/* or
                        \$ANDROID_SDK_ROOT/ndk/*)
  --work DIR            build, model and result cache (default build/android_bench)
  --keep                leave the files on the phone ($DEVICE_DIR_DEFAULT)
  -h, --help            this text

Needs: the NDK, adb (Android SDK platform-tools) with a phone in USB debugging mode (or an
x86_64 emulator), cmake, curl (unless --litert) and the project's .venv (make deps).
The table is also written to WORK/android_bench.tsv.
EOF
}

die() {
  printf '%s: %s\n' "$PROG" "$*" >&2
  exit 1
}

usage_error() {
  printf '%s: %s (see --help)\n' "$PROG" "$*" >&2
  exit 2
}

DEVICE_DIR_DEFAULT=/data/local/tmp/tfq
LITERT_VERSION_DEFAULT=2.3.0
# The tests point this at a local folder through their fake adb.
DEVICE_DIR=${TFQ_BENCH_DEVICE_DIR:-$DEVICE_DIR_DEFAULT}
SERIAL=""
THREADS=1
RUNS=3
POLICIES="fp32 litert-int8 w4 w2 w4-convq8 w2-convq8"
LITERT=""
LITERT_VERSION=$LITERT_VERSION_DEFAULT
NDK=""
WORK="$ROOT/build/android_bench"
KEEP=0
AUDIO=()
declare -A GIVEN_MODEL=()
GIVEN_ORDER=()

need_value() {
  [[ $# -ge 2 && -n $2 ]] || usage_error "$1 needs a value"
}

while [[ $# -gt 0 ]]; do
  case $1 in
    -h | --help) usage; exit 0 ;;
    --serial) need_value "$@"; SERIAL=$2; shift 2 ;;
    --threads) need_value "$@"; THREADS=$2; shift 2 ;;
    --runs) need_value "$@"; RUNS=$2; shift 2 ;;
    --policies) need_value "$@"; POLICIES=$2; shift 2 ;;
    --model)
      need_value "$@"
      [[ $2 == *=* && -n ${2%%=*} && -n ${2#*=} ]] || usage_error "--model $2: NAME=FILE expected"
      name=${2%%=*}
      [[ $name =~ ^[A-Za-z0-9._-]+$ ]] || usage_error "--model $2: NAME may hold letters, digits, . _ -"
      [[ -f ${2#*=} ]] || usage_error "--model $2: no such file ${2#*=}"
      [[ -z ${GIVEN_MODEL[$name]:-} ]] && GIVEN_ORDER+=("$name")
      GIVEN_MODEL[$name]=$(cd "$(dirname "${2#*=}")" && pwd)/$(basename "${2#*=}")
      shift 2 ;;
    --audio)
      need_value "$@"
      [[ -f $2 ]] || usage_error "--audio $2: no such file"
      AUDIO+=("$2"); shift 2 ;;
    --litert) need_value "$@"; LITERT=$2; shift 2 ;;
    --litert-version) need_value "$@"; LITERT_VERSION=$2; shift 2 ;;
    --ndk) need_value "$@"; NDK=$2; shift 2 ;;
    --work) need_value "$@"; WORK=$2; shift 2 ;;
    --keep) KEEP=1; shift ;;
    *) usage_error "unknown argument $1" ;;
  esac
done

[[ $THREADS =~ ^[1-9][0-9]*$ ]] || usage_error "--threads $THREADS: a positive integer expected"
[[ $RUNS =~ ^[1-9][0-9]*$ ]] || usage_error "--runs $RUNS: a positive integer expected"
for p in $POLICIES; do
  case $p in
    fp32 | litert-int8 | w4 | w2 | w4-convq8 | w2-convq8) ;;
    *) usage_error "--policies: unknown policy $p (fp32 litert-int8 w4 w2 w4-convq8 w2-convq8; others with --model NAME=FILE)" ;;
  esac
done
[[ -z $LITERT || -f $LITERT ]] || usage_error "--litert $LITERT: no such file"
[[ ${#AUDIO[@]} -gt 0 ]] || AUDIO=("$ROOT/tfq_asr/data/demo/test-000017.flac")

# ---- prerequisites: all checked before any work, reported together -------------------------
missing=()

find_ndk() {
  local d
  if [[ -n $NDK ]]; then
    [[ -f $NDK/build/cmake/android.toolchain.cmake ]] && { echo "$NDK"; return; }
    return 1
  fi
  for d in "${ANDROID_NDK_HOME:-}" "${ANDROID_NDK_ROOT:-}" "${ANDROID_NDK:-}"; do
    [[ -n $d && -f $d/build/cmake/android.toolchain.cmake ]] && { echo "$d"; return; }
  done
  for d in "${ANDROID_HOME:-}" "${ANDROID_SDK_ROOT:-}"; do
    [[ -n $d && -d $d/ndk ]] || continue
    # Newest version first (directories are named by version).
    while IFS= read -r v; do
      [[ -f $v/build/cmake/android.toolchain.cmake ]] && { echo "$v"; return; }
    done < <(find "$d/ndk" -mindepth 1 -maxdepth 1 -type d | sort -rV)
  done
  return 1
}

if ! NDK=$(find_ndk); then
  if [[ -n $NDK ]]; then
    missing+=("Android NDK: --ndk $NDK has no build/cmake/android.toolchain.cmake")
  else
    missing+=("Android NDK: none found (\$ANDROID_NDK_HOME, \$ANDROID_NDK_ROOT, \$ANDROID_NDK, \$ANDROID_HOME/ndk/*, \$ANDROID_SDK_ROOT/ndk/*). Install it with Android Studio's SDK Manager (SDK Tools > NDK) or \`sdkmanager 'ndk;26.3.11579264'\`, then set ANDROID_NDK_HOME or pass --ndk DIR")
  fi
  NDK=""
fi

ADB=$(command -v adb || true)
if [[ -z $ADB ]]; then
  for d in "${ANDROID_HOME:-}" "${ANDROID_SDK_ROOT:-}"; do
    [[ -n $d && -x $d/platform-tools/adb ]] && { ADB=$d/platform-tools/adb; break; }
  done
fi
[[ -n $ADB ]] || missing+=("adb: not on PATH nor in \$ANDROID_HOME/platform-tools. Install the Android SDK platform-tools (Android Studio's SDK Manager, or Debian/Ubuntu: apt-get install adb)")
command -v cmake >/dev/null || missing+=("cmake: not on PATH (Debian/Ubuntu: apt-get install cmake)")
[[ -n $LITERT ]] || command -v curl >/dev/null || missing+=("curl: needed to download the LiteRT AAR (apt-get install curl), or pass --litert PATH")
PY=$ROOT/.venv/bin/python
[[ -x $PY ]] || missing+=("the project's Python environment $PY: run \`make deps\` in $ROOT")

if [[ ${#missing[@]} -gt 0 ]]; then
  {
    echo "$PROG: cannot run, missing:"
    for m in "${missing[@]}"; do echo "  - $m"; done
  } >&2
  exit 1
fi

# ---- the device ----------------------------------------------------------------------------
devices=$("$ADB" devices | tr -d '\r' | awk 'NR > 1 && NF >= 2 { print $1 " " $2 }')
ready=$(awk '$2 == "device" { print $1 }' <<<"$devices")
if [[ -n $SERIAL ]]; then
  grep -qxF "$SERIAL" <<<"$ready" || die "no device $SERIAL ready (adb devices: ${devices:-none}); check the cable and the USB debugging prompt on the phone"
elif [[ -z $ready ]]; then
  if [[ -n $devices ]]; then
    die "no Android device ready: adb devices lists ${devices//$'\n'/, } (unauthorized: accept the USB debugging prompt on the phone; offline: reconnect it)"
  fi
  die "no Android device: adb devices lists none. Connect a phone with USB debugging on (Settings > Developer options) or start an x86_64 emulator, then rerun (--serial to pick one)"
elif [[ $(wc -l <<<"$ready") -gt 1 ]]; then
  die "several devices ready ($(tr '\n' ' ' <<<"$ready")): pass --serial SERIAL"
else
  SERIAL=$ready
fi
adb_() { "$ADB" -s "$SERIAL" "$@"; }

ABI=$(adb_ shell getprop ro.product.cpu.abi | tr -d '\r')
case $ABI in
  arm64-v8a | x86_64) ;;
  *) die "device $SERIAL has ABI '$ABI': only arm64-v8a and x86_64 are built" ;;
esac
DEVICE_NAME=$(adb_ shell getprop ro.product.model | tr -d '\r')

mkdir -p "$WORK"
LOCAL_TMP=$(mktemp -d "$WORK/.tmp.XXXXXX")
PUSHED=0
# shellcheck disable=SC2317  # run by the EXIT trap
cleanup() {
  rm -rf "$LOCAL_TMP"
  if [[ $PUSHED == 1 && $KEEP == 0 ]]; then
    adb_ shell "rm -rf '$DEVICE_DIR'" >/dev/null 2>&1 || true
  fi
}
trap cleanup EXIT

# ---- build ---------------------------------------------------------------------------------
BUILD=$WORK/build-$ABI
# CMake keeps the toolchain of its first configure: another NDK needs a fresh build folder.
if [[ -f $BUILD/CMakeCache.txt && $(cat "$BUILD/.tfq-ndk" 2>/dev/null) != "$NDK" ]]; then
  rm -rf "$BUILD"
fi
mkdir -p "$BUILD"
printf '%s\n' "$NDK" >"$BUILD/.tfq-ndk"
echo "building tfq_transcribe for $ABI with $NDK"
# 16 KB aligned segments: Android 15+ devices with 16 KB pages refuse 4 KB aligned libraries.
if ! cmake -S "$ROOT/converters" -B "$BUILD" \
    -DCMAKE_TOOLCHAIN_FILE="$NDK/build/cmake/android.toolchain.cmake" \
    -DANDROID_ABI="$ABI" -DANDROID_PLATFORM=android-26 -DCMAKE_BUILD_TYPE=Release \
    -DTFQ_WERROR=OFF -DTFQ_BUILD_PROGRAMS=ON \
    -DCMAKE_SHARED_LINKER_FLAGS="-Wl,-z,max-page-size=16384" \
    -DCMAKE_EXE_LINKER_FLAGS="-Wl,-z,max-page-size=16384" >"$LOCAL_TMP/cmake.log" 2>&1 ||
   ! cmake --build "$BUILD" --target tfq_transcribe -j "$(nproc 2>/dev/null || echo 2)" \
    >>"$LOCAL_TMP/cmake.log" 2>&1; then
  tail -n 30 "$LOCAL_TMP/cmake.log" >&2
  die "building tfq_transcribe with the NDK at $NDK failed (log above)"
fi

# ---- libLiteRt.so --------------------------------------------------------------------------
if [[ -z $LITERT ]]; then
  LITERT=$WORK/litert-$LITERT_VERSION/$ABI/libLiteRt.so
  if [[ ! -f $LITERT ]]; then
    aar=$WORK/litert-$LITERT_VERSION/litert-$LITERT_VERSION.aar
    mkdir -p "$(dirname "$LITERT")"
    if [[ ! -f $aar ]]; then
      path=com/google/ai/edge/litert/litert/$LITERT_VERSION/litert-$LITERT_VERSION.aar
      ok=0
      for repo in https://dl.google.com/dl/android/maven2 https://repo1.maven.org/maven2; do
        echo "downloading $repo/$path"
        if curl -fsSL --retry 2 -o "$LOCAL_TMP/litert.aar" "$repo/$path"; then ok=1; break; fi
      done
      [[ $ok == 1 ]] || die "could not download com.google.ai.edge.litert:litert:$LITERT_VERSION (no network, or no such version: try --litert-version, or pass --litert PATH to a libLiteRt.so for $ABI)"
      mv "$LOCAL_TMP/litert.aar" "$aar"
    fi
    "$PY" - "$aar" "jni/$ABI/libLiteRt.so" "$LOCAL_TMP/libLiteRt.so" <<'EOF' || die "$aar has no jni/$ABI/libLiteRt.so: pass --litert PATH"
import shutil, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z, z.open(sys.argv[2]) as src, open(sys.argv[3], "wb") as dst:
    shutil.copyfileobj(src, dst)
EOF
    mv "$LOCAL_TMP/libLiteRt.so" "$LITERT"
  fi
fi

# ---- models --------------------------------------------------------------------------------
# Cached by the converter's sources and the bundled weights, so a code change reconverts.
key=$( { git -C "$ROOT" ls-files -s tfq_asr tools/convert.py; git -C "$ROOT" diff HEAD -- tfq_asr tools/convert.py; } 2>/dev/null | sha256sum | cut -c1-16)
MODELS=$WORK/models-$key
mkdir -p "$MODELS"
NAMES=()
declare -A MODEL_FILE=()
for p in $POLICIES; do
  NAMES+=("$p")
  if [[ -n ${GIVEN_MODEL[$p]:-} ]]; then
    MODEL_FILE[$p]=${GIVEN_MODEL[$p]}
    continue
  fi
  MODEL_FILE[$p]=$MODELS/$p.tflite
  [[ -f ${MODEL_FILE[$p]} ]] && continue
  case $p in
    fp32 | litert-int8) args=(--model conformer-ctc-xs --policy "$p") ;;
    w4) args=(--model conformer-ctc-xs-w4) ;;
    w2) args=(--model conformer-ctc-xs-w2) ;;
    w4-convq8) args=(--model conformer-ctc-xs-w4 --int8-convs) ;;
    w2-convq8) args=(--model conformer-ctc-xs-w2 --int8-convs) ;;
  esac
  echo "converting $p: tools/convert.py ${args[*]} --streaming (about a minute)"
  if ! TF_USE_LEGACY_KERAS=1 "$PY" "$ROOT/tools/convert.py" "${args[@]}" --streaming \
      --out "$LOCAL_TMP/$p.tflite" >"$LOCAL_TMP/convert.log" 2>&1; then
    tail -n 20 "$LOCAL_TMP/convert.log" >&2
    die "tools/convert.py ${args[*]} --streaming failed (log above)"
  fi
  mv "$LOCAL_TMP/$p.tflite" "${MODEL_FILE[$p]}"
done
for name in "${GIVEN_ORDER[@]}"; do
  [[ -n ${MODEL_FILE[$name]:-} ]] && continue
  NAMES+=("$name")
  MODEL_FILE[$name]=${GIVEN_MODEL[$name]}
done
[[ ${#NAMES[@]} -gt 0 ]] || usage_error "nothing to measure: --policies is empty and no --model given"

# ---- audio: 16-bit PCM WAVs, the format tfq_transcribe reads -------------------------------
mkdir -p "$LOCAL_TMP/audio"
"$PY" - "$LOCAL_TMP/audio" "${AUDIO[@]}" <<'EOF' || die "converting the audio to 16-bit WAV failed (message above)"
import sys
from pathlib import Path
import soundfile as sf
out = Path(sys.argv[1])
for i, name in enumerate(sys.argv[2:]):
    data, sr = sf.read(name, dtype="int16", always_2d=True)
    if sr != 16000 or data.shape[1] != 1:
        sys.exit(f"{name}: {sr} Hz, {data.shape[1]} channels; 16 kHz mono expected")
    sf.write(str(out / f"{i:03d}-{Path(name).stem}.wav"), data[:, 0], sr, subtype="PCM_16", format="WAV")
EOF

# ---- push and run --------------------------------------------------------------------------
echo "pushing to $SERIAL ($DEVICE_NAME, $ABI):$DEVICE_DIR"
PUSHED=1
adb_ shell "rm -rf '$DEVICE_DIR' && mkdir -p '$DEVICE_DIR/audio'" >/dev/null
# One file per push, each to its full destination path: no directory semantics involved.
adb_ push "$BUILD/tfq_transcribe" "$DEVICE_DIR/tfq_transcribe" >/dev/null
adb_ push "$BUILD/libtfq_stream.so" "$DEVICE_DIR/libtfq_stream.so" >/dev/null
adb_ push "$LITERT" "$DEVICE_DIR/libLiteRt.so" >/dev/null
wavs=""
for f in "$LOCAL_TMP"/audio/*.wav; do
  adb_ push "$f" "$DEVICE_DIR/audio/$(basename "$f")" >/dev/null
  wavs+="audio/$(basename "$f") "
done
for name in "${NAMES[@]}"; do
  adb_ push "${MODEL_FILE[$name]}" "$DEVICE_DIR/$name.tflite" >/dev/null
done
adb_ shell "chmod 755 '$DEVICE_DIR/tfq_transcribe'"

RESULTS=$LOCAL_TMP/results
mkdir -p "$RESULTS"
for name in "${NAMES[@]}"; do
  for ((run = 1; run <= RUNS; run++)); do
    echo "running $name ($run/$RUNS)"
    # The exit status is echoed: adb shell of old devices does not return it.
    out=$(adb_ shell "cd '$DEVICE_DIR' && LD_LIBRARY_PATH='$DEVICE_DIR' ./tfq_transcribe --litert '$DEVICE_DIR/libLiteRt.so' --threads $THREADS '$name.tflite' $wavs 2>stderr.txt; echo \"exit=\$?\"" | tr -d '\r')
    status=$(sed -n 's/^exit=//p' <<<"$out")
    if [[ $status != 0 ]]; then
      err=$(adb_ shell "grep -v -e '^INFO: ' -e '^WARNING: ' '$DEVICE_DIR/stderr.txt' | tail -n 5" | tr -d '\r' || true)
      die "tfq_transcribe on the device failed for $name (exit ${status:-unknown}): ${err:-no message}"
    fi
    grep '^{' <<<"$out" >"$RESULTS/$name.$run.jsonl" || die "tfq_transcribe printed no result for $name"
  done
done

# ---- the table -----------------------------------------------------------------------------
table=$LOCAL_TMP/android_bench.tsv
models_tsv=$LOCAL_TMP/models.tsv
for name in "${NAMES[@]}"; do printf '%s\t%s\n' "$name" "${MODEL_FILE[$name]}"; done >"$models_tsv"
"$PY" - "$RESULTS" "$models_tsv" "$RUNS" "$table" \
    "$DEVICE_NAME" "$ABI" "$THREADS" <<'EOF' || die "reading the results failed (message above)"
import json, statistics, sys
from pathlib import Path
results, models_tsv, runs, table, device, abi, threads = sys.argv[1:]
rows = []
for line in Path(models_tsv).read_text().splitlines():
    name, path = line.split("\t")
    rtfs, text, seconds = [], "", 0.0
    for r in range(1, int(runs) + 1):
        items = [json.loads(l) for l in Path(results, f"{name}.{r}.jsonl").read_text().splitlines()]
        seconds = sum(i["seconds"] for i in items)
        # One RTF over all files: their compute time over their audio time.
        rtfs.append(sum(i["rtf"] * i["seconds"] for i in items) / seconds)
        text = items[0]["text"]
    rows.append((name, Path(path).stat().st_size, statistics.median(rtfs), min(rtfs), max(rtfs), text, seconds))
print(f"\n{device} ({abi}), {threads} thread(s), median of {runs} run(s) over {rows[0][6]:.2f} s of audio")
print(f"{'policy':<14} {'size MB':>8} {'RTF':>8} {'min-max':>15}  text of the first file")
for name, size, rtf, lo, hi, text, _ in rows:
    print(f"{name:<14} {size / 1e6:>8.2f} {rtf:>8.4f} {lo:>7.4f}-{hi:<7.4f}  {text}")
with open(table, "w") as f:
    f.write("policy\tbytes\trtf_median\trtf_min\trtf_max\taudio_seconds\tdevice\tabi\tthreads\ttext\n")
    for name, size, rtf, lo, hi, text, seconds in rows:
        f.write(f"{name}\t{size}\t{rtf:.5f}\t{lo:.5f}\t{hi:.5f}\t{seconds:.3f}\t{device}\t{abi}\t{threads}\t{text}\n")
EOF
mv "$table" "$WORK/android_bench.tsv"
echo "table written to $WORK/android_bench.tsv"
[[ $KEEP == 1 ]] && echo "files kept on the device in $DEVICE_DIR"
exit 0
