"""Packed int4/int2 weights of the TFQ custom ops, in NumPy.

The layout is described once, in ``converters/core/include/tfq/format.h``; in short:

* ``data``: uint8 ``[N][row_bytes]``, the weights transposed (one row per output channel),
  ``row_bytes = K_pad * bits / 8`` with ``K_pad`` = K rounded up to a multiple of 32.
  Element k of a row sits in byte ``k // 2`` (int4: low nibble for even k, high nibble for odd
  k, as TFLite INT4) or ``k // 4`` (int2: bits ``2*(k%4)`` and up).  Symmetric values are
  b-bit two's complement, asymmetric values unsigned.  Padding elements are zero bits and never
  contribute to a result.
* ``scales``: ``[groups][N]`` float32 or float16, ``s_w[g][n]`` at ``[g, n]``.
* ``zero_points``: uint8 ``[groups][N]``, asymmetric only.
* ``bias``: float32 ``[N]`` or None.
* ``header()``: the int32 parameters read by the C ``tfq_weights_from_header`` (in a file, words 2..9
  of the op blob, ``tfq_asr.convert.op_blob``).
* ``dense_rows(p)``: the same layer with rows of ``ceil(K * bits / 8)`` bytes (format version 2),
  what the lowering writes into files; the ops expand them to the padded rows once.

Every array is allocated at a 64-byte aligned address.  Arguments and results use the
numerics contract's orientation: ``q[k, n]``, ``scales[g, n]``, ``zero_points[g, n]``.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

FORMAT_VERSION = 1        # padded rows (what the kernels read)
FORMAT_VERSION_DENSE = 2  # dense rows in a file, expanded by the ops (format.h)
HEADER_MAGIC = 0x31514654  # "TFQ1" read as a little-endian int32
HEADER_COUNT = 8
K_ALIGN = 32
BUFFER_ALIGN = 64
MAX_K = 1 << 16  # keeps every int32 sum of the kernels exact (format.h)
MAX_N = 1 << 24
SUPPORTED_BITS = (4, 2)


def k_pad(k: int) -> int:
    """K rounded up to the row padding unit (32 elements)."""
    return -(-k // K_ALIGN) * K_ALIGN


def row_bytes(k: int, bits: int) -> int:
    return k_pad(k) * bits // 8


def row_bytes_dense(k: int, bits: int) -> int:
    """Bytes of a row in format version 2: no padding past the byte holding element K-1."""
    return -(-k * bits // 8)


def num_groups(k: int, group_size: int) -> int:
    return -(-k // group_size)


def aligned_zeros(shape, dtype) -> np.ndarray:
    """Zero-filled array whose data starts at a 64-byte aligned address."""
    dtype = np.dtype(dtype)
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    raw = np.zeros(nbytes + BUFFER_ALIGN, dtype=np.uint8)
    offset = (-raw.ctypes.data) % BUFFER_ALIGN
    return raw[offset:offset + nbytes].view(dtype).reshape(shape)


def _aligned_copy(a: np.ndarray, dtype) -> np.ndarray:
    out = aligned_zeros(a.shape, dtype)
    out[...] = a
    return out


@dataclass(frozen=True)
class PackedSize:
    """Bytes of each buffer of one packed layer."""

    data: int
    scales: int
    zero_points: int
    bias: int

    @property
    def total(self) -> int:
        return self.data + self.scales + self.zero_points + self.bias


def packed_size(k: int, n: int, bits: int, group_size: int, symmetric: bool,
                scale_dtype=np.float32, with_bias: bool = False, dense: bool = False) -> PackedSize:
    """Sizes of the buffers for a K x N layer, without building it (dense: version 2 rows)."""
    _check_format(k, n, bits, group_size)
    params = n * num_groups(k, group_size)
    return PackedSize(
        data=n * (row_bytes_dense(k, bits) if dense else row_bytes(k, bits)),
        scales=params * np.dtype(scale_dtype).itemsize,
        zero_points=0 if symmetric else params,
        bias=4 * n if with_bias else 0,
    )


def bits_per_weight(k: int, n: int, bits: int, group_size: int, symmetric: bool,
                    scale_dtype=np.float32) -> float:
    """Storage per weight, padding, scales and zero points included (bias excluded)."""
    return 8.0 * packed_size(k, n, bits, group_size, symmetric, scale_dtype).total / (k * n)


@dataclass(frozen=True)
class PackedWeights:
    bits: int
    symmetric: bool
    k: int
    n: int
    group_size: int
    data: np.ndarray           # uint8 [n, row_bytes]
    scales: np.ndarray         # float32 or float16 [groups, n]
    zero_points: np.ndarray | None  # uint8 [groups, n], asymmetric only
    bias: np.ndarray | None    # float32 [n]
    dense: bool = False        # rows of row_bytes_dense (format version 2), see dense_rows

    @property
    def groups(self) -> int:
        return num_groups(self.k, self.group_size)

    @property
    def row_bytes(self) -> int:
        return row_bytes_dense(self.k, self.bits) if self.dense else row_bytes(self.k, self.bits)

    @property
    def scale_is_f16(self) -> bool:
        return self.scales.dtype == np.float16

    def header(self) -> np.ndarray:
        """The int32 parameters of the layer (layout in format.h)."""
        return np.array([HEADER_MAGIC, FORMAT_VERSION_DENSE if self.dense else FORMAT_VERSION, self.bits, int(self.symmetric), self.k,
                         self.n, self.group_size, int(self.scale_is_f16)], dtype=np.int32)

    def size(self) -> PackedSize:
        return packed_size(self.k, self.n, self.bits, self.group_size, self.symmetric,
                           self.scales.dtype, self.bias is not None, self.dense)


def dense_rows(p: PackedWeights) -> PackedWeights:
    """The layer with its rows cut to ceil(K * bits / 8) bytes (format version 2): what files
    store; the ops expand it to the padded rows the kernels read (tfq_expand_rows)."""
    if p.dense:
        return p
    width = row_bytes_dense(p.k, p.bits)
    data = aligned_zeros((p.n, width), np.uint8)
    data[...] = p.data[:, :width]  # padding elements are zero bits, so the last byte is exact
    return PackedWeights(bits=p.bits, symmetric=p.symmetric, k=p.k, n=p.n, group_size=p.group_size,
                         data=data, scales=p.scales, zero_points=p.zero_points, bias=p.bias, dense=True)


def _check_format(k: int, n: int, bits: int, group_size: int) -> None:
    if bits not in SUPPORTED_BITS:
        raise ValueError(f"bits must be one of {SUPPORTED_BITS}, got {bits}")
    if not 1 <= k <= MAX_K or not 1 <= n <= MAX_N:
        raise ValueError(f"K={k}, N={n} out of range (1..{MAX_K}, 1..{MAX_N})")
    if not 1 <= group_size <= np.iinfo(np.int32).max:
        raise ValueError(f"group_size must be a positive int32, got {group_size}")


def value_range(bits: int, symmetric: bool) -> tuple[int, int]:
    """Integer values the format stores: b-bit two's complement or unsigned."""
    if symmetric:
        return -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    return 0, (1 << bits) - 1


def pack_weights(q, bits: int, symmetric: bool, group_size: int, scales, zero_points=None,
                 bias=None, scale_dtype=np.float32) -> PackedWeights:
    """Pack integer weights ``q[k, n]`` with ``scales[g, n]`` (and ``zero_points[g, n]``).

    ``scale_dtype`` float16 requires scales already rounded to float16 (checked), so the
    stored value is the one the quantizer used.
    """
    q = np.asarray(q)
    if q.ndim != 2 or not np.issubdtype(q.dtype, np.integer):
        raise ValueError(f"q must be a 2-D integer array [K, N], got {q.dtype} {q.shape}")
    k, n = q.shape
    _check_format(k, n, bits, group_size)
    lo, hi = value_range(bits, symmetric)
    if q.size and (q.min() < lo or q.max() > hi):
        raise ValueError(f"weights outside {lo}..{hi} for {bits}-bit "
                         f"{'symmetric' if symmetric else 'asymmetric'}: {q.min()}..{q.max()}")
    groups = num_groups(k, group_size)
    scales = np.asarray(scales, dtype=np.float32)
    if scales.shape != (groups, n):
        raise ValueError(f"scales must be [groups={groups}, N={n}], got {scales.shape}")
    scale_dtype = np.dtype(scale_dtype)
    if scale_dtype not in (np.float32, np.float16):
        raise ValueError(f"scale_dtype must be float32 or float16, got {scale_dtype}")
    if scale_dtype == np.float16:
        rounded = scales.astype(np.float16)
        if not np.array_equal(rounded.astype(np.float32), scales):
            raise ValueError("scales are not float16 values; round them in the quantizer first")
    if symmetric:
        if zero_points is not None:
            raise ValueError("symmetric weights take no zero points")
        zp = None
    else:
        if zero_points is None:
            raise ValueError("asymmetric weights need zero_points [groups, N]")
        zero_points = np.asarray(zero_points)
        if zero_points.shape != (groups, n):
            raise ValueError(f"zero_points must be [groups={groups}, N={n}], "
                             f"got {zero_points.shape}")
        if zero_points.min() < 0 or zero_points.max() > (1 << bits) - 1:
            raise ValueError(f"zero points outside 0..{(1 << bits) - 1}")
        zp = _aligned_copy(zero_points, np.uint8)
    if bias is not None:
        bias = np.asarray(bias, dtype=np.float32)
        if bias.shape != (n,):
            raise ValueError(f"bias must be [N={n}], got {bias.shape}")
        bias = _aligned_copy(bias, np.float32)

    per_byte = 8 // bits
    fields = np.zeros((n, k_pad(k)), dtype=np.uint8)
    fields[:, :k] = (q.T.astype(np.int64) & ((1 << bits) - 1)).astype(np.uint8)
    fields = fields.reshape(n, -1, per_byte)
    shifts = (np.arange(per_byte, dtype=np.uint8) * bits)
    data = aligned_zeros((n, row_bytes(k, bits)), np.uint8)
    data[...] = np.bitwise_or.reduce(fields << shifts, axis=2)
    return PackedWeights(bits=bits, symmetric=bool(symmetric), k=k, n=n, group_size=group_size,
                         data=data, scales=_aligned_copy(scales, scale_dtype),
                         zero_points=zp, bias=bias)


def unpack_weights(p: PackedWeights):
    """Inverse of pack_weights: ``(q[k, n] int8, scales[g, n] float32, zero_points[g, n] or None)``.

    Checks that the buffers have the sizes the header implies and that padding is zero.
    """
    _check_format(p.k, p.n, p.bits, p.group_size)
    if p.data.shape != (p.n, p.row_bytes) or p.data.dtype != np.uint8:
        raise ValueError(f"data must be uint8 [{p.n}, {p.row_bytes}], got {p.data.dtype} "
                         f"{p.data.shape}")
    if p.scales.shape != (p.groups, p.n):
        raise ValueError(f"scales must be [{p.groups}, {p.n}], got {p.scales.shape}")
    per_byte = 8 // p.bits
    mask = (1 << p.bits) - 1
    shifts = np.arange(per_byte, dtype=np.uint8) * p.bits
    fields = ((p.data[:, :, None] >> shifts) & mask).reshape(p.n, -1)
    if fields[:, p.k:].any():
        raise ValueError("padding elements past K are not zero")
    values = fields[:, :p.k].astype(np.int16)
    if p.symmetric:
        values = np.where(values >= (1 << (p.bits - 1)), values - (1 << p.bits), values)
    zp = None
    if not p.symmetric:
        if p.zero_points is None or p.zero_points.shape != (p.groups, p.n):
            raise ValueError(f"zero_points must be [{p.groups}, {p.n}]")
        zp = p.zero_points.astype(np.int32)
    return values.T.astype(np.int8), p.scales.astype(np.float32), zp
