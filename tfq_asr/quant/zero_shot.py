"""Zero-shot calibration data (the Q-ASR recipe): synthetic inputs optimised so that the
statistics the model stored during training are reproduced: the batch mean and variance at the
input of every BatchNormalization layer match its moving statistics, and the features match the
per-bin mean and spread of the model's feature normalisation layer. For users with no data.

A model without BatchNormalization (e.g. our LSTM) only constrains the feature statistics; its
synthetic inputs are then Gaussian features with the stored per-bin mean and spread.
"""
from __future__ import annotations

import numpy as np


def _feature_stats(model, num_bins: int):
    for layer in model.layers:
        if hasattr(layer, "mean") and hasattr(layer, "inv_std"):
            return layer.mean.numpy(), 1.0 / np.maximum(layer.inv_std.numpy(), 1e-6)
    return np.zeros(num_bins, np.float32), np.ones(num_bins, np.float32)


def synthesize(model, num: int = 16, frames: int = 400, steps: int = 200, lr: float = 0.05, seed: int = 0,
               progress: bool = False) -> list[np.ndarray]:
    """`num` synthetic [frames, F] inputs for `model` (a float tf_keras model)."""
    import tensorflow as tf
    import tf_keras as keras
    from tqdm import tqdm
    num_bins = int(model.inputs[0].shape[-1])
    mean, std = _feature_stats(model, num_bins)
    rng = np.random.default_rng(seed)
    x0 = mean + std * rng.standard_normal((num, frames, num_bins)).astype(np.float32)
    bns = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    if not bns:
        return list(x0.astype(np.float32))
    probe = keras.Model(model.inputs, [bn.input for bn in bns])
    targets = [(bn.moving_mean, bn.moving_variance) for bn in bns]
    x = tf.Variable(x0.astype(np.float32))
    opt = keras.optimizers.Adam(lr)
    mean_t, std_t = tf.constant(mean, tf.float32), tf.constant(std, tf.float32)

    @tf.function
    def step():
        with tf.GradientTape() as tape:
            outs = probe(x, training=False)
            outs = outs if isinstance(outs, (list, tuple)) else [outs]
            loss = 0.0
            for o, (mu, var) in zip(outs, targets):
                axes = list(range(len(o.shape) - 1))
                m, v = tf.nn.moments(o, axes)
                loss += tf.reduce_mean(tf.square(m - mu)) + tf.reduce_mean(tf.square(tf.sqrt(v + 1e-5) - tf.sqrt(var + 1e-5)))
            fm, fv = tf.nn.moments(x, [0, 1])
            loss += tf.reduce_mean(tf.square((fm - mean_t) / std_t)) + tf.reduce_mean(tf.square(tf.sqrt(fv) / std_t - 1.0))
        opt.apply_gradients([(tape.gradient(loss, x), x)])
        return loss

    bar = tqdm(range(steps), desc="zero-shot inputs", disable=not progress, mininterval=2)
    for _ in bar:
        loss = step()
        bar.set_postfix(loss=f"{float(loss):.4f}")
    return list(x.numpy())
