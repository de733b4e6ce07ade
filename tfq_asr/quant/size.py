"""Exact size accounting of a model under a policy: bytes per layer and in total, including
scales, zero points and every weight left in float. Works on untrained models, so the big
literature configurations can be sized without training them."""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from .numerics import WeightQuantSpec, packed_weight_bytes
from .policy import Policy


@dataclass(frozen=True)
class WeightEntry:
    layer: str
    role: str                 # kernel, recurrent_kernel, depthwise_kernel, or a float weight's name
    k: int
    n: int
    spec: WeightQuantSpec | None
    bytes: int

    @property
    def params(self) -> int:
        return self.k * self.n


def matrix_view(layer, weight) -> tuple[str, int, int] | None:
    """(role, K, N) of a quantizable kernel as the numerics see it, or None for float weights.

    Dense [K, N]; Conv2D [kh, kw, cin, cout] -> K = kh*kw*cin; DepthwiseConv1D [k, c, 1]: each
    channel has its own k taps -> K = k, N = c; LSTM kernel [in, 4u], recurrent [u, 4u]."""
    import tf_keras as keras
    role = weight.name.split("/")[-1].split(":")[0]
    shape = tuple(weight.shape)
    if isinstance(layer, keras.layers.DepthwiseConv1D) and role == "depthwise_kernel":
        return role, shape[0], shape[1] * shape[2]
    if isinstance(layer, (keras.layers.Dense, keras.layers.Conv2D, keras.layers.Conv1D)) and role == "kernel":
        return role, int(np.prod(shape[:-1])), shape[-1]
    if isinstance(layer, keras.layers.LSTM) and role in ("kernel", "recurrent_kernel"):
        return role, shape[0], shape[1]
    return None


def effective_spec(spec: WeightQuantSpec, k: int) -> WeightQuantSpec:
    """Groups at least as long as the kernel's K are one group per channel: say so explicitly."""
    if spec.granularity == "group" and spec.group_size >= k:
        return replace(spec, granularity="channel", group_size=None)
    return spec


def account(model, policy: Policy) -> list[WeightEntry]:
    entries = []
    for layer in model.layers:
        for w in layer.weights:
            view = matrix_view(layer, w)
            if view is not None:
                role, k, n = view
                spec = policy.spec_for(layer.name, role)
                if spec is not None:
                    spec = effective_spec(spec, k)
                    entries.append(WeightEntry(layer.name, role, k, n, spec, packed_weight_bytes(k, n, spec)))
                    continue
                entries.append(WeightEntry(layer.name, role, k, n, None, 4 * k * n))
            else:
                size = int(np.prod(w.shape)) if w.shape.rank else 1
                role = w.name.split("/")[-1].split(":")[0]
                entries.append(WeightEntry(layer.name, role, size, 1, None, 4 * size))
    return entries


def size_report(model, policy: Policy) -> dict:
    entries = account(model, policy)
    total = sum(e.bytes for e in entries)
    quantized = [e for e in entries if e.spec is not None]
    q_params = sum(e.params for e in quantized)
    all_params = sum(e.params for e in entries)
    return {
        "policy": policy.to_dict(),
        "total_bytes": total,
        "parameters": all_params,
        "quantized_parameters": q_params,
        "bits_per_weight": 8 * total / max(all_params, 1),
        "float_bytes": 4 * all_params,
        "layers": [{"layer": e.layer, "role": e.role, "shape": [e.k, e.n],
                    "spec": None if e.spec is None else e.spec.to_dict(), "bytes": e.bytes}
                   for e in entries if e.spec is not None or e.params > 1024],
    }


def format_bytes(n: int) -> str:
    return f"{n / 2**20:.2f} MiB" if n >= 2**20 else f"{n / 1024:.1f} KiB"

