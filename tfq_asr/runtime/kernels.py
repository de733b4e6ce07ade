"""ctypes binding of ``libtfq_kernels.so`` (converters/), for tests, benchmarks and checks.

The library is found at ``$TFQ_KERNELS_LIB`` if set, else ``build/native/libtfq_kernels.so``
in the source tree (built by ``make native``).  Every call passes buffer lengths, so a shape
mistake comes back as a ``KernelError`` naming the C status, never as a stray read.
"""
from __future__ import annotations

import ctypes
import os
from functools import lru_cache
from pathlib import Path

import numpy as np

from tfq_asr.convert.packing import PackedWeights, aligned_zeros

LIBRARY_ENV = "TFQ_KERNELS_LIB"
DEFAULT_LIBRARY = Path(__file__).resolve().parents[2] / "build" / "native" / "libtfq_kernels.so"

# tfq_isa in converters/core/include/tfq/kernels.h
ISAS = {"auto": 0, "ref": 1, "avx2": 2, "avx512vnni": 3, "neon": 4, "neon_dotprod": 5}


class KernelError(RuntimeError):
    """A kernel call returned a negative tfq_status."""

    def __init__(self, function: str, status: int, message: str):
        super().__init__(f"{function}: {message} (status {status})")
        self.status = status


class _PackedWeightsC(ctypes.Structure):
    _fields_ = [
        ("bits", ctypes.c_int32), ("symmetric", ctypes.c_int32), ("k", ctypes.c_int32),
        ("n", ctypes.c_int32), ("group_size", ctypes.c_int32), ("scale_is_f16", ctypes.c_int32),
        ("data", ctypes.c_void_p), ("data_bytes", ctypes.c_size_t),
        ("scales", ctypes.c_void_p), ("scales_bytes", ctypes.c_size_t),
        ("zero_points", ctypes.c_void_p), ("zero_points_bytes", ctypes.c_size_t),
        ("bias", ctypes.c_void_p), ("bias_count", ctypes.c_size_t),
        ("repacked", ctypes.c_void_p), ("repacked_bytes", ctypes.c_size_t),
    ]


def library_path() -> Path:
    return Path(os.environ.get(LIBRARY_ENV) or DEFAULT_LIBRARY)


def _ptr(a: np.ndarray | None):
    return None if a is None else a.ctypes.data


class Kernels:
    """One loaded kernel library."""

    def __init__(self, path: Path | str | None = None):
        path = Path(path) if path is not None else library_path()
        if not path.is_file():
            raise FileNotFoundError(
                f"kernel library {path} not found: run `make native` or set {LIBRARY_ENV}")
        self.path = path
        lib = self._lib = ctypes.CDLL(str(path))
        size, i32, vp = ctypes.c_size_t, ctypes.c_int32, ctypes.c_void_p
        w = ctypes.POINTER(_PackedWeightsC)
        lib.tfq_status_str.restype = ctypes.c_char_p
        lib.tfq_status_str.argtypes = [ctypes.c_int]
        lib.tfq_isa_name.restype = ctypes.c_char_p
        lib.tfq_isa_name.argtypes = [ctypes.c_int]
        lib.tfq_isa_available.argtypes = [ctypes.c_int]
        lib.tfq_select_isa.argtypes = [w, i32]
        lib.tfq_weights_from_header.argtypes = [w, vp, size]
        lib.tfq_weights_check.argtypes = [w]
        lib.tfq_workspace_bytes.restype = size
        lib.tfq_workspace_bytes.argtypes = [w, i32]
        lib.tfq_quantize_rows_q8.argtypes = [vp, size, size, i32, i32, vp, size, size, vp, size]
        lib.tfq_matmul_q8.argtypes = [ctypes.c_int, w, vp, size, size, vp, size, i32, vp, size,
                                      size, vp, size]
        lib.tfq_linear_q8.argtypes = [ctypes.c_int, w, vp, size, size, i32, vp, size, size, vp,
                                      size]
        lib.tfq_linear_f32.argtypes = [ctypes.c_int, w, vp, size, size, i32, vp, size, size]

    # -- helpers -------------------------------------------------------------------------
    def _check(self, function: str, status: int) -> None:
        if status != 0:
            raise KernelError(function, status, self._lib.tfq_status_str(status).decode())

    @staticmethod
    def _isa(isa: str) -> int:
        if isa not in ISAS:
            raise ValueError(f"unknown ISA {isa!r}; one of {sorted(ISAS)}")
        return ISAS[isa]

    @staticmethod
    def _weights(p: PackedWeights) -> tuple[_PackedWeightsC, list]:
        """The C view of p, and the arrays that must outlive the call."""
        keep = [np.ascontiguousarray(p.data), np.ascontiguousarray(p.scales)]
        zp = None if p.zero_points is None else np.ascontiguousarray(p.zero_points, np.uint8)
        bias = None if p.bias is None else np.ascontiguousarray(p.bias, np.float32)
        keep += [zp, bias]
        c = _PackedWeightsC(
            bits=p.bits, symmetric=int(p.symmetric), k=p.k, n=p.n, group_size=p.group_size,
            scale_is_f16=int(p.scale_is_f16),
            data=_ptr(keep[0]), data_bytes=keep[0].nbytes,
            scales=_ptr(keep[1]), scales_bytes=keep[1].nbytes,
            zero_points=_ptr(zp), zero_points_bytes=0 if zp is None else zp.nbytes,
            bias=_ptr(bias), bias_count=0 if bias is None else bias.size)
        return c, keep

    @staticmethod
    def _rows(x, dtype, k: int) -> np.ndarray:
        x = np.ascontiguousarray(x, dtype=dtype)
        if x.ndim != 2 or x.shape[1] != k:
            raise ValueError(f"expected a 2-D array with {k} columns, got {x.shape}")
        return x

    # -- API -----------------------------------------------------------------------------
    def available_isas(self) -> list[str]:
        return [name for name, v in ISAS.items()
                if name != "auto" and self._lib.tfq_isa_available(v)]

    def select_isa(self, p: PackedWeights, m: int) -> str:
        c, _keep = self._weights(p)
        return self._lib.tfq_isa_name(self._lib.tfq_select_isa(ctypes.byref(c), m)).decode()

    def header_fields(self, header) -> dict:
        """Fields the C parser reads from a header tensor (format.h)."""
        h = np.ascontiguousarray(header, dtype=np.int32)
        c = _PackedWeightsC()
        self._check("tfq_weights_from_header",
                    self._lib.tfq_weights_from_header(ctypes.byref(c), _ptr(h), h.size))
        return {name: getattr(c, name) for name in
                ("bits", "symmetric", "k", "n", "group_size", "scale_is_f16")}

    def check_weights(self, p: PackedWeights) -> None:
        c, _keep = self._weights(p)
        self._check("tfq_weights_check", self._lib.tfq_weights_check(ctypes.byref(c)))

    def quantize_rows(self, x) -> tuple[np.ndarray, np.ndarray]:
        """Dynamic int8 quantization per row: ``(q_a int8 [M, K], s_a float32 [M])``."""
        x = np.ascontiguousarray(x, dtype=np.float32)
        if x.ndim != 2:
            raise ValueError(f"x must be 2-D, got {x.shape}")
        m, k = x.shape
        qa = np.zeros((m, k), np.int8)
        sa = np.zeros(m, np.float32)
        self._check("tfq_quantize_rows_q8", self._lib.tfq_quantize_rows_q8(
            _ptr(x), x.size, k, m, k, _ptr(qa), qa.size, k, _ptr(sa), sa.size))
        return qa, sa

    def _workspace(self, c: _PackedWeightsC, m: int) -> np.ndarray:
        nbytes = self._lib.tfq_workspace_bytes(ctypes.byref(c), m)
        if nbytes == 0:  # invalid weights or M: let the compute call name the reason
            nbytes = 64
        return aligned_zeros((nbytes,), np.uint8)

    def matmul_q8(self, p: PackedWeights, qa, sa, isa: str = "auto") -> np.ndarray:
        """``y [M, N]`` from quantized activations ``qa [M, K]`` and ``sa [M]``."""
        c, _keep = self._weights(p)
        qa = self._rows(qa, np.int8, p.k)
        m = qa.shape[0]
        sa = np.ascontiguousarray(sa, dtype=np.float32)
        y = np.zeros((m, p.n), np.float32)
        ws = self._workspace(c, m)
        self._check("tfq_matmul_q8", self._lib.tfq_matmul_q8(
            self._isa(isa), ctypes.byref(c), _ptr(qa), qa.size, p.k, _ptr(sa), sa.size, m,
            _ptr(y), y.size, p.n, _ptr(ws), ws.nbytes))
        return y

    def linear_q8(self, p: PackedWeights, x, isa: str = "auto") -> np.ndarray:
        """The op: quantize ``x [M, K]`` per row, multiply, scale, add bias."""
        c, _keep = self._weights(p)
        x = self._rows(x, np.float32, p.k)
        m = x.shape[0]
        y = np.zeros((m, p.n), np.float32)
        ws = self._workspace(c, m)
        self._check("tfq_linear_q8", self._lib.tfq_linear_q8(
            self._isa(isa), ctypes.byref(c), _ptr(x), x.size, p.k, m, _ptr(y), y.size, p.n,
            _ptr(ws), ws.nbytes))
        return y

    def linear_f32(self, p: PackedWeights, x, isa: str = "auto") -> np.ndarray:
        """Float-activation path: no activation quantization."""
        c, _keep = self._weights(p)
        x = self._rows(x, np.float32, p.k)
        m = x.shape[0]
        y = np.zeros((m, p.n), np.float32)
        self._check("tfq_linear_f32", self._lib.tfq_linear_f32(
            self._isa(isa), ctypes.byref(c), _ptr(x), x.size, p.k, m, _ptr(y), y.size, p.n))
        return y


@lru_cache(maxsize=None)
def load(path: str | None = None) -> Kernels:
    """The kernel library, loaded once per path."""
    return Kernels(path)
