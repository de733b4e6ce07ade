"""Automatic mixed precision: given a size budget in bytes, choose the bits of every quantizable
kernel from its measured sensitivity.

Sensitivity of a kernel at b bits: the mean squared error of the model's output logits on a few
calibration inputs when only that kernel is quantized (weights; activations stay float, so the
measurement isolates the weight grid), relative to the float logits' mean square. Allocation is
greedy: start every kernel at the highest candidate width, then repeatedly take the one-step
reduction (8 -> 4 or 4 -> 2) with the smallest error increase per byte saved, until the model's
total (size accounting of `size.account`, float leftovers included) fits the budget.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from ..errors import UserError
from .numerics import WeightQuantSpec, fake_quant_weight_np
from .policy import Policy, Rule
from .size import account, effective_spec


@dataclass(frozen=True)
class Choice:
    layer: str
    role: str
    bits: int
    bytes: int
    error: float


def _kernel_matrix(layer, role):
    from .configs import get_kernel, matrix_shape
    kernel = get_kernel(layer, role)
    k, n = matrix_shape(layer, role, kernel.shape)
    return kernel, k, n


def sensitivities(model, inputs: list[np.ndarray], base: WeightQuantSpec, bits=(8, 4, 2),
                  progress: bool = False) -> dict[tuple[str, str], dict[int, float]]:
    """{(layer, role): {bits: relative output error}} for every quantizable kernel."""
    import tensorflow as tf
    from tqdm import tqdm
    from .calibration import calibration_inputs
    from .configs import weight_roles
    inputs = calibration_inputs(model, inputs)  # [1, T, F] arrays, checked
    run = tf.function(lambda x: model(x, training=False),
                      input_signature=[tf.TensorSpec([1, None, inputs[0].shape[-1]], tf.float32)])
    reference = [run(tf.constant(x)).numpy() for x in inputs]
    power = float(np.mean([np.mean(r ** 2) for r in reference])) or 1.0
    kernels = [(layer, role) for layer in model.layers for role in weight_roles(layer)]
    out = {}
    for layer, role in tqdm(kernels, desc="sensitivity", disable=not progress, mininterval=2):
        kernel, k, n = _kernel_matrix(layer, role)
        original = kernel.numpy()
        errs = {}
        for b in bits:
            spec = effective_spec(replace(base, bits=b), k)
            kernel.assign(np.reshape(fake_quant_weight_np(np.reshape(original, (k, n)), spec), original.shape))
            errs[b] = float(np.mean([np.mean((run(tf.constant(x)).numpy() - r) ** 2)
                                     for x, r in zip(inputs, reference)])) / power
        kernel.assign(original)
        out[(layer.name, role)] = errs
    return out


def search(model, budget_bytes: int, inputs: list[np.ndarray], base: WeightQuantSpec | str = "w4-sc64-f16",
           bits=(8, 4, 2), progress: bool = False) -> tuple[Policy, list[Choice]]:
    """A policy (explicit per-kernel rules) whose model fits `budget_bytes`."""
    from .policy import from_name
    if isinstance(base, str):
        base = from_name(base).default
    bits = tuple(sorted(set(bits), reverse=True))
    from .configs import weight_roles
    keys = [(layer.name, role) for layer in model.layers for role in weight_roles(layer)]

    def policy_for(assign: dict) -> Policy:
        rules = []
        for (layer, role), b in assign.items():
            pattern = f"{layer}/{role}" if role != "kernel" or _has_other_roles(model, layer) else layer
            rules.append(Rule(pattern, replace(base, bits=b)))
        return Policy(f"auto-{budget_bytes}", None, tuple(rules))

    # the budget is checked before the sensitivities, which run the model 3 times per kernel
    smallest = account(model, policy_for({key: bits[-1] for key in keys}))
    floor = sum(e.bytes for e in smallest)
    if floor > budget_bytes:
        raise UserError(f"size budget {budget_bytes} bytes is below the smallest model this search can make "
                        f"({floor} bytes with every kernel at {bits[-1]} bits)")
    sens = sensitivities(model, inputs, base, bits, progress)
    assign = {key: bits[0] for key in sens}
    total = sum(e.bytes for e in account(model, policy_for(assign)))
    sizes = {}
    for e in smallest:
        if e.spec is not None:
            sizes[(e.layer, e.role)] = (e.k, e.n)

    def nbytes(key, b):
        from .numerics import packed_weight_bytes
        k, n = sizes[key]
        return packed_weight_bytes(k, n, effective_spec(replace(base, bits=b), k))

    while total > budget_bytes:
        best = None
        for key, b in assign.items():
            i = bits.index(b)
            if i + 1 == len(bits):
                continue
            nb = bits[i + 1]
            saved = nbytes(key, b) - nbytes(key, nb)
            cost = (sens[key][nb] - sens[key][b]) / max(saved, 1)
            if best is None or cost < best[0]:
                best = (cost, key, nb, saved)
        _, key, nb, saved = best
        assign[key] = nb
        total -= saved
    policy = policy_for(assign)
    choices = [Choice(layer, role, b, nbytes((layer, role), b), sens[(layer, role)][b])
               for (layer, role), b in assign.items()]
    return policy, choices


def _has_other_roles(model, layer_name: str) -> bool:
    from .configs import weight_roles
    return len(weight_roles(model.get_layer(layer_name))) > 1


def describe(choices: list[Choice]) -> str:
    lines = ["| layer | kernel | bits | bytes | output error |", "|---|---|---:|---:|---:|"]
    lines += [f"| {c.layer} | {c.role} | {c.bits} | {c.bytes} | {c.error:.2e} |" for c in choices]
    return "\n".join(lines)

