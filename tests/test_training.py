import json

import numpy as np
import pytest

from tfq_asr.errors import UserError
from tfq_asr.features import load_feature_set
from tfq_asr.models import CONFIGS, load_model
from tfq_asr.training import TrainConfig, Trainer, make_batches


def test_batches_cover_every_utterance_once_and_respect_the_frame_budget():
    lengths = np.random.default_rng(0).integers(50, 900, size=500)
    cfg = TrainConfig(batch_frames=4000, max_batch=16)
    batches = make_batches(lengths, cfg, epoch=3)
    flat = np.concatenate(batches)
    assert sorted(flat.tolist()) == list(range(500))
    for b in batches:
        assert len(b) <= 16 and (len(b) == 1 or lengths[b].max() * len(b) <= 4000)
    assert [b.tolist() for b in make_batches(lengths, cfg, epoch=3)] == [b.tolist() for b in batches]


@pytest.mark.parametrize("name", ["conformer-xs", "lstm-xs"])
def test_two_training_steps_checkpoint_resume_and_export(tiny_corpus, tmp_path, name):
    out, _ = tiny_corpus
    import dataclasses
    small = dataclasses.replace(CONFIGS[name], **({"num_blocks": 1, "d_model": 32, "num_heads": 2}
                                                  if name.startswith("conformer") else {"units": 32, "num_layers": 1}))
    train = load_feature_set(out / "train.tsv", tmp_path / "cache", workers=1, progress=False)
    dev = load_feature_set(out / "dev.tsv", tmp_path / "cache", workers=1, progress=False)
    cfg = TrainConfig(steps=2, eval_every=2, batch_frames=2000, warmup=1)
    trainer = Trainer(small, train, dev, tmp_path / "run", cfg, name="tiny", log=lambda m: None)
    result = trainer.fit(tmp_path / "model")
    assert result["steps"] == 2 and np.isfinite(result["history"][-1]["loss"])
    model = load_model(tmp_path / "model")
    meta = json.loads((tmp_path / "model" / "config.json").read_text())
    assert meta["training"]["step"] == 2
    np.testing.assert_array_equal(model.keras_model.get_layer("feature_norm").mean.numpy(),
                                  trainer.model.get_layer("feature_norm").mean.numpy())
    # Resuming continues from the checkpoint instead of starting over.
    again = Trainer(small, train, dev, tmp_path / "run", dataclasses.replace(cfg, steps=3), name="tiny",
                    log=lambda m: None)
    assert again.fit(tmp_path / "model")["steps"] == 3
    # Fine-tuning starts from a model folder's weights.
    tuned = Trainer(small, train, dev, tmp_path / "run2", cfg, name="tiny", log=lambda m: None)
    assert tuned.restore_or_init(tmp_path / "model") is False
    exported = load_model(tmp_path / "model").keras_model.get_weights()
    for a, b in zip(tuned.model.get_weights(), exported):
        np.testing.assert_array_equal(a, b)


def test_a_damaged_feature_cache_is_recomputed(tiny_corpus, tmp_path):
    out, _ = tiny_corpus
    first = load_feature_set(out / "dev.tsv", tmp_path / "cache", workers=1, progress=False)
    (cache,) = (tmp_path / "cache").glob("dev-*.npz")
    for damaged in (cache.read_bytes()[:100], b"not an npz"):
        cache.write_bytes(damaged)
        again = load_feature_set(out / "dev.tsv", tmp_path / "cache", workers=1, progress=False)
        np.testing.assert_array_equal(again.feats, first.feats)
        np.testing.assert_array_equal(again.offsets, first.offsets)
    np.load(cache).close()  # rewritten whole


def test_voice_augment_warps_tilts_and_stretches_deterministically():
    from tfq_asr.training import TrainConfig, voice_augment
    x = np.random.default_rng(0).normal(size=(100, 80)).astype(np.float32)
    off = voice_augment(x.copy(), np.random.default_rng(1), TrainConfig())
    np.testing.assert_array_equal(off, x)
    cfg = TrainConfig(freq_warp=0.1, spectral_tilt=1.0, time_stretch=0.1)
    a = voice_augment(x.copy(), np.random.default_rng(1), cfg)
    b = voice_augment(x.copy(), np.random.default_rng(1), cfg)
    np.testing.assert_array_equal(a, b)
    assert a.dtype == np.float32 and a.shape[1] == 80 and 90 <= a.shape[0] <= 112
    assert not np.allclose(a[:90], x[:90])


@pytest.mark.parametrize("field, value", [("steps", 0), ("batch_frames", 0), ("peak_lr", 0.0), ("warmup", -1),
                                          ("eval_every", 0), ("freq_warp", 1.0), ("time_stretch", -0.1),
                                          ("final_lr_frac", 1.5), ("clip_norm", float("nan"))])
def test_train_config_refuses_values_the_loop_cannot_use(field, value):
    with pytest.raises(UserError, match=f"training option {field} = "):
        TrainConfig(**{field: value})
