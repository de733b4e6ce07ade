"""Run any .tflite through the LiteRT C API (CompiledModel) with the TFQ custom op registered.

ctypes bindings over ``ai_edge_litert/libLiteRt.so`` of the pinned wheel (ai-edge-litert
2.3.0, which ships no headers: the declarations here are our own, checked against the
exported symbols and the public ``litert/c/`` headers of that release line).  Builtin ops run
on the CPU accelerator (XNNPACK; ``threads`` goes in as the opaque "xnnpack" TOML options),
``TFQ_FULLY_CONNECTED`` runs our C kernels from ``build/native/libtfq_litert.so``
(``$TFQ_LITERT_LIB`` overrides; ``make native`` builds it).

LiteRT ignores the status a custom kernel returns, so the op records its first error in a
context owned by this model; ``run`` reads it after every call and raises ``TfqOpError``
naming the file and the layer.

Variable lengths: an input whose shape differs from the current one is resized with
``LiteRtCompiledModelResizeInputTensor`` (dimensions that the model declares dynamic, -1 in
its shape signature) before the run, and the output buffers follow the new output layouts.
That is only right for models whose output shapes follow from the input shapes when tensors
are allocated.  Where they depend on computed values (a Conformer with a dynamic time axis:
Shape/Range ops), LiteRT 2.3.0 keeps the stale output layout and the run returns wrong values
(and querying the layouts after such a run crashed here), so ``tfq_asr.convert.lowering``
writes fixed input shapes.
"""
from __future__ import annotations

import ctypes
import importlib.util
import json
import os
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from tfq_asr.convert.packing import aligned_zeros
from tfq_asr.errors import RuntimeFailure

LIBRARY_ENV = "TFQ_LITERT_LIB"
DEFAULT_OP_LIBRARY = Path(__file__).resolve().parents[2] / "build" / "native" / "libtfq_litert.so"
OP_NAME = "TFQ_FULLY_CONNECTED"
OP_VERSION = 1
DW_OP_NAME = "TFQ_DEPTHWISE_CONV_1D"  # litert_op.h TFQ_DW_OP_NAME, same library and context
DW_OP_VERSION = 1
CONV_OP_NAME = "TFQ_CONV_2D"  # litert_op.h TFQ_CONV_OP_NAME, same library and context
CONV_OP_VERSION = 1
METADATA_NAME = "tfq_asr"   # JSON written by tfq_asr.convert.lowering: {"layers": [names...]}
MAX_RANK = 8
HW_CPU = 1
LOCK_READ, LOCK_WRITE = 0, 1

# LiteRtElementType -> NumPy
_DTYPES = {1: np.float32, 2: np.int32, 3: np.uint8, 4: np.int64, 6: np.bool_, 7: np.int16,
           9: np.int8, 10: np.float16, 11: np.float64, 16: np.uint32, 17: np.uint16}
_ELEMENT_TYPES = {np.dtype(v): k for k, v in _DTYPES.items()}


# LiteRtStatus values (litert_common.h); the wheel does not export LiteRtGetStatusString.
_STATUS = {1: "invalid argument", 2: "memory allocation failure", 3: "runtime failure",
           4: "missing input tensor", 5: "unsupported", 6: "not found", 7: "timeout expired",
           8: "wrong version", 9: "unknown error", 10: "already exists", 100: "cancelled",
           500: "file I/O error", 501: "invalid flatbuffer", 502: "dynamic loading error",
           503: "serialization error", 504: "compilation error", 1000: "index out of bounds",
           1001: "invalid IR type", 1002: "invalid graph invariant", 1003: "graph modification error",
           5000: "unsupported op shape inferer", 5001: "shape inference failed"}


def status_name(status: int) -> str:
    return f"{_STATUS.get(status, 'unknown status')} (LiteRtStatus {status})"


class LiteRtError(RuntimeFailure):
    """A LiteRT call failed; the message names the file and the call."""


class TfqOpError(LiteRtError):
    """A TFQ custom op reported an error during a run (the output is not valid)."""

    def __init__(self, message: str, layer: str | None, status: int):
        super().__init__(message)
        self.layer = layer
        self.status = status


class _Layout(ctypes.Structure):
    _fields_ = [("rank", ctypes.c_uint, 7), ("has_strides", ctypes.c_uint, 1),
                ("dims", ctypes.c_int32 * MAX_RANK), ("strides", ctypes.c_uint32 * MAX_RANK)]

    def shape(self) -> tuple[int, ...]:
        return tuple(int(self.dims[i]) for i in range(self.rank))


class _TensorType(ctypes.Structure):
    _fields_ = [("element_type", ctypes.c_int32), ("layout", _Layout)]


class _Api(ctypes.Structure):  # tfq_litert_api in converters/litert/include/tfq/litert_op.h
    _fields_ = [("get_tensor_type", ctypes.c_void_p), ("get_packed_size", ctypes.c_void_p),
                ("lock", ctypes.c_void_p), ("unlock", ctypes.c_void_p)]


assert ctypes.sizeof(_Layout) == 68 and ctypes.sizeof(_TensorType) == 72


def litert_library_path() -> Path:
    spec = importlib.util.find_spec("ai_edge_litert")
    if spec is None or not spec.submodule_search_locations:
        raise LiteRtError("the ai-edge-litert package is not installed (pip install ai-edge-litert==2.3.0)")
    return Path(list(spec.submodule_search_locations)[0]) / "libLiteRt.so"


def op_library_path() -> Path:
    return Path(os.environ.get(LIBRARY_ENV) or DEFAULT_OP_LIBRARY)


_LIBS: dict = {}


def _litert():
    if "litert" not in _LIBS:
        path = litert_library_path()
        if not path.is_file():
            raise LiteRtError(f"{path} not found: reinstall ai-edge-litert==2.3.0")
        lib = ctypes.CDLL(str(path))
        vp, sz, st = ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int
        pvp = ctypes.POINTER(ctypes.c_void_p)
        sigs = {
            "LiteRtCreateEnvironment": [ctypes.c_int, vp, pvp],
            "LiteRtCreateModelFromFile": [vp, ctypes.c_char_p, pvp],
            "LiteRtCreateOptions": [pvp],
            "LiteRtSetOptionsHardwareAccelerators": [vp, ctypes.c_int],
            "LiteRtCreateOpaqueOptions": [ctypes.c_char_p, vp, vp, pvp],
            "LiteRtAddOpaqueOptions": [vp, vp],
            "LiteRtAddCustomOpKernelOption": [vp, ctypes.c_char_p, ctypes.c_int, vp, vp],
            "LiteRtCreateCompiledModel": [vp, vp, vp, pvp],
            "LiteRtGetNumModelSignatures": [vp, ctypes.POINTER(sz)],
            "LiteRtGetModelSignature": [vp, sz, pvp],
            "LiteRtGetNumSignatureInputs": [vp, ctypes.POINTER(sz)],
            "LiteRtGetNumSignatureOutputs": [vp, ctypes.POINTER(sz)],
            "LiteRtGetSignatureInputName": [vp, sz, ctypes.POINTER(ctypes.c_char_p)],
            "LiteRtGetSignatureOutputName": [vp, sz, ctypes.POINTER(ctypes.c_char_p)],
            "LiteRtGetSignatureInputTensorByIndex": [vp, sz, pvp],
            "LiteRtGetSignatureOutputTensorByIndex": [vp, sz, pvp],
            "LiteRtGetRankedTensorType": [vp, ctypes.POINTER(_TensorType)],
            "LiteRtCompiledModelResizeInputTensor": [vp, sz, sz, ctypes.POINTER(ctypes.c_int), sz],
            "LiteRtGetCompiledModelOutputTensorLayouts": [vp, sz, sz, ctypes.POINTER(_Layout),
                                                          ctypes.c_bool],
            "LiteRtCreateTensorBufferFromHostMemory": [ctypes.POINTER(_TensorType), vp, sz, vp, pvp],
            "LiteRtRunCompiledModel": [vp, sz, sz, pvp, sz, pvp],
            "LiteRtCompiledModelGetProfiler": [vp, pvp],
            "LiteRtStartProfiler": [vp],
            "LiteRtStopProfiler": [vp],
            "LiteRtResetProfiler": [vp],
            "LiteRtGetProfileSummary": [vp, vp, ctypes.POINTER(ctypes.c_char_p)],
        }
        for name, args in sigs.items():
            fn = getattr(lib, name)
            fn.argtypes, fn.restype = args, st
        for name in ("LiteRtDestroyEnvironment", "LiteRtDestroyModel", "LiteRtDestroyOptions",
                     "LiteRtDestroyCompiledModel", "LiteRtDestroyTensorBuffer"):
            fn = getattr(lib, name)
            fn.argtypes, fn.restype = [vp], None
        _LIBS["litert"] = lib
    return _LIBS["litert"]


def _ops(required: bool):
    """The TFQ op library, or None when it is missing and the model does not need it."""
    if "ops" not in _LIBS:
        path = op_library_path()
        if not path.is_file():
            if required:
                raise LiteRtError(f"the TFQ op library {path} is missing: run `make native` or set "
                                  f"{LIBRARY_ENV}")
            return None
        lib = ctypes.CDLL(str(path))
        lib.tfq_litert_kernel.restype = ctypes.c_void_p
        lib.tfq_litert_op_name.restype = ctypes.c_char_p
        lib.tfq_litert_depthwise_kernel.restype = ctypes.c_void_p
        lib.tfq_litert_depthwise_op_name.restype = ctypes.c_char_p
        lib.tfq_litert_conv_kernel.restype = ctypes.c_void_p
        lib.tfq_litert_conv_op_name.restype = ctypes.c_char_p
        lib.tfq_litert_context_create.argtypes = [ctypes.POINTER(_Api)]
        lib.tfq_litert_context_create.restype = ctypes.c_void_p
        lib.tfq_litert_context_destroy.argtypes = [ctypes.c_void_p]
        lib.tfq_litert_context_destroy.restype = None
        lib.tfq_litert_error.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_size_t,
                                         ctypes.POINTER(ctypes.c_int32), ctypes.POINTER(ctypes.c_int64)]
        lib.tfq_litert_clear_error.argtypes = [ctypes.c_void_p]
        lib.tfq_litert_clear_error.restype = None
        lib.tfq_status_str.argtypes, lib.tfq_status_str.restype = [ctypes.c_int], ctypes.c_char_p
        lib.tfq_tflite_check.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_char_p,
                                         ctypes.c_size_t]
        for got, want in ((lib.tfq_litert_op_name(), OP_NAME), (lib.tfq_litert_depthwise_op_name(), DW_OP_NAME),
                          (lib.tfq_litert_conv_op_name(), CONV_OP_NAME)):
            if got.decode() != want:
                raise LiteRtError(f"{path}: op name {got!r}, expected {want}")
        _LIBS["ops"] = lib
    return _LIBS["ops"]


def check_structure(path: Path | str, data: bytes) -> None:
    """Refuse a damaged .tflite (its bytes `data`) before LiteRT parses it:
    LiteRtCreateModelFromFile follows offsets unchecked and a few damaged files crash the process
    (SIGSEGV) instead of failing. The check is the C streaming core's (tfq_tflite_check in the op
    library); without that library (a model of builtin ops only, `make native` not run) LiteRT's
    own parsing is all."""
    lib = _ops(required=False)
    if lib is None:
        return
    why = ctypes.create_string_buffer(200)
    if not lib.tfq_tflite_check(data, len(data), why, len(why)):
        raise LiteRtError(f"{path}: not a valid .tflite model ({why.value.decode(errors='replace')})")


def read_tfq_metadata(path: Path | str, data: bytes | None = None) -> dict | None:
    """The lowering's JSON metadata of a .tflite (None if absent), and the custom op codes;
    from `data` when the caller has read the file already."""
    from ai_edge_litert import schema_py_generated as schema
    buf = Path(path).read_bytes() if data is None else data
    model = schema.Model.GetRootAs(buf, 0)
    customs = {model.OperatorCodes(i).CustomCode() for i in range(model.OperatorCodesLength())}
    info = {"custom_ops": sorted(c.decode() for c in customs if c)}
    for i in range(model.MetadataLength()):
        md = model.Metadata(i)
        if md.Name() and md.Name().decode() == METADATA_NAME:
            b = model.Buffers(md.Buffer())
            if b.Offset() > 1:
                raw = buf[b.Offset():b.Offset() + b.Size()]
            else:
                raw = b.DataAsNumpy().tobytes()
            info.update(json.loads(raw.decode()))
    return info


class LiteRtModel:
    """One .tflite compiled for the CPU, with TFQ_FULLY_CONNECTED registered.

    ``run(inputs)`` takes a list (signature order) or a dict (by input name) of arrays and
    returns the outputs in signature order.  Not safe for concurrent runs from several threads.
    """

    def __init__(self, path: Path | str, threads: int = 1, signature: int = 0, profile: bool = False):
        self.path = Path(path)
        self.profile = profile
        self._profiler = None
        if self.path.is_dir():
            raise LiteRtError(f"{self.path} is a folder, not a .tflite file")
        if not self.path.is_file():
            raise LiteRtError(f"{self.path}: no such model file")
        if threads < 1:
            raise ValueError(f"threads must be >= 1, got {threads}")
        self.threads = threads
        self._lib = _litert()
        self._env = self._model = self._options = self._compiled = self._ctx = None
        self._buffers: list = []
        self._cache_key = None
        data = self.path.read_bytes()
        check_structure(self.path, data)
        try:
            self._info = read_tfq_metadata(self.path, data)
        except Exception as e:  # not a flatbuffer at all
            raise LiteRtError(f"{self.path}: not a readable .tflite flatbuffer ({e})") from None
        self.layer_names: list[str] = list(self._info.get("layers", []))
        self.uses_tfq_ops = bool({OP_NAME, DW_OP_NAME, CONV_OP_NAME} & set(self._info["custom_ops"]))
        self._open(signature)

    # -- setup ---------------------------------------------------------------------------
    def _check(self, status: int, call: str) -> None:
        if status != 0:
            raise LiteRtError(f"{self.path}: {call} failed: {status_name(status)}")

    def _open(self, signature: int) -> None:
        lib, vp = self._lib, ctypes.c_void_p
        env, model, opts, opaque, compiled = vp(), vp(), vp(), vp(), vp()
        self._check(lib.LiteRtCreateEnvironment(0, None, ctypes.byref(env)), "LiteRtCreateEnvironment")
        self._env = env
        self._check(lib.LiteRtCreateModelFromFile(env, str(self.path).encode(), ctypes.byref(model)),
                    "LiteRtCreateModelFromFile")
        self._model = model
        self._check(lib.LiteRtCreateOptions(ctypes.byref(opts)), "LiteRtCreateOptions")
        self._options = opts
        self._check(lib.LiteRtSetOptionsHardwareAccelerators(opts, HW_CPU),
                    "LiteRtSetOptionsHardwareAccelerators")
        libc = ctypes.CDLL(None)
        libc.strdup.argtypes, libc.strdup.restype = [ctypes.c_char_p], vp
        payload = libc.strdup(f"num_threads = {self.threads}\n".encode())
        self._check(lib.LiteRtCreateOpaqueOptions(b"xnnpack", payload,
                                                  ctypes.cast(libc.free, vp), ctypes.byref(opaque)),
                    "LiteRtCreateOpaqueOptions")
        self._check(lib.LiteRtAddOpaqueOptions(opts, opaque), "LiteRtAddOpaqueOptions")
        if self.profile:  # LiteRT's runtime options travel as TOML under this identifier
            runtime, payload = vp(), libc.strdup(b"enable_profiling = true\n")
            self._check(lib.LiteRtCreateOpaqueOptions(b"runtime_options_string", payload,
                                                      ctypes.cast(libc.free, vp), ctypes.byref(runtime)),
                        "LiteRtCreateOpaqueOptions(runtime)")
            self._check(lib.LiteRtAddOpaqueOptions(opts, runtime), "LiteRtAddOpaqueOptions(runtime)")
        ops = _ops(required=self.uses_tfq_ops)
        if ops is not None:
            api = _Api(*(ctypes.cast(getattr(lib, n), vp).value for n in (
                "LiteRtGetTensorBufferTensorType", "LiteRtGetTensorBufferPackedSize",
                "LiteRtLockTensorBuffer", "LiteRtUnlockTensorBuffer")))
            self._ops = ops
            self._ctx = ops.tfq_litert_context_create(ctypes.byref(api))
            if not self._ctx:
                raise LiteRtError(f"{self.path}: cannot create the TFQ op context")
            for name, version, kernel in ((OP_NAME, OP_VERSION, ops.tfq_litert_kernel()),
                                          (DW_OP_NAME, DW_OP_VERSION, ops.tfq_litert_depthwise_kernel()),
                                          (CONV_OP_NAME, CONV_OP_VERSION, ops.tfq_litert_conv_kernel())):
                self._check(lib.LiteRtAddCustomOpKernelOption(opts, name.encode(), version, kernel, self._ctx),
                            f"LiteRtAddCustomOpKernelOption({name})")
        self._check(lib.LiteRtCreateCompiledModel(env, model, opts, ctypes.byref(compiled)),
                    "LiteRtCreateCompiledModel")
        self._compiled = compiled
        if self.profile:
            profiler = vp()
            self._check(lib.LiteRtCompiledModelGetProfiler(compiled, ctypes.byref(profiler)),
                        "LiteRtCompiledModelGetProfiler")
            self._profiler = profiler
            self._check(lib.LiteRtStartProfiler(profiler), "LiteRtStartProfiler")
        n = ctypes.c_size_t()
        self._check(lib.LiteRtGetNumModelSignatures(model, ctypes.byref(n)), "LiteRtGetNumModelSignatures")
        if signature >= n.value:
            raise LiteRtError(f"{self.path}: signature {signature} requested, the model has {n.value}")
        self._signature = signature
        sig = vp()
        self._check(lib.LiteRtGetModelSignature(model, signature, ctypes.byref(sig)), "LiteRtGetModelSignature")
        self.input_names, self._input_types = self._tensors(sig, "Input")
        self.output_names, self._output_types = self._tensors(sig, "Output")
        self._current = [t.layout.shape() for t in self._input_types]

    def _tensors(self, sig, kind: str):
        lib = self._lib
        n = ctypes.c_size_t()
        self._check(getattr(lib, f"LiteRtGetNumSignature{kind}s")(sig, ctypes.byref(n)), f"LiteRtGetNumSignature{kind}s")
        names, types = [], []
        for i in range(n.value):
            name, tensor, tt = ctypes.c_char_p(), ctypes.c_void_p(), _TensorType()
            self._check(getattr(lib, f"LiteRtGetSignature{kind}Name")(sig, i, ctypes.byref(name)),
                        f"LiteRtGetSignature{kind}Name")
            self._check(getattr(lib, f"LiteRtGetSignature{kind}TensorByIndex")(sig, i, ctypes.byref(tensor)),
                        f"LiteRtGetSignature{kind}TensorByIndex")
            self._check(lib.LiteRtGetRankedTensorType(tensor, ctypes.byref(tt)), "LiteRtGetRankedTensorType")
            if tt.element_type not in _DTYPES:
                raise LiteRtError(f"{self.path}: {kind.lower()} {name.value!r} has unsupported "
                                  f"element type {tt.element_type}")
            names.append(name.value.decode())
            types.append(tt)
        return names, types

    # -- introspection -------------------------------------------------------------------
    @property
    def input_shapes(self) -> list[tuple[int, ...]]:
        """Shapes the model declares (-1 marks a dynamic dimension where the file says so)."""
        return [t.layout.shape() for t in self._input_types]

    @property
    def input_dtypes(self) -> list[np.dtype]:
        return [np.dtype(_DTYPES[t.element_type]) for t in self._input_types]

    @property
    def output_dtypes(self) -> list[np.dtype]:
        return [np.dtype(_DTYPES[t.element_type]) for t in self._output_types]

    def output_shapes(self) -> list[tuple[int, ...]]:
        """Output shapes for the current input shapes."""
        n = len(self.output_names)
        layouts = (_Layout * n)()
        status = self._lib.LiteRtGetCompiledModelOutputTensorLayouts(self._compiled, self._signature, n, layouts, True)
        if status != 0:  # a TFQ op's GetOutputLayouts may have said why (e.g. a bad geometry input)
            self._raise_op_error()
        self._check(status, "LiteRtGetCompiledModelOutputTensorLayouts")
        return [layouts[i].shape() for i in range(n)]

    # -- running -------------------------------------------------------------------------
    def _arrays(self, inputs) -> list[np.ndarray]:
        if isinstance(inputs, Mapping):
            missing = [n for n in self.input_names if n not in inputs]
            extra = [n for n in inputs if n not in self.input_names]
            if missing or extra:
                raise ValueError(f"{self.path}: inputs {self.input_names} expected; missing "
                                 f"{missing}, unknown {extra}")
            inputs = [inputs[n] for n in self.input_names]
        elif isinstance(inputs, np.ndarray):
            inputs = [inputs]
        if len(inputs) != len(self.input_names):
            raise ValueError(f"{self.path}: {len(self.input_names)} inputs expected, got {len(inputs)}")
        out = []
        for name, dt, a in zip(self.input_names, self.input_dtypes, inputs):
            a = np.asarray(a)
            if a.dtype != dt:
                if not np.can_cast(a.dtype, dt, casting="same_kind"):
                    raise ValueError(f"{self.path}: input {name!r} is {dt}, got {a.dtype}")
                a = a.astype(dt)
            out.append(a)
        return out

    def _resize(self, arrays: Sequence[np.ndarray]) -> None:
        for i, (name, a) in enumerate(zip(self.input_names, arrays)):
            if tuple(a.shape) == tuple(self._current[i]):
                continue
            declared = self.input_shapes[i]
            dims = (ctypes.c_int * a.ndim)(*a.shape)
            status = self._lib.LiteRtCompiledModelResizeInputTensor(
                self._compiled, self._signature, i, dims, a.ndim)
            if status != 0:
                raise LiteRtError(f"{self.path}: input {name!r} cannot take shape {a.shape} "
                                  f"(declared {declared}; a file converted by tfq_asr has the fixed "
                                  f"shapes it was converted for: convert with input_shape=... for "
                                  f"another): LiteRtCompiledModelResizeInputTensor failed: "
                                  f"{status_name(status)}")
            self._current[i] = tuple(a.shape)

    def _host_buffer(self, array: np.ndarray, tt: _TensorType):
        t = _TensorType()
        t.element_type = tt.element_type
        t.layout.rank = array.ndim
        for d, v in enumerate(array.shape):
            t.layout.dims[d] = v
        buf = ctypes.c_void_p()
        self._check(self._lib.LiteRtCreateTensorBufferFromHostMemory(
            ctypes.byref(t), array.ctypes.data, max(array.nbytes, 1), None, ctypes.byref(buf)),
            "LiteRtCreateTensorBufferFromHostMemory")
        return buf

    def _release_buffers(self) -> None:
        for b in self._buffers:
            self._lib.LiteRtDestroyTensorBuffer(b)
        self._buffers = []
        self._cache_key = None

    def _prepare(self, arrays):
        """Aligned host arrays and tensor buffers for these input shapes (cached per shape)."""
        key = tuple(tuple(a.shape) for a in arrays)
        if key == self._cache_key:
            return
        self._release_buffers()
        self._resize(arrays)
        ins = [aligned_zeros(a.shape, a.dtype) for a in arrays]
        outs = [aligned_zeros(s, dt) for s, dt in zip(self.output_shapes(), self.output_dtypes)]
        if any(d < 0 for o in outs for d in o.shape):
            raise LiteRtError(f"{self.path}: output shapes {[o.shape for o in outs]} unresolved")
        self._in_arrays, self._out_arrays = ins, outs
        self._buffers = [self._host_buffer(a, t) for a, t in zip(ins, self._input_types)]
        self._buffers += [self._host_buffer(a, t) for a, t in zip(outs, self._output_types)]
        # the C arrays of buffer handles LiteRtRunCompiledModel takes, built once per shape
        self._in_handles = (ctypes.c_void_p * len(ins))(*[b.value for b in self._buffers[:len(ins)]])
        self._out_handles = (ctypes.c_void_p * len(outs))(*[b.value for b in self._buffers[len(ins):]])
        self._cache_key = key

    def run(self, inputs) -> list[np.ndarray]:
        """Outputs (copies) for one set of inputs; raises TfqOpError if a TFQ op failed."""
        self._check_open()
        arrays = self._arrays(inputs)
        self._prepare(arrays)
        for dst, src in zip(self._in_arrays, arrays):
            dst[...] = src
        if self._ctx:
            self._ops.tfq_litert_clear_error(self._ctx)
        self._check(self._lib.LiteRtRunCompiledModel(self._compiled, self._signature, len(self._in_arrays),
                                                     self._in_handles, len(self._out_arrays), self._out_handles),
                    "LiteRtRunCompiledModel")
        self._raise_op_error()
        return [o.copy() for o in self._out_arrays]

    def time_calls(self, inputs, calls: int, clock=None) -> float:
        """Seconds for `calls` back-to-back runs on the same inputs (for benchmarks): the
        inputs are copied in once, each call is one LiteRtRunCompiledModel with nothing copied
        in or out; the op error side channel is checked after the last call.  `clock`: a
        seconds function, time.perf_counter by default (time.thread_time: CPU time of this
        thread, which leaves out time the thread waited for a CPU; single-thread runs only)."""
        import time
        self._check_open()
        clock = clock or time.perf_counter
        if calls < 1:
            raise ValueError(f"calls must be >= 1, got {calls}")
        self.run(inputs)  # prepares buffers and copies the inputs in
        lib, compiled, sig = self._lib, self._compiled, self._signature
        n_in, n_out = len(self._in_arrays), len(self._out_arrays)
        ins, outs = self._in_handles, self._out_handles
        run = lib.LiteRtRunCompiledModel
        t0 = clock()
        for _ in range(calls):
            status = run(compiled, sig, n_in, ins, n_out, outs)
        dt = clock() - t0
        self._check(status, "LiteRtRunCompiledModel")
        self._raise_op_error()
        return dt

    def profile_summary(self, reset: bool = True) -> str:
        """LiteRT's per-op profile of the runs since the last reset (a model opened with
        ``profile=True``): time per op type and per op, as the runtime's summary text."""
        self._check_open()
        if self._profiler is None:
            raise LiteRtError(f"{self.path}: open the model with profile=True to profile it")
        lib = self._lib
        self._check(lib.LiteRtStopProfiler(self._profiler), "LiteRtStopProfiler")
        text = ctypes.c_char_p()
        self._check(lib.LiteRtGetProfileSummary(self._profiler, self._compiled, ctypes.byref(text)),
                    "LiteRtGetProfileSummary")
        summary = (text.value or b"").decode(errors="replace")
        if reset:
            self._check(lib.LiteRtResetProfiler(self._profiler), "LiteRtResetProfiler")
        self._check(lib.LiteRtStartProfiler(self._profiler), "LiteRtStartProfiler")
        return summary

    def profile_by_op_type(self, reset: bool = True) -> list[dict]:
        """The "by node type" part of `profile_summary`: one dict per op type (ops run by
        XNNPACK are "Delegate/..."), heaviest first: count (ops in the graph), avg_ms (per
        call), percent (of the profiled time), calls."""
        rows, inside = [], False
        for line in self.profile_summary(reset).splitlines():
            if "Summary by node type" in line:
                inside = True
                continue
            if inside:
                if line.startswith("=") or (rows and not line.strip()):
                    break
                parts = line.split()
                if len(parts) < 7 or parts[0].startswith("["):
                    continue
                try:
                    calls, pct, avg, count = int(parts[-1]), float(parts[-4].rstrip("%")), float(parts[-5]), int(parts[-6])
                except ValueError:
                    continue
                rows.append({"op": " ".join(parts[:-6]), "count": count, "avg_ms": avg, "percent": pct,
                             "calls": calls})
        return rows

    def op_calls(self) -> int:
        """TFQ op calls of the last run (0 for a model without them)."""
        if not self._ctx:
            return 0
        calls = ctypes.c_int64()
        self._ops.tfq_litert_error(self._ctx, None, 0, None, ctypes.byref(calls))
        return calls.value

    def _raise_op_error(self) -> None:
        if not self._ctx:
            return
        msg = ctypes.create_string_buffer(512)
        layer = ctypes.c_int32()
        status = self._ops.tfq_litert_error(self._ctx, msg, len(msg), ctypes.byref(layer), None)
        if status == 0:
            return
        index = layer.value
        name = self.layer_names[index] if 0 <= index < len(self.layer_names) else None
        op = DW_OP_NAME if name in self._info.get("depthwise_layers", ()) else \
            CONV_OP_NAME if name in self._info.get("conv_layers", ()) else OP_NAME
        where = f"{op} layer {name!r} (#{index})" if name else (f"TFQ op layer #{index}" if index >= 0 else "a TFQ op")
        raise TfqOpError(f"{self.path}: {where}: {msg.value.decode()} "
                         f"({self._ops.tfq_status_str(status).decode()}); the outputs are invalid",
                         name, status)

    # -- cleanup -------------------------------------------------------------------------
    def _check_open(self) -> None:
        if self._lib is None:
            raise LiteRtError(f"{self.path}: the model was closed; load it again to run it")

    def close(self) -> None:
        lib = getattr(self, "_lib", None)
        if lib is None:
            return
        self._release_buffers()
        if self._compiled:
            lib.LiteRtDestroyCompiledModel(self._compiled)
        if self._options:
            lib.LiteRtDestroyOptions(self._options)
        if self._model:
            lib.LiteRtDestroyModel(self._model)
        if self._env:
            lib.LiteRtDestroyEnvironment(self._env)
        if self._ctx:
            self._ops.tfq_litert_context_destroy(self._ctx)
        self._compiled = self._options = self._model = self._env = self._ctx = None
        self._lib = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass
