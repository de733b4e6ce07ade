"""`tools/benchmark.py --kernels`: fully connected layers alone, single thread, every variant in
one run through LiteRtModel (the LiteRT C API with our op registered).

Per shape (K inputs x N outputs) one small Keras model (Input [M, K] -> Dense) is converted
once per variant at a provisional row count and its activation tensors are then re-shaped to
each M in the flatbuffer (the weights, the part that differs between variants, are written
once per variant).  Variants:

  float           LiteRT builtin FULLY_CONNECTED, float32 weights (XNNPACK)
  litert-int8     TFLite converter dynamic range (Optimize.DEFAULT): int8 per-channel weights,
                  int8 activations per run (XNNPACK QD8)
  aeq-int4-pc     ai-edge-quantizer dynamic int4, one scale per output channel
  aeq-int4-b32    ai-edge-quantizer dynamic int4, blocks of 32 inputs
  aeq-int2-pc     ai-edge-quantizer dynamic int2, per channel
  aeq-int2-b32    ai-edge-quantizer dynamic int2, blocks of 32 inputs
  tfq-w4          ours: TFQ_FULLY_CONNECTED, policy w4 (int4 symmetric per channel)
  tfq-w4-sc64     ours: w4-sc64-f16 (groups of 64, float16 scales)
  tfq-w2-sc64     ours: w2-sc64-asym-clipl2-f16 (the bundled w2 policy)

A variant that cannot be built or run keeps its reason instead of a time.  Weights are random
(N(0, 1/K)), quantized by tfq_asr.quant.numerics.  Time per call: warm-up, then repeats of
back-to-back calls (LiteRtModel.time_calls) of about `seconds / repeats` each; the median, in
CPU time of the calling thread (threads=1, so the whole call runs on it): on this shared
2-core machine the wall clock would also count time the run waited for a core (the wall-clock
median is kept in the JSON as wall_us).  The C programs time themselves the same way.  With
rounds > 1 (benchmark.py --rounds) each point times its variants in that many interleaved
rounds and keeps each one's fastest.
The runner's own floor (a 8x8 float layer) is measured too: at small shapes it is part of
every variant's time.  Limits come from build/native/tfq_bandwidth (read bandwidth of L2-,
L3- and DRAM-sized buffers, peak int8 MAC rate): memory-bound points (M <= 4) are held against
the bandwidth of the cache level their weight bytes fit in, the others against the peak.
"""
from __future__ import annotations

import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
BANDWIDTH_BIN = ROOT / "build" / "native" / "tfq_bandwidth"
KERNEL_BIN = ROOT / "build" / "native" / "tfq_bench"

VARIANTS = ("float", "litert-int8", "aeq-int4-pc", "aeq-int4-b32", "aeq-int2-pc", "aeq-int2-b32",
            "tfq-w4", "tfq-w4-sc64", "tfq-w2-sc64")
OUR_POLICIES = {"tfq-w4": "w4", "tfq-w4-sc64": "w4-sc64-f16", "tfq-w2-sc64": "w2-sc64-asym-clipl2-f16"}
AEQ = {"aeq-int4-pc": (4, None), "aeq-int4-b32": (4, 32), "aeq-int2-pc": (2, None), "aeq-int2-b32": (2, 32)}
M_ROWS = (1, 4, 16, 64)
MEMORY_BOUND_M = 4
M0 = 2          # the row count models are converted at, then re-shaped (never K or N here)
STACK_LAYERS = 16


# -- shapes ----------------------------------------------------------------------------------
def model_shapes(name: str) -> list[tuple[int, int]]:
    """(K, N) of every distinct fully connected shape of a Conformer config: feed-forward d->ff
    and ff->d, attention projections d->d, the conv module's pointwise d->2d (GLU)."""
    from tfq_asr.models.config import get_config
    cfg = get_config(name)
    d, ff = cfg.d_model, cfg.d_model * cfg.ff_mult
    return [(d, ff), (ff, d), (d, d), (d, 2 * d)]


def beyond_l3_layers(k: int, n: int, l3_bytes: int) -> int:
    """Layers of alternating KxN / NxK int8 weights, an even count, that fill at least twice the
    L3: a stack whose int8 weights stream from DRAM on every pass (the regime of issue 4's
    memory-bound bar), while its 2-bit weights may still fit in the cache."""
    pair = 2 * k * n
    return max(2, 2 * -(-2 * l3_bytes // pair))


def default_configs(quick: bool, caches: dict | None = None) -> list[dict]:
    """Benchmark points: {"label", "model", "layers": [(K, N), ...], "m": [...], "stack"}.
    The full run adds a Conformer L stack beyond the L3 in `caches` (default: this machine's)."""
    out = []
    models = ("conformer-xs", "conformer-m") if quick else ("conformer-xs", "conformer-m", "conformer-l")
    for model in models:
        shapes = model_shapes(model)
        if quick and model != "conformer-xs":
            shapes = shapes[:2]
        for k, n in shapes:
            out.append({"label": f"{k}x{n}", "model": model, "layers": [(k, n)],
                        "m": [1, 16] if quick else list(M_ROWS), "stack": False})
    for model in (("conformer-m",) if quick else ("conformer-m", "conformer-l")):
        (d, ff), (ff2, d2) = model_shapes(model)[:2]
        layers = [(d, ff), (ff, d)] * (STACK_LAYERS // 2)
        out.append({"label": f"{model} FF stack {d}x{ff}/{ff}x{d} x{STACK_LAYERS}", "model": model,
                    "layers": layers, "m": [1] if quick else [m for m in M_ROWS if m <= MEMORY_BOUND_M],
                    "stack": True})
    if not quick:  # the cache-resident stacks above fit this machine's L3 in int8 too
        (d, ff) = model_shapes("conformer-l")[0]
        count = beyond_l3_layers(d, ff, (caches or cache_sizes())["L3"])
        out.append({"label": f"conformer-l FF stack {d}x{ff}/{ff}x{d} x{count} (int8 beyond L3)",
                    "model": "conformer-l", "layers": [(d, ff), (ff, d)] * (count // 2),
                    "m": [m for m in M_ROWS if m <= MEMORY_BOUND_M], "stack": True})
    return out


def custom_configs(shapes: list[str], ms: list[int]) -> list[dict]:
    out = []
    for s in shapes:
        try:
            k, n = (int(v) for v in s.lower().split("x"))
        except ValueError:
            raise ValueError(f"--shapes {s!r}: expected KxN, e.g. 144x576") from None
        if k < 1 or n < 1:
            raise ValueError(f"--shapes {s!r}: K and N must be positive")
        out.append({"label": f"{k}x{n}", "model": "custom", "layers": [(k, n)], "m": list(ms), "stack": False})
    return out


# -- machine limits --------------------------------------------------------------------------
def cache_sizes() -> dict:
    """Bytes of the L2 and L3 caches one core sees (sysfs), with fallbacks."""
    sizes = {"L2": 1 << 20, "L3": 32 << 20}
    base = Path("/sys/devices/system/cpu/cpu0/cache")
    for idx in base.glob("index*"):
        try:
            level = int((idx / "level").read_text())
            text = (idx / "size").read_text().strip()
        except (OSError, ValueError):
            continue
        mult = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(text[-1:], 1)
        value = int(text.rstrip("KMG")) * mult
        if level in (2, 3):
            sizes[f"L{level}"] = value
    return sizes


def machine_limits(quick: bool) -> dict:
    caches = cache_sizes()
    # L3: 4x L2 (capped at half of L3), the size of the weight stacks that miss L2
    kib = {"L2": caches["L2"] // 2 // 1024, "L3": min(4 * caches["L2"], caches["L3"] // 2) // 1024,
           "DRAM": max(4 * caches["L3"], 256 << 20) // 1024}
    out = {"caches": caches, "buffer_kib": kib, "read_gbs": {}, "peak_gmacs": {}}
    if not BANDWIDTH_BIN.is_file():
        out["error"] = f"{BANDWIDTH_BIN} missing: run `make native`"
        return out
    cmd = [str(BANDWIDTH_BIN), "0.1" if quick else "0.5", *(str(kib[k]) for k in ("L2", "L3", "DRAM"))]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    if proc.returncode != 0:
        out["error"] = f"{' '.join(cmd)} failed: {proc.stderr.strip()}"
        return out
    by_kib = {v: k for k, v in kib.items()}
    for line in proc.stdout.splitlines():
        parts = line.split()
        if parts[:1] == ["read"]:
            out["read_gbs"][by_kib.get(int(parts[1]), parts[1])] = float(parts[2])
        elif parts[:1] == ["peak"] and parts[2] != "unavailable":
            out["peak_gmacs"][parts[1]] = float(parts[2])
    return out


def level_of(nbytes: int, caches: dict) -> str:
    """The memory level a working set of `nbytes` streams from (it fits in L2 with room for
    activations at up to 75% of it)."""
    if nbytes <= 0.75 * caches["L2"]:
        return "L2"
    if nbytes <= 0.75 * caches["L3"]:
        return "L3"
    return "DRAM"


# -- building the files ----------------------------------------------------------------------
def keras_model(layers, seed: int):
    import tf_keras as keras
    rng = np.random.default_rng(seed)
    x = inp = keras.Input(shape=(layers[0][0],), name="x")
    for i, (k, n) in enumerate(layers):
        if i and layers[i - 1][1] != k:
            raise ValueError(f"layer {i}: K={k} does not follow N={layers[i - 1][1]}")
        x = keras.layers.Dense(n, name=f"fc{i}")(x)
    model = keras.Model(inp, x, name="fc")
    for i, (k, n) in enumerate(layers):
        w = (rng.standard_normal((k, n)) / np.sqrt(k)).astype(np.float32)
        b = (0.01 * rng.standard_normal(n)).astype(np.float32)
        model.get_layer(f"fc{i}").set_weights([w, b])
    return model


def _aeq(float_tflite: bytes, bits: int, block: int | None) -> bytes:
    from ai_edge_quantizer import qtyping, quantizer, recipe_manager
    rm = recipe_manager.RecipeManager()
    gran = qtyping.QuantGranularity.CHANNELWISE if block is None else getattr(
        qtyping.QuantGranularity, f"BLOCKWISE_{block}")
    rm.add_dynamic_config(regex=".*", operation_name=qtyping.TFLOperationName.FULLY_CONNECTED,
                          num_bits=bits, granularity=gran)
    q = quantizer.Quantizer(bytearray(float_tflite), rm.get_quantization_recipe())
    return bytes(q.quantize(enable_progress_report=False).quantized_model)


def _short(err: BaseException, limit: int = 160) -> str:
    text = " ".join(str(err).split()) or type(err).__name__
    return f"{type(err).__name__}: {text}"[:limit]


def build_variant(variant: str, model, layers, float_tflite: bytes, workdir: Path) -> dict:
    """{"path", "weight_bytes"} or {"error"}: the .tflite of one variant at M0 rows."""
    from tfq_asr.convert.baselines import weight_inventory
    from tfq_asr.convert.lowering import _convert, lower_to_tflite
    path = workdir / f"{variant}.tflite"
    try:
        if variant in OUR_POLICIES:
            from tfq_asr.convert.packing import HEADER_COUNT
            from tfq_asr.convert.lowering import PARAMS_COUNT
            from tfq_asr.quant.numerics import quantize_weight
            from tfq_asr.quant.policy import from_name
            spec = from_name(OUR_POLICIES[variant]).default
            qws = {f"fc{i}": quantize_weight(model.get_layer(f"fc{i}").get_weights()[0], spec)
                   for i in range(len(layers))}
            report = lower_to_tflite(model, qws, path, input_shape=(M0, layers[0][0]))
            if report["float_ops"]:
                raise RuntimeError(f"{report['float_ops']} FULLY_CONNECTED ops left float")
            wbytes = sum(r["bytes"] - 4 * r["n"] - 4 * (HEADER_COUNT + PARAMS_COUNT)
                         for r in report["layers"].values())
            return {"path": path, "weight_bytes": int(wbytes)}
        if variant == "float":
            data = float_tflite
        elif variant == "litert-int8":
            data = _convert(model, [(M0, layers[0][0])], dynamic_range_int8=True)
        else:
            bits, block = AEQ[variant]
            data = _aeq(float_tflite, bits, block)
        rows = [r for r in weight_inventory(data) if r["op"] == "FULLY_CONNECTED"]
        want = 32 if variant == "float" else 8 if variant == "litert-int8" else AEQ[variant][0]
        bad = [r for r in rows if r["bits"] != want]
        if len(rows) != len(layers) or bad:
            raise RuntimeError(f"expected {len(layers)} FULLY_CONNECTED weights of {want} bits, file has "
                               + ", ".join(f"{r['bits']}-bit {r['storage']}" for r in rows))
        path.write_bytes(with_rows(data, M0, M0))
        return {"path": path, "weight_bytes": int(sum(r["bytes"] for r in rows))}
    except Exception as err:  # noqa: BLE001 - the reason goes in the table
        return {"error": "build: " + _short(err)}


def with_rows(data: bytes, m0: int, m: int) -> bytes:
    """The same .tflite with every activation tensor's first dimension m0 set to m (constant
    tensors untouched; external buffers stay where they are)."""
    from tensorflow.lite.tools import flatbuffer_utils
    # (read_model_from_bytearray would pull external buffers into the flatbuffer, unaligned)
    model = flatbuffer_utils.convert_bytearray_to_object(bytearray(data))
    const = {i for i, b in enumerate(model.buffers)
             if (b.data is not None and len(b.data)) or (b.offset or 0) > 1}
    changed = 0
    for sg in model.subgraphs:
        for t in sg.tensors:
            if t.buffer in const or t.shape is None or len(t.shape) == 0 or int(t.shape[0]) != m0:
                continue
            t.shape = np.array([m] + [int(d) for d in t.shape[1:]], np.int32)
            if t.shapeSignature is not None and len(t.shapeSignature) and int(t.shapeSignature[0]) == m0:
                t.shapeSignature = np.array([m] + [int(d) for d in t.shapeSignature[1:]], np.int32)
            changed += 1
    if not changed:
        raise ValueError(f"no activation tensor with {m0} rows")
    head = bytes(flatbuffer_utils.convert_object_to_bytearray(model))
    offsets = [int(b.offset) for b in model.buffers if (b.offset or 0) > 1]
    if not offsets:
        return head
    start = min(offsets)
    if len(head) > start:
        raise ValueError("re-shaped flatbuffer overlaps its external buffers")
    return head + b"\0" * (start - len(head)) + data[start:]


# -- timing ----------------------------------------------------------------------------------
class NativeLog:
    """File descriptor 2 redirected to a temporary file while LiteRT runs (it logs every model
    it opens; the tools' cli_main has already pointed fd 2 away from sys.stderr, where the
    progress bar goes); `last_error()` gives LiteRT's own reason
    for a failure."""

    def __enter__(self):
        sys.stderr.flush()
        self._saved = os.dup(2)
        self._file = tempfile.TemporaryFile(mode="w+b")
        os.dup2(self._file.fileno(), 2)
        return self

    def __exit__(self, *exc):
        sys.stderr.flush()
        os.dup2(self._saved, 2)
        os.close(self._saved)
        self._file.close()

    def mark(self) -> int:
        return os.lseek(self._file.fileno(), 0, os.SEEK_END)

    def errors_since(self, pos: int) -> str:
        self._file.seek(pos)
        lines = self._file.read().decode(errors="replace").splitlines()
        errs = [x.strip("└ ").strip() for x in lines if "ERROR" in x or x.lstrip().startswith("└")]
        errs = [e.split("] ", 1)[-1].replace("ERROR: ", "") for e in errs if e and not e.endswith("]")]
        return "; ".join(dict.fromkeys(e for e in errs if e))[:200]


def time_model(path: Path, x: np.ndarray, seconds: float, repeats: int, wall: list | None = None):
    """(median seconds per call, output) of one .tflite at one input, single thread, in CPU
    time of this thread (what the call costs when it has a core; on a shared machine the wall
    clock also counts time spent waiting for one).  `wall` gets the wall-clock median."""
    from tfq_asr.runtime.litert import LiteRtModel
    with LiteRtModel(path, threads=1) as m:
        y = m.run(x)[0]
        for _ in range(3):
            m.run(x)
        t = m.time_calls(x, 5) / 5
        per_repeat = seconds / repeats
        calls = max(1, min(200000, int(per_repeat / max(t, 1e-7))))
        cpu, walls = [], []
        for _ in range(repeats):
            w0, c0 = time.perf_counter(), time.thread_time()
            m.time_calls(x, calls)
            cpu.append((time.thread_time() - c0) / calls)
            walls.append((time.perf_counter() - w0) / calls)
    if wall is not None:
        wall.append(statistics.median(walls))
    return statistics.median(cpu), y


def floors(seconds: float, repeats: int, workdir: Path, rounds: int = 1) -> dict:
    """The runner's own cost per call: an 8x8 float layer at M=1, and per op of a chain of 16
    tiny 32x32 layers (M=1) as LiteRT int8 (XNNPACK, one delegate call) and as our custom op
    (LiteRT dispatches each custom op on its own): what small layers pay besides the math."""
    from tfq_asr.convert.lowering import _convert
    out = {}
    model = keras_model([(8, 8)], 0)
    p = workdir / "floor.tflite"
    p.write_bytes(with_rows(_convert(model, [(M0, 8)]), M0, 1))
    out["call_us"] = 1e6 * min(time_model(p, np.ones((1, 8), np.float32), seconds, repeats)[0]
                               for _ in range(rounds))
    layers = [(32, 32)] * 16
    model = keras_model(layers, 0)
    ft = _convert(model, [(M0, 32)])
    for v in ("litert-int8", "tfq-w4"):
        b = build_variant(v, model, layers, ft, workdir)
        if "error" in b:
            out[f"{v}_per_op_us"] = None
            continue
        p = workdir / f"floor-{v}.tflite"
        p.write_bytes(with_rows(b["path"].read_bytes(), M0, 1))
        t = 1e6 * min(time_model(p, np.ones((1, 32), np.float32), seconds, repeats)[0] for _ in range(rounds))
        out[f"{v}_per_op_us"] = (t - out["call_us"]) / len(layers)
    return out


def kernel_alone_us(variant: str, layers, m: int, seconds: float):
    """Microseconds of our kernels alone for one pass over the layers (tfq_bench layers: the
    op's tfq_linear_q8 on its repacked copy, no LiteRT), or None if the program is missing."""
    from tfq_asr.quant.policy import from_name
    if not KERNEL_BIN.is_file():
        return None
    spec = from_name(OUR_POLICIES[variant]).default
    group = spec.group_size if spec.granularity == "group" else 1 << 30
    cmd = [str(KERNEL_BIN), "layers", str(spec.bits), str(group), str(int(spec.symmetric)),
           str(int(spec.scale_dtype == "float16")), str(m), str(seconds), *(f"{k}x{n}" for k, n in layers)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    for line in proc.stdout.splitlines():
        if line.startswith("us "):
            return float(line.split()[1])
    return None


def reference(model, layers, x: np.ndarray) -> np.ndarray:
    y = x.astype(np.float64)
    for i in range(len(layers)):
        w, b = model.get_layer(f"fc{i}").get_weights()
        y = y @ w + b
    return y


# -- the run ---------------------------------------------------------------------------------
def run(configs: list[dict], quick: bool, seconds: float | None = None, repeats: int | None = None,
        variants=VARIANTS, rounds: int = 1) -> dict:
    """rounds > 1: every point times its variants in that many interleaved rounds and keeps
    each one's fastest (on a shared machine a slow spell then hits all variants alike instead
    of whichever ran during it; interference only ever slows a run)."""
    from tqdm import tqdm
    seconds = seconds if seconds is not None else (0.08 if quick else 0.25)
    repeats = repeats if repeats is not None else (3 if quick else 5)
    load0 = os.getloadavg()
    limits = machine_limits(quick)
    total = sum(len(c["m"]) for c in configs) * len(variants) * rounds
    points = []
    with tempfile.TemporaryDirectory(prefix="tfq-kbench-") as tmp, NativeLog() as log:
        tmp = Path(tmp)
        floor = floors(seconds, repeats, tmp, rounds)
        bar = tqdm(total=total + len(configs) * len(variants), desc="kernels", unit="pt", file=sys.stderr,
                   dynamic_ncols=True, mininterval=1.0)
        for ci, cfg in enumerate(configs):
            layers = cfg["layers"]
            wd = tmp / f"c{ci}"
            wd.mkdir()
            model = keras_model(layers, seed=ci + 1)
            from tfq_asr.convert.lowering import _convert
            float_tflite = _convert(model, [(M0, layers[0][0])])
            built = {}
            for v in variants:
                bar.set_postfix_str(f"build {cfg['label']} {v}")
                built[v] = build_variant(v, model, layers, float_tflite, wd)
                bar.update(1)
            macs_per_row = sum(k * n for k, n in layers)
            rng = np.random.default_rng(100 + ci)
            for m in cfg["m"]:
                x = rng.standard_normal((m, layers[0][0])).astype(np.float32)
                ref = reference(model, layers, x)
                point = {"label": cfg["label"], "model": cfg["model"], "stack": cfg["stack"],
                         "layers": [list(s) for s in layers], "m": m, "macs": m * macs_per_row,
                         "regime": "memory" if m <= MEMORY_BOUND_M else "compute", "variants": {}}
                for r in range(rounds):
                    for v in variants:
                        bar.set_postfix_str(f"{cfg['label']} M={m} {v}" + (f" round {r + 1}" if rounds > 1 else ""))
                        res = point["variants"].get(v)
                        if res is None or "error" not in res:
                            res = _time_point(res, v, built[v], wd, m, x, ref, layers, seconds, repeats, log)
                        point["variants"][v] = res
                        bar.update(1)
                derive(point, limits)
                points.append(point)
        bar.close()
    return {"kind": "kernels", "threads": 1, "seconds_per_point": seconds, "repeats": repeats, "rounds": rounds,
            "quick": quick, "machine": machine(), "load_before": list(load0), "load_after": list(os.getloadavg()),
            "uptime": uptime(), "runner_floor_us": floor["call_us"], "per_op_us": {
                "litert-int8": floor["litert-int8_per_op_us"], "tfq": floor["tfq-w4_per_op_us"]}, "limits": limits, "points": points}


def _time_point(best: dict | None, v: str, b: dict, wd: Path, m: int, x: np.ndarray, ref: np.ndarray,
                layers, seconds: float, repeats: int, log) -> dict:
    """One round of variant v at one point: its result, or `best` (the fastest earlier round)
    where that was faster.  A failure keeps its reason (and is not timed again)."""
    if "error" in b:
        return {"error": b["error"]}
    pos = log.mark()
    try:
        p = wd / f"{v}-m{m}.tflite"
        p.write_bytes(with_rows(b["path"].read_bytes(), M0, m))
        wall = []
        t, y = time_model(p, x, seconds, repeats, wall)
        err = float(np.linalg.norm(y - ref) / max(np.linalg.norm(ref), 1e-30))
        if not np.isfinite(y).all() or y.shape != ref.shape:
            raise RuntimeError(f"output {y.shape}, finite {np.isfinite(y).all()}")
        res = {"us": 1e6 * t, "wall_us": 1e6 * wall[0], "weight_bytes": b["weight_bytes"], "rel_err": err}
        if v in OUR_POLICIES:
            res["kernel_us"] = kernel_alone_us(v, layers, m, seconds)
        p.unlink()
    except Exception as e:  # noqa: BLE001 - the reason goes in the table
        why = log.errors_since(pos)
        return {"error": "run: " + (f"{why} ({_short(e, 200).split(': ', 2)[-1]})" if why else _short(e))}
    if best is None:
        return res
    out = dict(best) if best["us"] <= res["us"] else res
    kernels = [k for k in (best.get("kernel_us"), res.get("kernel_us")) if k]
    if kernels:  # the kernel alone is timed apart: its own fastest round
        out["kernel_us"] = min(kernels)
    return out


def derive(point: dict, limits: dict) -> None:
    """GOPS, weight GB/s, ratios and the distance from the machine's limits of every variant."""
    vs = point["variants"]
    base = {k: vs.get(k, {}).get("us") for k in ("litert-int8", "float")}
    peak = max(limits["peak_gmacs"].values()) if limits["peak_gmacs"] else None
    for r in vs.values():
        if "us" not in r:
            continue
        s = r["us"] * 1e-6
        r["gops"] = 2 * point["macs"] / s * 1e-9
        r["weight_gbs"] = r["weight_bytes"] / s * 1e-9
        r["vs_int8"] = base["litert-int8"] / r["us"] if base["litert-int8"] else None   # > 1: faster
        r["vs_float"] = base["float"] / r["us"] if base["float"] else None
        level = level_of(r["weight_bytes"], limits["caches"])
        r["level"] = level
        bw = limits["read_gbs"].get(level)
        r["frac_bandwidth"] = r["weight_gbs"] / bw if bw else None
        r["frac_peak"] = (point["macs"] / s * 1e-9) / peak if peak else None
        if r.get("kernel_us"):
            ks = r["kernel_us"] * 1e-6
            r["kernel_weight_gbs"] = r["weight_bytes"] / ks * 1e-9
            r["kernel_frac_bandwidth"] = r["kernel_weight_gbs"] / bw if bw else None
            r["kernel_frac_peak"] = (point["macs"] / ks * 1e-9) / peak if peak else None


def machine() -> dict:
    model = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": model, "cpus": os.cpu_count(), "python": platform.python_version()}


def uptime() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


# -- printing --------------------------------------------------------------------------------
def _f(v, fmt):
    return "-" if v is None else format(v, fmt)


def print_report(res: dict, out=sys.stdout) -> None:
    lim = res["limits"]
    p = lambda *a: print(*a, file=out)  # noqa: E731
    rounds = res.get("rounds", 1)
    p(f"single thread, {res['machine']['cpu']}; {res['repeats']} repeats of ~{res['seconds_per_point'] / res['repeats'] * 1000:.0f} ms "
      f"per point, median, thread CPU time" + (f", fastest of {rounds} interleaved rounds" if rounds > 1 else "")
      + f"; load before {res['load_before'][0]:.2f}, after {res['load_after'][0]:.2f}")
    p(f"uptime: {res['uptime']}")
    if "error" in lim:
        p(f"limits: {lim['error']}")
    else:
        c = lim["caches"]
        p("read bandwidth (tfq_bandwidth, one core): " + ", ".join(
            f"{k} ({lim['buffer_kib'][k] // 1024 if lim['buffer_kib'][k] >= 1024 else lim['buffer_kib'][k]}"
            f"{' MiB' if lim['buffer_kib'][k] >= 1024 else ' KiB'} buffer) {v:.1f} GB/s" for k, v in lim["read_gbs"].items())
          + f"; caches L2 {c['L2'] >> 10} KiB, L3 {c['L3'] >> 20} MiB")
        p("peak int8 MAC rate: " + (", ".join(f"{k} {v:.0f} GMAC/s" for k, v in lim["peak_gmacs"].items()) or "none"))
    p(f"runner floor (8x8 float layer, M=1, per call): {res['runner_floor_us']:.2f} us; per op of 16 chained "
      f"32x32 layers beyond that: LiteRT int8 {_f(res['per_op_us']['litert-int8'], '.2f')} us, "
      f"TFQ custom op {_f(res['per_op_us']['tfq'], '.2f')} us")
    p("")
    p("vs int8 / vs float: the baseline's time over this variant's (> 1 = faster). limit: weight bytes per second "
      "over the read bandwidth of the level the weights fit in (M <= 4), or MAC rate over the peak (M >= 16). "
      "err: relative L2 error of the output against float64.")
    p("")
    p("kernel alone: our tfq_linear_q8 calls without LiteRT (tfq_bench layers), and its distance from the limit.")
    p("")
    p("| shape | M | variant | us | GOPS | weight MB | weight GB/s | vs int8 | vs float | limit | err | kernel alone us (limit) |")
    p("|---|---:|---|---:|---:|---:|---:|---:|---:|---|---:|---|")
    for pt in res["points"]:
        for v, r in pt["variants"].items():
            if "us" not in r:
                p(f"| {pt['label']} | {pt['m']} | {v} | failed: {r['error'].replace('|', '/')} | | | | | | | | |")
                continue
            def lim(fb, fp):
                if pt["regime"] == "memory":
                    return f"{100 * fb:.0f}% {r['level']} bw" if fb else "-"
                return f"{100 * fp:.0f}% peak" if fp else "-"
            limit = lim(r["frac_bandwidth"], r["frac_peak"])
            kern = (f"{r['kernel_us']:.2f} ({lim(r.get('kernel_frac_bandwidth'), r.get('kernel_frac_peak'))})"
                    if r.get("kernel_us") else "")
            p(f"| {pt['label']} | {pt['m']} | {v} | {r['us']:.2f} | {r['gops']:.1f} | {r['weight_bytes'] / 1e6:.3f} | "
              f"{r['weight_gbs']:.1f} | {_f(r['vs_int8'], '.2f')} | {_f(r['vs_float'], '.2f')} | {limit} | {r['rel_err']:.3f} | {kern} |")
    print_summary(res, out)


def print_summary(res: dict, out=sys.stdout) -> None:
    """One row per point: time (us) of every variant, then ours against int8 and the same-bit
    ai-edge-quantizer paths."""
    p = lambda *a: print(*a, file=out)  # noqa: E731
    variants = list(res["points"][0]["variants"]) if res["points"] else []
    short = {v: v.replace("litert-", "").replace("aeq-", "q") for v in variants}
    p("")
    p("summary: us per call (x = failed, reason in the table above); ours against LiteRT int8 (> 1 = faster; w4 per "
      "channel, w4-sc64, w2-sc64) and w4 / w2 against the faster ai-edge-quantizer path of the same bits; "
      "'kernel/int8': LiteRT int8's whole call over our kernel alone (what the op would give without LiteRT's custom-op "
      "dispatch)")
    p("| shape | M | " + " | ".join(short[v] for v in variants) + " | w4/int8 | w4sc/int8 | w2/int8 | w4/aeq4 | w2/aeq2 | w4 kernel/int8 | w2 kernel/int8 |")
    p("|---|---:|" + "---:|" * len(variants) + "---:|---:|---:|---:|---:|---:|---:|")

    def best(pt, names):
        ts = [pt["variants"][n]["us"] for n in names if "us" in pt["variants"].get(n, {})]
        return min(ts) if ts else None

    for pt in res["points"]:
        vs = pt["variants"]
        cells = [_f(vs[v].get("us"), ".1f") if "us" in vs[v] else "x" for v in variants]
        int8 = vs.get("litert-int8", {}).get("us")
        w4, w4sc = vs.get("tfq-w4", {}).get("us"), vs.get("tfq-w4-sc64", {}).get("us")
        w2 = vs.get("tfq-w2-sc64", {}).get("us")
        a4, a2 = best(pt, ["aeq-int4-pc", "aeq-int4-b32"]), best(pt, ["aeq-int2-pc", "aeq-int2-b32"])
        ratio = lambda a, b: _f(a / b if a and b else None, ".2f")  # noqa: E731
        p(f"| {pt['label']} | {pt['m']} | " + " | ".join(cells)
          + f" | {ratio(int8, w4)} | {ratio(int8, w4sc)} | {ratio(int8, w2)} | {ratio(a4, w4)} | {ratio(a2, w2)}"
          + f" | {ratio(int8, vs.get('tfq-w4', {}).get('kernel_us'))} | {ratio(int8, vs.get('tfq-w2-sc64', {}).get('kernel_us'))} |")
    print_bar_needs(res, out)


# issue 4's memory-bound bars: how many times faster than LiteRT int8 (M <= MEMORY_BOUND_M)
MEMORY_BARS = (("w2", 2.0), ("w4", 1.5))


def print_bar_needs(res: dict, out=sys.stdout) -> None:
    """At each memory-bound stack point: the int8 MAC rate the memory-bound bars ask for,
    against the machine's measured peak.  Our kernels multiply with the same int8 dot-product
    instruction as LiteRT's int8 path, so a bar that needs the peak or more cannot be met by
    packing the weights tighter: there int8 is no longer waiting on memory."""
    peaks = res["limits"].get("peak_gmacs") or {}
    if not peaks:
        return
    isa, peak = max(peaks.items(), key=lambda kv: kv[1])
    rows = []
    for pt in res["points"]:
        int8 = pt["variants"].get("litert-int8", {}).get("us")
        if not pt["stack"] or pt["regime"] != "memory" or not int8:
            continue
        rate = lambda us: pt["macs"] / (us * 1e-6) * 1e-9  # noqa: E731
        need = ", ".join(f"{bits} at {bar:g}x needs {rate(int8 / bar):.0f} ({100 * rate(int8 / bar) / peak:.0f}% of it)"
                         for bits, bar in MEMORY_BARS)
        rows.append(f"- {pt['label']}, M={pt['m']}: int8 {rate(int8):.0f} GMAC/s; {need}")
    if rows:
        print(f"\nwhat the memory-bound bars ask of the int8 MAC rate (GMAC/s; measured {isa} peak {peak:.0f}):",
              file=out)
        for r in rows:
            print(r, file=out)
