"""Quantization-aware training: fine-tune a quantized model (from `quantize`) with CTC through
`model.fit`. The forward pass is the quantized model's (fake-quant weights with fixed clipping
factors, int8 inputs of Dense layers); gradients pass straight through the rounding.

BatchNormalization layers are frozen (inference statistics, no updates): their statistics
belong to the float model the quantizers were fitted to, and zero-shot calibration relies on
them staying put.
"""
from __future__ import annotations

import numpy as np
import tensorflow as tf
import tf_keras as keras

from ..errors import UserError


class CtcFitModel(keras.Model):
    """Wraps a recognizer (features -> logits) so `fit` trains it with CTC on
    (features, labels, feature_lengths, label_lengths) batches."""

    def __init__(self, net, output_length, clip_norm: float = 5.0, **kwargs):
        super().__init__(**kwargs)
        self.net = net
        self.output_length = output_length
        self.clip_norm = clip_norm

    def call(self, x, training=False):
        return self.net(x, training=training)

    def _loss(self, data, training):
        x, y, xlen, ylen = data
        logits = self.net(x, training=training)
        llen = self.output_length(xlen)
        per_utt = tf.nn.ctc_loss(labels=y, logits=logits, label_length=ylen, logit_length=llen,
                                 logits_time_major=False, blank_index=0)
        return tf.reduce_mean(per_utt / tf.maximum(tf.cast(ylen, tf.float32), 1.0))

    def train_step(self, data):
        with tf.GradientTape() as tape:
            loss = self._loss(data, True)
        variables = self.net.trainable_weights
        grads = tape.gradient(loss, variables)
        grads, norm = tf.clip_by_global_norm(grads, self.clip_norm)
        self.optimizer.apply_gradients(zip(grads, variables))
        return {"loss": loss, "grad_norm": norm}

    def test_step(self, data):
        return {"loss": self._loss(data, False)}


def freeze_batch_norm(model) -> int:
    n = 0
    for layer in model.layers:
        inner = getattr(layer, "layer", layer)
        if isinstance(inner, keras.layers.BatchNormalization):
            layer.trainable = False
            n += 1
    return n


def batches(train, steps: int, batch_frames: int, seed: int = 0, augment: dict | None = None):
    """tf.data pipeline of padded CTC batches from a FeatureSet (the float trainer's batching
    and augmentation, so QAT sees the same distribution)."""
    from ..training import TrainConfig, make_batches, pad_batch
    cfg = TrainConfig(batch_frames=batch_frames, seed=seed, **(augment or {}))
    lengths = train.lengths()
    num_bins = train.feats.shape[1]

    def gen():
        epoch = 0
        produced = 0
        while produced < steps:
            rng = np.random.default_rng([seed, 7919, epoch])
            for idx in make_batches(lengths, cfg, epoch):
                yield pad_batch(train, idx, rng, cfg)
                produced += 1
                if produced >= steps:
                    return
            epoch += 1

    spec = (tf.TensorSpec([None, None, num_bins], tf.float32), tf.TensorSpec([None, None], tf.int32),
            tf.TensorSpec([None], tf.int32), tf.TensorSpec([None], tf.int32))
    return tf.data.Dataset.from_generator(gen, output_signature=spec).prefetch(2)


def qat_finetune(q, output_length, train, steps: int, lr: float = 2e-4, batch_frames: int = 6400,
                 seed: int = 0, warmup: int = 100, augment: dict | None = None, callbacks=None, verbose=1):
    """Fine-tune the quantized model `q` in place for `steps` batches of `train` (a FeatureSet).
    `output_length(num_frames)` maps feature frames to logit frames. Returns the Keras History."""
    if steps <= 0:
        raise UserError(f"QAT steps must be positive, got {steps}")
    if len(train) == 0:
        raise UserError("QAT training set is empty")
    tf.random.set_seed(seed)
    freeze_batch_norm(q)
    final = lr * 0.05
    schedule = keras.optimizers.schedules.CosineDecay(0.0, max(steps - warmup, 1), alpha=final / lr,
                                                      warmup_target=lr, warmup_steps=warmup)
    fit_model = CtcFitModel(q, output_length)
    fit_model.compile(optimizer=keras.optimizers.Adam(schedule, beta_2=0.98, epsilon=1e-9))
    return fit_model.fit(batches(train, steps, batch_frames, seed, augment), epochs=1, steps_per_epoch=steps,
                         callbacks=callbacks, verbose=verbose)
