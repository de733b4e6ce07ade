"""CTC training loop: length-bucketed batches, SpecAugment, warmup + cosine learning rate,
checkpoints every few minutes (resumable to the step), dev-set WER, best model exported as a
model folder. Runs under any tf.distribute strategy (the default one on a single CPU).
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import tensorflow as tf
import tf_keras as keras

from .errors import UserError
from .features import FeatureSet
from .frontend import LOG_FLOOR
from .models import AsrModel, build_model, output_length, save_model

PAD_VALUE = float(np.log(LOG_FLOOR))  # padding looks like digital silence


@dataclass
class TrainConfig:
    steps: int = 20000
    batch_frames: int = 6400        # frames (10 ms) per batch, padding included
    max_batch: int = 48
    peak_lr: float = 1.5e-3
    warmup: int = 1000
    final_lr_frac: float = 0.02
    weight_decay: float = 1e-6
    clip_norm: float = 5.0
    freq_masks: int = 2
    freq_mask_width: int = 15
    time_masks: int = 2
    time_mask_frac: float = 0.05
    # Voice augmentation: held-out test voices differ from the training ones in vocal-tract
    # length, brightness and speaking rate, so warp the mel axis (VTLP-like), tilt the
    # spectrum and stretch time by random per-utterance amounts. 0 disables each.
    freq_warp: float = 0.0          # mel axis scaled by a factor in [1 - w, 1 + w]
    spectral_tilt: float = 0.0      # log-mel += slope * (bin / bins - 0.5), slope in [-t, t]
    time_stretch: float = 0.0       # frames resampled by a factor in [1 - s, 1 + s]
    seed: int = 0
    eval_every: int = 1000
    eval_utterances: int = 200
    checkpoint_minutes: float = 5.0
    max_minutes: float = 0.0        # stop (and export) after this much wall time; 0 = no limit
    extra: dict = field(default_factory=dict)

    def __post_init__(self):
        """Refuse values the loop would divide by, loop forever on, or silently misuse."""
        at_least = {"steps": 1, "batch_frames": 1, "max_batch": 1, "warmup": 0, "freq_masks": 0,
                    "freq_mask_width": 0, "time_masks": 0, "eval_every": 1, "eval_utterances": 0,
                    "weight_decay": 0, "spectral_tilt": 0, "max_minutes": 0}
        for name, low in at_least.items():
            if not getattr(self, name) >= low:  # NaN fails too
                raise UserError(f"training option {name} = {getattr(self, name)!r}: must be at least {low}")
        for name in ("peak_lr", "clip_norm", "checkpoint_minutes"):
            if not getattr(self, name) > 0:
                raise UserError(f"training option {name} = {getattr(self, name)!r}: must be positive")
        if not 0 <= self.final_lr_frac <= 1:
            raise UserError(f"training option final_lr_frac = {self.final_lr_frac!r}: must be in [0, 1]")
        for name in ("time_mask_frac", "freq_warp", "time_stretch"):  # factors 1 - v .. 1 + v
            if not 0 <= getattr(self, name) < 1:
                raise UserError(f"training option {name} = {getattr(self, name)!r}: must be in [0, 1)")


class WarmupCosine(keras.optimizers.schedules.LearningRateSchedule):
    def __init__(self, cfg: TrainConfig):
        self.cfg = cfg

    def __call__(self, step):
        return lr_at(step, self.cfg)

    def get_config(self):
        return asdict(self.cfg)


def lr_at(step, cfg: TrainConfig):
    """Linear warmup, then cosine decay to final_lr_frac * peak at cfg.steps."""
    step = tf.cast(step, tf.float32)
    warm = cfg.peak_lr * step / max(cfg.warmup, 1)
    progress = tf.clip_by_value((step - cfg.warmup) / max(cfg.steps - cfg.warmup, 1), 0.0, 1.0)
    floor = cfg.final_lr_frac * cfg.peak_lr
    cos = floor + (cfg.peak_lr - floor) * 0.5 * (1 + tf.cos(math.pi * progress))
    return tf.where(step < cfg.warmup, warm, cos)


def make_batches(lengths: np.ndarray, cfg: TrainConfig, epoch: int) -> list[np.ndarray]:
    """Shuffled batches of similar lengths, each at most batch_frames padded frames."""
    rng = np.random.default_rng(cfg.seed * 100003 + epoch)
    order = rng.permutation(len(lengths))
    batches = []
    pool = 64 * cfg.max_batch
    for start in range(0, len(order), pool):
        chunk = order[start:start + pool]
        chunk = chunk[np.argsort(lengths[chunk], kind="stable")]
        batch: list[int] = []
        for idx in chunk:
            longest = max(lengths[idx], max((lengths[b] for b in batch), default=0))
            if batch and (longest * (len(batch) + 1) > cfg.batch_frames or len(batch) >= cfg.max_batch):
                batches.append(np.array(batch))
                batch = []
            batch.append(idx)
        if batch:
            batches.append(np.array(batch))
    rng.shuffle(batches)
    return batches


def spec_augment(x: np.ndarray, rng: np.random.Generator, cfg: TrainConfig) -> np.ndarray:
    """Mask random frequency bands and time spans with the utterance mean (in place)."""
    t, f = x.shape
    fill = x.mean()
    for _ in range(cfg.freq_masks):
        w = rng.integers(0, cfg.freq_mask_width + 1)
        s = rng.integers(0, max(f - w, 1))
        x[:, s:s + w] = fill
    for _ in range(cfg.time_masks):
        w = rng.integers(0, int(cfg.time_mask_frac * t) + 1)
        s = rng.integers(0, max(t - w, 1))
        x[s:s + w] = fill
    return x


def _resample_axis(x: np.ndarray, factor: float, axis: int, keep_length: bool) -> np.ndarray:
    """Linear interpolation of x along `axis` so that position i takes the value at i * factor
    (keep_length) or so that the axis becomes len / factor long."""
    n = x.shape[axis]
    out_n = n if keep_length else max(1, int(round(n / factor)))
    pos = np.minimum(np.arange(out_n) * factor, n - 1)
    lo = np.floor(pos).astype(np.int64)
    hi = np.minimum(lo + 1, n - 1)
    frac = (pos - lo).astype(x.dtype)
    a, b = np.take(x, lo, axis=axis), np.take(x, hi, axis=axis)
    shape = [1] * x.ndim
    shape[axis] = out_n
    return a + (b - a) * frac.reshape(shape)


def voice_augment(x: np.ndarray, rng: np.random.Generator, cfg: TrainConfig) -> np.ndarray:
    """Random mel-axis warp, spectral tilt and time stretch of one utterance's log-mel."""
    if cfg.freq_warp:
        x = _resample_axis(x, 1.0 + rng.uniform(-cfg.freq_warp, cfg.freq_warp), axis=1, keep_length=True)
    if cfg.spectral_tilt:
        bins = x.shape[1]
        x = x + rng.uniform(-cfg.spectral_tilt, cfg.spectral_tilt) * (np.arange(bins) / bins - 0.5)
    if cfg.time_stretch:
        x = _resample_axis(x, 1.0 + rng.uniform(-cfg.time_stretch, cfg.time_stretch), axis=0, keep_length=False)
    return np.ascontiguousarray(x, np.float32)


def pad_batch(data: FeatureSet, idx: np.ndarray, rng=None, cfg: TrainConfig | None = None):
    feats = [data.features(i) for i in idx]
    if rng is not None:
        feats = [spec_augment(voice_augment(f, rng, cfg), rng, cfg) for f in feats]
    t = max(len(f) for f in feats)
    x = np.full((len(idx), t, feats[0].shape[1]), PAD_VALUE, np.float32)
    for row, f in enumerate(feats):
        x[row, :len(f)] = f
    labels = [data.labels[i] for i in idx]
    lmax = max(max(len(lab) for lab in labels), 1)
    y = np.zeros((len(idx), lmax), np.int32)
    for row, lab in enumerate(labels):
        y[row, :len(lab)] = lab
    return x, y, np.array([len(f) for f in feats], np.int32), np.array([len(lab) for lab in labels], np.int32)


class Trainer:
    def __init__(self, model_cfg, train: FeatureSet, dev: FeatureSet | None, out_dir, cfg: TrainConfig,
                 name: str, strategy: tf.distribute.Strategy | None = None, log=print):
        self.model_cfg, self.train, self.dev, self.cfg, self.name = model_cfg, train, dev, cfg, name
        self.out_dir = Path(out_dir)
        self.strategy = strategy or tf.distribute.get_strategy()
        self.log = log
        with self.strategy.scope():
            self.model = build_model(model_cfg)
            self.optimizer = keras.optimizers.Adam(learning_rate=WarmupCosine(cfg), beta_2=0.98, epsilon=1e-9)
            self.optimizer.build(self.model.trainable_weights)
        self.step = self.optimizer.iterations  # one optimizer update per step
        self.best_wer = tf.Variable(float("inf"), trainable=False, name="best_wer")
        self.ckpt = tf.train.Checkpoint(model=self.model, optimizer=self.optimizer, best_wer=self.best_wer)
        self.manager = tf.train.CheckpointManager(self.ckpt, str(self.out_dir / "checkpoints"), max_to_keep=2)

    # -- setup ---------------------------------------------------------------------------
    def restore_or_init(self, init_from=None) -> bool:
        """Resume from the latest checkpoint; else start from the weights of the model folder
        `init_from` (fine-tuning), else from scratch with the training set's feature statistics.
        True if resumed."""
        if self.manager.latest_checkpoint:
            self.ckpt.restore(self.manager.latest_checkpoint).expect_partial()
            self.log(f"resumed from {self.manager.latest_checkpoint} at step {int(self.step.numpy())}")
            return True
        if init_from is not None:
            from .models import load_model
            src = load_model(init_from)
            if src.config != self.model_cfg:
                raise UserError(f"--init model {init_from} has a different architecture than the one trained")
            self.model.set_weights(src.keras_model.get_weights())
            self.log(f"initialised from {init_from}")
            return False
        mean, std = self.train.statistics()
        self.model.get_layer("feature_norm").set_statistics(mean, std)
        return False

    # -- the step ------------------------------------------------------------------------
    def _loss(self, x, y, xlen, ylen, training):
        logits = self.model(x, training=training)
        llen = output_length(xlen, self.model_cfg)
        loss = tf.nn.ctc_loss(labels=y, logits=logits, label_length=ylen, logit_length=llen,
                              logits_time_major=False, blank_index=0)
        return loss

    def _replica_step(self, x, y, xlen, ylen, global_batch):
        with tf.GradientTape() as tape:
            per_utt = self._loss(x, y, xlen, ylen, True)
            # Normalise by label length so long utterances do not dominate.
            loss = tf.reduce_sum(per_utt / tf.maximum(tf.cast(ylen, tf.float32), 1.0)) / global_batch
            if self.cfg.weight_decay:
                loss += self.cfg.weight_decay * tf.add_n([tf.nn.l2_loss(w) for w in self.model.trainable_weights
                                                          if "kernel" in w.name]) / self.strategy.num_replicas_in_sync
        grads = tape.gradient(loss, self.model.trainable_weights)
        grads, norm = tf.clip_by_global_norm(grads, self.cfg.clip_norm)
        self.optimizer.apply_gradients(zip(grads, self.model.trainable_weights))
        return loss, norm

    @tf.function(reduce_retracing=True)
    def _distributed_step(self, x, y, xlen, ylen):
        global_batch = tf.cast(tf.shape(x)[0] * self.strategy.num_replicas_in_sync, tf.float32)
        loss, norm = self.strategy.run(self._replica_step, args=(x, y, xlen, ylen, global_batch))
        return (self.strategy.reduce(tf.distribute.ReduceOp.SUM, loss, axis=None),
                self.strategy.reduce(tf.distribute.ReduceOp.MEAN, norm, axis=None))

    def _dataset(self, start_step: int):
        lengths = self.train.lengths()
        spec = (tf.TensorSpec([None, None, self.train.feats.shape[1]], tf.float32),
                tf.TensorSpec([None, None], tf.int32), tf.TensorSpec([None], tf.int32),
                tf.TensorSpec([None], tf.int32))
        per_epoch = len(make_batches(lengths, self.cfg, 0))

        def gen():
            step = start_step
            while True:
                epoch, skip = divmod(step, per_epoch)
                rng = np.random.default_rng([self.cfg.seed, epoch])
                for idx in make_batches(lengths, self.cfg, epoch)[skip:]:
                    yield pad_batch(self.train, idx, rng, self.cfg)
                    step += 1

        ds = tf.data.Dataset.from_generator(gen, output_signature=spec).prefetch(4)
        return self.strategy.experimental_distribute_dataset(ds), per_epoch

    # -- evaluation ----------------------------------------------------------------------
    def evaluate(self, data: FeatureSet, limit: int | None = None) -> dict:
        from .decode import greedy_decode
        from .eval.metrics import error_rates
        n = len(data) if limit is None else min(limit, len(data))
        hyps, refs = [], []
        order = np.argsort(data.lengths()[:n])
        for start in range(0, n, 16):
            idx = order[start:start + 16]
            x, _, xlen, _ = pad_batch(data, idx)
            logits = self.model(x, training=False).numpy()
            llen = output_length(xlen, self.model_cfg)
            for row, i in enumerate(idx):
                hyps.append(greedy_decode(logits[row, :llen[row]]))
                refs.append(data.texts[i])
        return error_rates(refs, hyps)

    def export(self, folder, extra: dict | None = None):
        save_model(AsrModel(self.name, self.model_cfg, self.model), folder, extra)

    # -- the loop ------------------------------------------------------------------------
    def fit(self, export_dir, init_from=None) -> dict:
        from tqdm import tqdm
        cfg = self.cfg
        resumed = self.restore_or_init(init_from)
        start = int(self.step.numpy())
        ds, per_epoch = self._dataset(start)
        self.log(f"{len(self.train)} utterances, {per_epoch} batches per epoch, "
                 f"{self.model.count_params()} parameters, {'resuming' if resumed else 'starting'} at step {start}")
        t0 = last_ckpt = time.time()
        seen_frames = 0
        history = []
        bar = tqdm(total=cfg.steps, initial=start, desc=f"train {self.name}", mininterval=10, smoothing=0.05)
        it = iter(ds)
        while int(self.step.numpy()) < cfg.steps:
            x, y, xlen, ylen = next(it)
            loss, norm = self._distributed_step(x, y, xlen, ylen)
            seen_frames += int(np.sum(self.strategy.experimental_local_results(xlen)[0]))
            step = int(self.step.numpy())
            bar.update(1)
            bar.set_postfix(loss=f"{float(loss):.3f}", lr=f"{float(lr_at(step, cfg)):.2e}")
            elapsed = time.time() - t0
            out_of_time = cfg.max_minutes and elapsed > 60 * cfg.max_minutes
            if step % cfg.eval_every == 0 or step == cfg.steps or out_of_time:
                entry = {"step": step, "loss": float(loss), "minutes": elapsed / 60,
                         "audio_hours_seen": seen_frames / 360000}
                if self.dev is not None:
                    entry.update({f"dev_{k}": v for k, v in self.evaluate(self.dev, cfg.eval_utterances).items()})
                    if entry["dev_wer"] < float(self.best_wer.numpy()):
                        self.best_wer.assign(entry["dev_wer"])
                        self.export(export_dir, {"training": {**entry, "config": asdict(cfg)}})
                        entry["exported"] = True
                else:
                    self.export(export_dir, {"training": {**entry, "config": asdict(cfg)}})
                history.append(entry)
                self.log(json.dumps(entry))
            if time.time() - last_ckpt > 60 * cfg.checkpoint_minutes or step == cfg.steps or out_of_time:
                self.manager.save(checkpoint_number=step)
                last_ckpt = time.time()
            if out_of_time:
                self.log(f"stopping at step {step}: time budget of {cfg.max_minutes} minutes used")
                break
        bar.close()
        return {"history": history, "best_dev_wer": float(self.best_wer.numpy()), "steps": int(self.step.numpy()),
                "minutes": (time.time() - t0) / 60}
