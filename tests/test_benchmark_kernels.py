"""tools/benchmark.py --kernels on one tiny shape: the table and the JSON have every variant,
and each variant has either a positive time or a stated failure reason (no timing claims)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
NATIVE = ROOT / "build" / "native"


@pytest.fixture(scope="module")
def kernel_run(tmp_path_factory):
    for f in ("libtfq_litert.so", "tfq_bandwidth"):
        if not (NATIVE / f).is_file():
            pytest.fail(f"{NATIVE / f} missing: run `make native`")
    out = tmp_path_factory.mktemp("kbench") / "kernels.json"
    proc = subprocess.run([sys.executable, str(ROOT / "tools" / "benchmark.py"), "--kernels", "--quick",
                           "--shapes", "64x96", "--m", "1", "4", "--seconds", "0.02", "--rounds", "2",
                           "--json", str(out)],
                          capture_output=True, text=True, timeout=170, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout, json.loads(out.read_text())


def test_json_structure(kernel_run):
    import _kernel_bench as kb
    _, res = kernel_run
    assert res["kind"] == "kernels" and res["threads"] == 1 and res["quick"] is True and res["rounds"] == 2
    assert len(res["load_before"]) == 3 and "load average" in res["uptime"]
    assert res["runner_floor_us"] > 0 and set(res["per_op_us"]) == {"litert-int8", "tfq"}
    lim = res["limits"]
    assert "error" not in lim, lim.get("error")
    assert set(lim["read_gbs"]) == {"L2", "L3", "DRAM"} and all(v > 0 for v in lim["read_gbs"].values())
    assert lim["peak_gmacs"] and all(v > 0 for v in lim["peak_gmacs"].values())
    assert [(p["label"], p["m"]) for p in res["points"]] == [("64x96", 1), ("64x96", 4)]
    for p in res["points"]:
        assert p["macs"] == p["m"] * 64 * 96 and p["regime"] == "memory"
        assert list(p["variants"]) == list(kb.VARIANTS)
        for name, r in p["variants"].items():
            if "error" in r:  # a failure says why, never an empty reason
                assert "us" not in r and len(r["error"]) > 10, (name, r)
                continue
            assert r["us"] > 0 and r["gops"] > 0 and r["weight_bytes"] > 0 and r["weight_gbs"] > 0, (name, r)
            assert r["level"] == "L2" and 0 < r["frac_bandwidth"] and r["frac_peak"] > 0
            if name.startswith("tfq-"):
                assert r["kernel_us"] > 0 and r["kernel_frac_bandwidth"] > 0, (name, r)
            assert r["rel_err"] < (1.0 if "int2" in name or "w2" in name else 0.2), (name, r["rel_err"])
        for base in ("float", "litert-int8", "tfq-w4", "tfq-w4-sc64", "tfq-w2-sc64"):
            assert "us" in p["variants"][base], (base, p["variants"][base])
        assert p["variants"]["litert-int8"]["vs_int8"] == pytest.approx(1.0)
        assert p["variants"]["float"]["vs_float"] == pytest.approx(1.0)


def test_table_lists_every_variant(kernel_run):
    import _kernel_bench as kb
    out, res = kernel_run
    assert "read bandwidth" in out and "peak int8 MAC rate" in out and "uptime:" in out
    assert "fastest of 2 interleaved rounds" in out
    rows = [line for line in out.splitlines() if line.startswith("| 64x96 |")]
    detail = [r for r in rows if r.split("|")[3].strip() in kb.VARIANTS]
    assert len(detail) == 2 * len(kb.VARIANTS)
    for row in detail:
        cells = [c.strip() for c in row.split("|")[1:-1]]
        assert cells[3].startswith("failed: ") or float(cells[3]) > 0, row
    summary = [r for r in rows if r not in detail]
    assert len(summary) == 2 and all(len(r.split("|")) == len(kb.VARIANTS) + 11 for r in summary)


class _NoLog:
    def mark(self):
        return 0

    def errors_since(self, pos):
        return ""


def test_rounds_keep_each_variants_fastest(monkeypatch, tmp_path):
    """_time_point merges a point's rounds: the fastest call with its own output error, the
    fastest kernel-alone time (timed apart), and a failure that replaces the earlier rounds."""
    import numpy as np
    import _kernel_bench as kb
    calls = iter([(3e-6, 1.0), (1e-6, 2.0), (2e-6, 3.0)])
    kernels = iter([5.0, 7.0, 4.0])

    def fake_time(path, x, seconds, repeats, wall):
        t, v = next(calls)
        wall.append(2 * t)
        return t, np.full((1, 2), v, np.float32)

    monkeypatch.setattr(kb, "time_model", fake_time)
    monkeypatch.setattr(kb, "with_rows", lambda data, m0, m: data)
    monkeypatch.setattr(kb, "kernel_alone_us", lambda v, layers, m, s: next(kernels))
    built = tmp_path / "v.tflite"
    built.write_bytes(b"model")
    b = {"path": built, "weight_bytes": 64}
    x, ref = np.zeros((1, 2), np.float32), np.full((1, 2), 2.0)
    best = None
    for _ in range(3):
        best = kb._time_point(best, "tfq-w4", b, tmp_path, 1, x, ref, [(2, 2)], 0.01, 1, _NoLog())
    assert best["us"] == pytest.approx(1.0) and best["wall_us"] == pytest.approx(2.0)
    assert best["rel_err"] == 0.0  # the output of that fastest round (2.0 = ref)
    assert best["kernel_us"] == 4.0  # the kernel alone: its own fastest round
    assert kb._time_point(best, "float", {"error": "cannot convert"}, tmp_path, 1, x, ref, [(2, 2)],
                          0.01, 1, _NoLog()) == {"error": "cannot convert"}

    def broken(*a):
        raise RuntimeError("the run failed")

    monkeypatch.setattr(kb, "time_model", broken)
    failed = kb._time_point(best, "tfq-w4", b, tmp_path, 1, x, ref, [(2, 2)], 0.01, 1, _NoLog())
    assert set(failed) == {"error"} and "the run failed" in failed["error"]


def test_beyond_l3_stack_and_what_the_bars_ask():
    """The full run's last stack holds at least twice the L3 in int8 weights (so int8 streams
    them from DRAM), and the summary says which int8 MAC rate each memory-bound bar needs at a
    stack point, against the measured peak (here: int8 at 100 GMAC/s, so w2 at 2x needs 200)."""
    import io
    import _kernel_bench as kb
    assert kb.beyond_l3_layers(512, 2048, 32 << 20) == 64
    assert kb.beyond_l3_layers(512, 2048, 33 << 20) == 66  # rounds up to whole pairs
    assert kb.beyond_l3_layers(512, 2048, 1) == 2
    configs = kb.default_configs(False, {"L2": 1 << 20, "L3": 8 << 20})
    last = configs[-1]
    assert last["stack"] and "beyond L3" in last["label"] and last["m"] == [1, 4]
    assert sum(k * n for k, n in last["layers"]) >= 2 * (8 << 20) and len(last["layers"]) == 16
    assert not any("beyond L3" in c["label"] for c in kb.default_configs(True))
    macs = 4 * 1000 * 1000
    point = {"label": "stack", "stack": True, "regime": "memory", "m": 4, "macs": macs,
             "variants": {"litert-int8": {"us": macs / 100e3}}}  # 100 GMAC/s
    single = dict(point, label="one layer", stack=False)
    res = {"limits": {"peak_gmacs": {"avx2": 90.0, "avx512vnni": 250.0}}, "points": [single, point]}
    out = io.StringIO()
    kb.print_bar_needs(res, out)
    text = out.getvalue()
    assert "avx512vnni peak 250" in text and "one layer" not in text
    assert "- stack, M=4: int8 100 GMAC/s; w2 at 2x needs 200 (80% of it), w4 at 1.5x needs 150 (60% of it)" in text
    out = io.StringIO()
    kb.print_bar_needs(dict(res, limits={"peak_gmacs": {}}), out)
    assert out.getvalue() == ""
