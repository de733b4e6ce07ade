"""Post-training calibration of a quantized model on a few inputs (real or synthetic):
static int8 activation ranges and data-aware clipping of Dense kernels."""
from __future__ import annotations

import numpy as np

from ..errors import UserError
from .configs import TfqQuantizeWrapper
from .numerics import CLIP_GRID, fake_quant_weight_np

MAX_ROWS = 2048  # input rows kept per layer for the clipping choice


def _input_dims(float_model) -> tuple:
    """The model's one input shape without the batch (None where any length goes)."""
    if len(float_model.inputs) != 1:
        raise UserError(f"model {float_model.name!r} has {len(float_model.inputs)} inputs: calibration "
                        "takes models with one input")
    return tuple(float_model.inputs[0].shape[1:])


def _as_batch(x, index: int, dims: tuple) -> np.ndarray:
    """One calibration input as a batch of one: the model's input without the batch dimension
    ([T, F] features for our recognizers) or with a batch of 1."""
    a = np.asarray(x, dtype=np.float32)
    if a.ndim == len(dims):
        a = a[None]
    fits = a.ndim == len(dims) + 1 and a.shape[0] == 1 and all(
        s > 0 and (d is None or s == d) for s, d in zip(a.shape[1:], dims))
    if not fits:
        want = ", ".join("T" if d is None else str(d) for d in dims)
        raise UserError(f"calibration input {index}: expected a [{want}] or [1, {want}] array (the model's "
                        f"input), got shape {a.shape}")
    if not np.all(np.isfinite(a)):
        raise UserError(f"calibration input {index}: contains NaN or Inf")
    return a


def calibration_inputs(float_model, calibration, limit: int | None = None, seed: int = 0) -> list[np.ndarray]:
    if isinstance(calibration, str):
        if calibration != "synthetic":
            raise UserError(f"calibration={calibration!r}: expected 'synthetic' or a list of inputs")
        from .zero_shot import synthesize
        return [x[None] for x in synthesize(float_model, seed=seed)]
    dims = _input_dims(float_model)
    if isinstance(calibration, np.ndarray) and calibration.ndim <= len(dims):
        # iterating one input would calibrate on its rows, each refused with a puzzling shape
        raise UserError(f"calibration is one array of shape {calibration.shape}: pass a list of inputs "
                        "(e.g. [x]), or an array with one more leading axis")
    data = [_as_batch(x, i, dims) for i, x in enumerate(calibration)]
    if limit:
        data = data[:limit]
    if not data:
        raise UserError("calibration set is empty: pass at least one input (or calibration='synthetic')")
    return data


def collect_layer_inputs(float_model, names: list[str], inputs: list[np.ndarray], progress: bool = False,
                         seed: int = 0) -> dict[str, dict]:
    """For each named layer of the float model: max |input| and a random sample of input rows."""
    import tensorflow as tf
    import tf_keras as keras
    from tqdm import tqdm
    probe = keras.Model(float_model.inputs, [float_model.get_layer(n).input for n in names])
    run = tf.function(lambda x: probe(x, training=False),
                      input_signature=[tf.TensorSpec([1, *_input_dims(float_model)], tf.float32)])
    rng = np.random.default_rng(seed)
    stats = {n: {"max": 0.0, "rows": []} for n in names}
    for x in tqdm(inputs, desc="calibrate", disable=not progress, mininterval=2):
        outs = run(tf.constant(x))
        outs = outs if isinstance(outs, (list, tuple)) else [outs]
        for n, o in zip(names, outs):
            o = o.numpy()
            stats[n]["max"] = max(stats[n]["max"], float(np.max(np.abs(o))))
            rows = o.reshape(-1, o.shape[-1])
            take = min(len(rows), max(1, MAX_ROWS // len(inputs) + 1))
            stats[n]["rows"].append(rows[rng.choice(len(rows), take, replace=False)])
    for n in names:
        stats[n]["rows"] = np.concatenate(stats[n]["rows"])[:MAX_ROWS]
    return stats


def output_error_alpha(w: np.ndarray, x: np.ndarray, spec, current: np.ndarray) -> np.ndarray:
    """Clipping factors minimising the output error ||x (w - w')||^2 of each output channel:
    every channel picks, among the current factors and uniform factors on CLIP_GRID, the one
    with the smallest error (the current factors come first, so the error never grows)."""
    def channel_error(alpha):
        d = x @ (w - fake_quant_weight_np(w, spec, alpha))
        return np.einsum("mn,mn->n", d, d, dtype=np.float64)

    best_alpha = np.array(current, dtype=np.float32)
    if spec.granularity == "tensor":
        return best_alpha  # one factor for the whole tensor: nothing per channel to choose
    best = channel_error(best_alpha)
    for a in CLIP_GRID:
        cand = np.full_like(best_alpha, a)
        err = channel_error(cand)
        better = err < best
        if np.any(better):
            best = np.where(better, err, best)
            best_alpha[..., better] = cand[..., better]
    return best_alpha


def calibrate(q, float_model, calibration, *, data_aware_clipping: bool = True, progress: bool = False,
              limit: int | None = None) -> dict:
    """Calibrate the quantized model `q` (from `quantize(float_model, ...)`) in place."""
    import tf_keras as keras
    targets = [w for w in q.layers if isinstance(w, TfqQuantizeWrapper)
               and (w.quantize_config.activation == "static"
                    or (data_aware_clipping and isinstance(w.layer, keras.layers.Dense)))]
    inputs = calibration_inputs(float_model, calibration, limit)
    if not targets:
        return {"utterances": len(inputs), "layers": 0}
    stats = collect_layer_inputs(float_model, [w.layer.name for w in targets], inputs, progress)
    for w in targets:
        s = stats[w.layer.name]
        if w.quantize_config.activation == "static":
            w.input_max.assign(s["max"])
        if data_aware_clipping and isinstance(w.layer, keras.layers.Dense):
            for weight, quantizer, qvars in w._weight_vars:  # noqa: SLF001
                kernel = weight.numpy()
                qvars["alpha"].assign(output_error_alpha(kernel, s["rows"], quantizer.spec, qvars["alpha"].numpy()))
    return {"utterances": len(inputs), "layers": len(targets)}
