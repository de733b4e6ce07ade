"""The packed weight format (converters/core/include/tfq/format.h) in NumPy: round trips,
fixed golden bytes so the bit order cannot change unnoticed, sizes and input checks."""
import numpy as np
import pytest

from tfq_asr.convert.packing import (BUFFER_ALIGN, HEADER_MAGIC, PackedWeights, bits_per_weight,
                                     num_groups, pack_weights, packed_size, row_bytes,
                                     unpack_weights, value_range)

FORMATS = [(4, True), (4, False), (2, True), (2, False)]
SHAPES = [(1, 1, 1), (5, 3, 32), (31, 2, 8), (33, 7, 32), (64, 4, 64), (100, 9, 48),
          (144, 5, 32), (257, 3, 256), (300, 2, 10_000), (1000, 3, 128)]


def _random_layer(rng, k, n, g, bits, symmetric, scale_dtype=np.float32):
    lo, hi = value_range(bits, symmetric)
    q = rng.integers(lo, hi + 1, size=(k, n))
    groups = num_groups(k, g)
    scales = rng.uniform(0.01, 1.0, size=(groups, n)).astype(scale_dtype).astype(np.float32)
    zp = None if symmetric else rng.integers(0, 1 << bits, size=(groups, n))
    return q, scales, zp


@pytest.mark.parametrize("bits,symmetric", FORMATS)
@pytest.mark.parametrize("k,n,g", SHAPES)
def test_round_trip(bits, symmetric, k, n, g):
    rng = np.random.default_rng(k * 1000 + n * 10 + bits)
    for scale_dtype in (np.float32, np.float16):
        q, scales, zp = _random_layer(rng, k, n, g, bits, symmetric, scale_dtype)
        bias = rng.standard_normal(n).astype(np.float32)
        p = pack_weights(q, bits, symmetric, g, scales, zp, bias, scale_dtype=scale_dtype)
        assert p.data.shape == (n, row_bytes(k, bits)) and p.data.dtype == np.uint8
        assert p.scales.dtype == scale_dtype and p.scales.shape == (num_groups(k, g), n)
        for a in (p.data, p.scales, p.zero_points, p.bias):
            assert a is None or a.ctypes.data % BUFFER_ALIGN == 0
        q2, s2, zp2 = unpack_weights(p)
        np.testing.assert_array_equal(q2, q)
        np.testing.assert_array_equal(s2, scales)
        if symmetric:
            assert zp2 is None and p.zero_points is None
        else:
            np.testing.assert_array_equal(zp2, zp)
        assert p.size().total == p.data.nbytes + p.scales.nbytes + (
            0 if zp is None else p.zero_points.nbytes) + p.bias.nbytes


def test_golden_bytes_int4():
    # Column n is row n of data; element 2i in the low nibble, 2i+1 in the high nibble.
    q = np.array([[1, 0], [-1, 2], [7, -3], [-8, 4], [3, -7]])
    p = pack_weights(q, 4, True, 32, np.ones((1, 2)))
    expect = np.zeros((2, 16), np.uint8)
    expect[0, :3] = [0xF1, 0x87, 0x03]
    expect[1, :3] = [0x20, 0x4D, 0x09]
    np.testing.assert_array_equal(p.data, expect)

    qa = np.array([[0], [15], [9], [6], [1]])
    pa = pack_weights(qa, 4, False, 2, np.ones((3, 1)), zero_points=np.array([[8], [3], [0]]))
    np.testing.assert_array_equal(pa.data[0, :3], [0xF0, 0x69, 0x01])
    np.testing.assert_array_equal(pa.zero_points, [[8], [3], [0]])


def test_golden_bytes_int2():
    # Element 4i + j in bits 2j..2j+1 of byte i.
    q = np.array([[1, 0], [-1, 1], [0, -1], [-2, 1], [1, 0]])
    p = pack_weights(q, 2, True, 32, np.ones((1, 2)))
    expect = np.zeros((2, 8), np.uint8)
    expect[0, :2] = [0x8D, 0x01]
    expect[1, :2] = [0x74, 0x00]
    np.testing.assert_array_equal(p.data, expect)

    qa = np.array([[3], [0], [1], [2], [3], [3]])
    pa = pack_weights(qa, 2, False, 4, np.ones((2, 1)), zero_points=np.array([[2], [1]]))
    np.testing.assert_array_equal(pa.data[0, :2], [0x93, 0x0F])


def test_header_and_sizes():
    p = pack_weights(np.zeros((144, 10), int), 2, False, 32, np.ones((5, 10)),
                     zero_points=np.ones((5, 10), int), scale_dtype=np.float16)
    np.testing.assert_array_equal(p.header(), [HEADER_MAGIC, 1, 2, 0, 144, 10, 32, 1])
    size = packed_size(144, 10, 2, 32, False, np.float16)
    assert (size.data, size.scales, size.zero_points) == (10 * 40, 10 * 5 * 2, 10 * 5)
    # 2 * 160/144 for padding, 16 * 5/144 for scales and 8 * 5/144 for zero points (format.h)
    assert bits_per_weight(144, 10, 2, 32, False, np.float16) == pytest.approx(
        2 * 160 / 144 + 16 * 5 / 144 + 8 * 5 / 144)
    assert bits_per_weight(1024, 64, 4, 128, True, np.float16) == pytest.approx(4.125)


@pytest.mark.parametrize("bad", [
    dict(q=np.full((4, 2), 8), bits=4, symmetric=True),             # out of int4 range
    dict(q=np.full((4, 2), -1), bits=4, symmetric=False),           # negative unsigned
    dict(q=np.zeros((4, 2), int), bits=3, symmetric=True),          # unsupported width
    dict(q=np.zeros((4, 2)), bits=4, symmetric=True),               # float weights
    dict(q=np.zeros((4, 2), int), bits=4, symmetric=False),         # zero points missing
    dict(q=np.zeros((4, 2), int), bits=4, symmetric=True, scales=np.ones((2, 2))),
    dict(q=np.zeros((4, 2), int), bits=4, symmetric=True, scale_dtype=np.float16,
         scales=np.full((1, 2), 0.1)),                             # not an f16 value
    dict(q=np.zeros((4, 2), int), bits=2, symmetric=False, zero_points=np.full((1, 2), 4)),
])
def test_pack_rejects(bad):
    args = dict(group_size=4, scales=np.ones((1, 2)))
    args.update(bad)
    with pytest.raises(ValueError):
        pack_weights(**args)


def test_unpack_rejects_nonzero_padding():
    p = pack_weights(np.ones((5, 1), int), 4, True, 32, np.ones((1, 1)))
    data = p.data.copy()
    data[0, -1] = 0x10
    bad = PackedWeights(**{**p.__dict__, "data": data})
    with pytest.raises(ValueError, match="padding"):
        unpack_weights(bad)


@pytest.mark.parametrize("bits,k", [(4, 144), (2, 144), (4, 15), (2, 15), (2, 64), (4, 1)])
def test_dense_rows_keep_the_weights_and_drop_the_padding(bits, k):
    """Format version 2 (what files store): rows of ceil(K * bits / 8) bytes, the same elements,
    the header says version 2, and unpacking gives the same weights."""
    from tfq_asr.convert.packing import FORMAT_VERSION_DENSE, dense_rows, row_bytes_dense
    rng = np.random.default_rng(k * bits)
    n, lo, hi = 7, -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    q = rng.integers(lo, hi + 1, size=(k, n))
    p = pack_weights(q, bits, True, k, np.ones((1, n), np.float32))
    d = dense_rows(p)
    assert d.data.shape == (n, row_bytes_dense(k, bits)) == (n, -(-k * bits // 8))
    assert d.data.ctypes.data % 64 == 0 and d.header()[1] == FORMAT_VERSION_DENSE
    np.testing.assert_array_equal(d.data, p.data[:, :d.data.shape[1]])
    assert d.size().data == d.data.size < p.size().data or k % 32 == 0
    np.testing.assert_array_equal(unpack_weights(d)[0], q)


@pytest.mark.parametrize("bits,symmetric", FORMATS)
@pytest.mark.parametrize("lead", [(7,), (1, 7), (13,)])
def test_op_blob_holds_every_section_aligned(bits, symmetric, lead):
    """The op blob (litert_op.h): the descriptor words, each section's bytes at a 64-byte
    aligned offset in order, the leading dims kept and the byte count padded up to a multiple
    of them; with_params changes the params only."""
    from tfq_asr.convert import op_blob
    from tfq_asr.convert.packing import dense_rows
    rng = np.random.default_rng(bits + 10 * symmetric)
    q, scales, zp = _random_layer(rng, 70, 7, 32, bits, symmetric)
    p = dense_rows(pack_weights(q, bits, symmetric, 32, scales, zp))
    bias = rng.normal(size=7).astype(np.float32)
    blob = op_blob.build(p, [1, 2, 5, 9], bias, lead)
    assert blob.dtype == np.uint8 and blob.shape[:-1] == lead and blob.size % int(np.prod(lead)) == 0
    words = blob.reshape(-1)[:4 * op_blob.WORDS].view(np.int32)
    assert words[0] == op_blob.MAGIC and words[1] == op_blob.VERSION and not words[26:].any()
    offsets = words[op_blob.SECTIONS_WORD::2][:4]
    present = [o for o in offsets if o]
    assert all(o % 64 == 0 for o in present) and present == sorted(present) and present[0] >= 128
    parts = op_blob.read(blob)
    np.testing.assert_array_equal(parts.header, p.header())
    assert list(parts.params) == [1, 2, 5, 9, 0, 0, 0, 0] and parts.lead_dims == lead
    assert parts.sections["data"] == p.data.tobytes() and parts.sections["scales"] == p.scales.tobytes()
    assert parts.sections["zero_points"] == (None if symmetric else p.zero_points.tobytes())
    assert parts.sections["bias"] == bias.tobytes()
    assert op_blob.build(p, [1, 2, 0, 9], None, lead).size < blob.size  # no bias section
    other = op_blob.with_params(blob, [1, 3, 5, 9, 4])
    assert other.shape == blob.shape and list(op_blob.read(other).params) == [1, 3, 5, 9, 4, 0, 0, 0]
    assert op_blob.read(other).sections == parts.sections and list(op_blob.read(blob).params)[1] == 2
    with pytest.raises(ValueError, match="at most 8"):
        op_blob.build(p, list(range(9)), bias, lead)
