"""The C kernels (converters/) against the numerics contract.

(a) through ctypes: every ISA this CPU runs, and the reference, equal a NumPy implementation of
    the contract bit for bit (the contract fixes every float operation and its order, and NumPy
    float32 arithmetic performs the same IEEE operations);
(b) the C test program built with AddressSanitizer + UndefinedBehaviorSanitizer;
(c) the C test program cross-compiled for aarch64 and run under qemu (NEON, SDOT).
Missing compilers or emulators fail with the Debian package to install, never skip.
"""
from __future__ import annotations

import os
import platform
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from tfq_asr.convert.packing import PackedWeights, num_groups, pack_weights, unpack_weights
from tfq_asr.runtime.kernels import KernelError, Kernels

ROOT = Path(__file__).resolve().parent.parent
CONVERTERS = ROOT / "converters"
BUILD = ROOT / "build"
AARCH64_SYSROOT = Path("/usr/aarch64-linux-gnu")


def _require_tool(tool: str, package: str) -> None:
    if not shutil.which(tool):
        pytest.fail(f"{tool} not found: install the Debian package {package} "
                    f"(it is in DEBS of the Makefile; `make deps` installs it)")


def _run(cmd, timeout=300, env=None) -> str:
    res = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=timeout,
                         env=env)
    if res.returncode != 0:
        pytest.fail(f"{' '.join(map(str, cmd))} exited {res.returncode}\n"
                    f"{res.stdout[-4000:]}\n{res.stderr[-4000:]}")
    return res.stdout


def _cmake_build(build_dir: Path, *options: str, target: str | None = None) -> None:
    _require_tool("cmake", "cmake")
    _run(["cmake", "-S", CONVERTERS, "-B", build_dir, *options])
    _run(["cmake", "--build", build_dir, "-j2"] + (["--target", target] if target else []))


def _host_isas() -> list[str]:
    """ISAs the kernel library must find on this machine, from the kernel's CPU flags."""
    flags = set()
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith(("flags", "Features")):
            flags.update(line.split(":", 1)[1].split())
    isas = []
    if {"avx2", "fma"} <= flags:
        isas.append("avx2")
    if {"avx2", "fma", "avx512vl", "avx512_vnni"} <= flags:
        isas.append("avx512vnni")
    if "asimd" in flags:
        isas.append("neon")
    if "asimddp" in flags:
        isas.append("neon_dotprod")
    return isas


@pytest.fixture(scope="module")
def kernels() -> Kernels:
    if os.environ.get("TFQ_KERNELS_LIB"):
        return Kernels(os.environ["TFQ_KERNELS_LIB"])
    _require_tool("cc", "gcc")
    _cmake_build(BUILD / "native", "-DCMAKE_BUILD_TYPE=Release")
    return Kernels(BUILD / "native" / "libtfq_kernels.so")


# ---- (a) NumPy contract ---------------------------------------------------------------------

def quantize_rows_numpy(x: np.ndarray):
    x = x.astype(np.float32)
    max_abs = np.abs(x).max(axis=1)
    sa = np.where(max_abs > 0, max_abs / np.float32(127), np.float32(1)).astype(np.float32)
    qa = np.clip(np.round(x / sa[:, None]), -127, 127).astype(np.int8)
    return qa, sa


def matmul_q8_numpy(p: PackedWeights, qa: np.ndarray, sa: np.ndarray) -> np.ndarray:
    """y = s_a * SUM_g(s_w[g] * float(ACC_g)) + bias, the float sum in increasing g."""
    q, scales, zp = unpack_weights(p)
    g_size = min(p.group_size, p.k)
    total = np.zeros((qa.shape[0], p.n), np.float32)
    for g in range(p.groups):
        k0, k1 = g * g_size, min(p.k, (g + 1) * g_size)
        w = q[k0:k1].astype(np.int64) - (0 if zp is None else zp[g])
        acc = (qa[:, k0:k1].astype(np.int64) @ w).astype(np.int32)  # exact: |acc| < 2^31
        total = total + scales[g][None, :] * acc.astype(np.float32)
    y = sa[:, None] * total
    if p.bias is not None:
        y = y + p.bias[None, :]
    return y


def linear_f64(p: PackedWeights, x: np.ndarray):
    """Float-activation result in float64, and the sum of |terms| that bounds its rounding."""
    q, scales, zp = unpack_weights(p)
    w = q.astype(np.float64)
    g_size = min(p.group_size, p.k)
    for g in range(p.groups):
        k0, k1 = g * g_size, min(p.k, (g + 1) * g_size)
        w[k0:k1] = (w[k0:k1] - (0 if zp is None else zp[g])) * scales[g]
    bias = np.zeros(p.n) if p.bias is None else p.bias.astype(np.float64)
    return x.astype(np.float64) @ w + bias, np.abs(x.astype(np.float64)) @ np.abs(w) + np.abs(bias)


def _layer(rng, k, n, g, bits, symmetric, f16, bias=True):
    lo, hi = (-(1 << (bits - 1)) + 1, (1 << (bits - 1)) - 1) if symmetric else (0, (1 << bits) - 1)
    groups = num_groups(k, g)
    scales = rng.uniform(1e-3, 0.1, size=(groups, n)).astype(np.float32)
    if f16:
        scales = scales.astype(np.float16).astype(np.float32)
    return pack_weights(
        rng.integers(lo, hi + 1, size=(k, n)), bits, symmetric, g, scales,
        None if symmetric else rng.integers(0, 1 << bits, size=(groups, n)),
        rng.standard_normal(n).astype(np.float32) if bias else None,
        scale_dtype=np.float16 if f16 else np.float32)


def _activations(rng, m, k):
    x = (rng.standard_normal((m, k)) * rng.uniform(0.01, 100, size=(m, 1))).astype(np.float32)
    x[0] = 0.0  # all-zero row: s_a = 1
    if m > 2:   # exact ties: max 127 gives s_a = 1, so x.5 values round half to even
        x[2] = rng.integers(-127, 127, size=k) + 0.5
        x[2, 0] = 127.0
    return x


FORMATS = [(4, True), (4, False), (2, True), (2, False)]
SHAPES = [  # M, K, N, G
    (1, 1, 1, 1), (1, 33, 7, 32), (3, 100, 9, 32), (4, 144, 17, 64), (5, 257, 3, 96),
    (7, 64, 33, 10_000), (16, 300, 5, 48), (64, 128, 31, 128), (65, 75, 8, 75), (2, 1024, 70, 256),
]


@pytest.mark.parametrize("bits,symmetric", FORMATS)
@pytest.mark.parametrize("m,k,n,g", SHAPES)
def test_linear_q8_equals_numpy_contract(kernels, bits, symmetric, m, k, n, g):
    rng = np.random.default_rng(m * 7919 + k * 31 + n + g + bits)
    p = _layer(rng, k, n, g, bits, symmetric, f16=(k % 2 == 0), bias=(n % 3 != 0))
    x = _activations(rng, m, k)
    qa, sa = quantize_rows_numpy(x)
    expect = matmul_q8_numpy(p, qa, sa)

    qa_c, sa_c = kernels.quantize_rows(x)
    np.testing.assert_array_equal(qa_c, qa)
    np.testing.assert_array_equal(sa_c, sa)
    for isa in kernels.available_isas() + ["auto"]:
        np.testing.assert_array_equal(kernels.linear_q8(p, x, isa), expect, err_msg=isa)
        np.testing.assert_array_equal(kernels.matmul_q8(p, qa, sa, isa), expect, err_msg=isa)


@pytest.mark.parametrize("bits,symmetric", FORMATS)
@pytest.mark.parametrize("m,k,n,g", [(1, 33, 7, 32), (2, 257, 9, 64), (3, 144, 5, 144),
                                     (4, 100, 6, 7)])
def test_linear_f32_within_float_rounding(kernels, bits, symmetric, m, k, n, g):
    rng = np.random.default_rng(k + n + bits)
    p = _layer(rng, k, n, g, bits, symmetric, f16=False)
    x = rng.standard_normal((m, k)).astype(np.float32)
    y64, magnitude = linear_f64(p, x)
    # Float32 summation of K + groups + 1 terms: |error| <= terms * eps * SUM|term|.
    tol = (k + p.groups + 2) * np.finfo(np.float32).eps * magnitude
    for isa in kernels.available_isas():
        err = np.abs(kernels.linear_f32(p, x, isa) - y64)
        assert np.all(err <= tol), f"{isa}: max error {err.max()} vs tolerance {tol.min()}"


def test_simd_paths_present_and_selected(kernels):
    """The dispatched path must be a SIMD one on a machine that has the instructions."""
    host = _host_isas()
    assert set(host) <= set(kernels.available_isas()), (host, kernels.available_isas())
    rng = np.random.default_rng(0)
    p = _layer(rng, 256, 8, 64, 4, True, f16=True)
    preference = ["avx512vnni", "avx2", "neon_dotprod", "neon"]
    best = next((isa for isa in preference if isa in host), "ref")
    if os.environ.get("TFQ_KERNELS_ISA") in (None, "", "auto"):
        assert kernels.select_isa(p, 1) == best
    # Groups that are not whole 32-element chunks run the reference.
    assert kernels.select_isa(_layer(rng, 256, 8, 48, 4, True, f16=True), 1) == "ref"


def test_header_round_trip_through_c(kernels):
    rng = np.random.default_rng(1)
    for bits, symmetric in FORMATS:
        p = _layer(rng, 77, 5, 32, bits, symmetric, f16=symmetric)
        fields = kernels.header_fields(p.header())
        assert fields == dict(bits=bits, symmetric=int(symmetric), k=77, n=5, group_size=32,
                              scale_is_f16=int(symmetric))
    with pytest.raises(KernelError, match="header"):
        kernels.header_fields(np.zeros(8, np.int32))


def test_errors_are_reported(kernels):
    rng = np.random.default_rng(2)
    p = _layer(rng, 40, 3, 32, 4, False, f16=False)
    kernels.check_weights(p)
    bad_zp = p.zero_points.copy()
    bad_zp[1, 0] = 255
    bad = PackedWeights(**{**p.__dict__, "zero_points": bad_zp})
    with pytest.raises(KernelError, match="zero point") as err:
        kernels.check_weights(bad)
    assert err.value.status == -7
    # Compute calls do not scan zero points (format.h: K <= 2^16 keeps any byte exact).
    x = rng.standard_normal((3, 40)).astype(np.float32)
    expect = matmul_q8_numpy(bad, *quantize_rows_numpy(x))
    for isa in kernels.available_isas():
        np.testing.assert_array_equal(kernels.linear_q8(bad, x, isa), expect, err_msg=isa)
    short = PackedWeights(**{**p.__dict__, "data": p.data[:2]})
    with pytest.raises(KernelError, match="shorter"):
        kernels.linear_q8(short, np.ones((2, 40), np.float32))
    with pytest.raises(ValueError):
        kernels.linear_q8(p, np.ones((2, 41), np.float32))


# ---- (b) sanitizers -------------------------------------------------------------------------

def test_c_kernel_test_under_asan_ubsan():
    _require_tool("cc", "gcc")
    build = BUILD / "asan"
    # Debug (-O0): the sanitizers check the same source semantics, and the many inlined tile
    # variants compile in about 8 s instead of about 40 s with optimization.
    _cmake_build(build, "-DTFQ_SANITIZE=ON", "-DCMAKE_BUILD_TYPE=Debug", target="tfq_kernel_test")
    env = dict(os.environ, ASAN_OPTIONS="detect_leaks=1:abort_on_error=0",
               UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1")
    cmd = [build / "tfq_kernel_test", "--cases", "250"]
    if _host_isas():
        cmd += ["--require", ",".join(_host_isas())]
    out = _run(cmd, timeout=300, env=env)
    assert " 0 failed" in out.splitlines()[-1], out


def test_litert_op_validation_under_asan_ubsan():
    """TFQ_FULLY_CONNECTED's Run/GetOutputLayouts on fake tensor buffers (no LiteRT needed):
    valid calls equal tfq_linear_q8 bit for bit, every malformed input is reported."""
    _require_tool("cc", "gcc")
    build = BUILD / "asan"
    _cmake_build(build, "-DTFQ_SANITIZE=ON", "-DCMAKE_BUILD_TYPE=Debug", target="tfq_litert_op_test")
    env = dict(os.environ, ASAN_OPTIONS="detect_leaks=1:abort_on_error=0",
               UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1")
    out = _run([build / "tfq_litert_op_test"], timeout=300, env=env)
    assert " 0 failed" in out.splitlines()[-1], out


# ---- (c) aarch64 under qemu -----------------------------------------------------------------

def test_aarch64_neon_kernels_under_qemu():
    if platform.machine() in ("aarch64", "arm64"):
        pytest.fail("this test cross-compiles from x86-64; on aarch64 the native "
                    "test_c_kernel_test_under_asan_ubsan already runs the NEON kernels")
    _require_tool("aarch64-linux-gnu-gcc", "gcc-aarch64-linux-gnu")
    _require_tool("qemu-aarch64", "qemu-user")
    if not (AARCH64_SYSROOT / "lib" / "libc.so.6").exists():
        pytest.fail(f"{AARCH64_SYSROOT}/lib/libc.so.6 missing: install libc6-dev-arm64-cross")
    build = BUILD / "aarch64"
    toolchain = CONVERTERS / "cmake" / "aarch64-linux-gnu.cmake"
    _cmake_build(build, f"-DCMAKE_TOOLCHAIN_FILE={toolchain}", "-DCMAKE_BUILD_TYPE=Release",
                 target="tfq_kernel_test")
    exe = build / "tfq_kernel_test"
    # qemu's default CPU has the dot-product extension: both NEON kernels run against ref.
    out = _run(["qemu-aarch64", "-L", AARCH64_SYSROOT, exe, "--cases", "300",
                "--require", "neon,neon_dotprod"], timeout=300)
    assert out.splitlines()[0] == "isas: ref neon neon_dotprod", out
    assert " 0 failed" in out.splitlines()[-1], out
    # A Cortex-A53 has no SDOT: the runtime check must not offer neon_dotprod.
    out = _run(["qemu-aarch64", "-cpu", "cortex-a53", "-L", AARCH64_SYSROOT, exe, "--cases", "20",
                "--require", "neon"], timeout=300)
    assert out.splitlines()[0] == "isas: ref neon", out
    assert " 0 failed" in out.splitlines()[-1], out
