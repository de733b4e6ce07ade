"""Streaming step models (external state) reproduce the offline models chunk by chunk."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import tf_keras as keras

from tfq_asr.models import build_model, get_config
from tfq_asr.models.streaming import (build_step_model, chunk_frames, run_streaming_keras, step_states,
                                      transfer_weights)
from tfq_asr.quant.apply import quantize


def _randomize(model, seed):
    rng = np.random.default_rng(seed)
    for w in model.weights:
        if "moving_variance" in w.name or "inv_std" in w.name:
            w.assign(rng.uniform(0.5, 1.5, w.shape))
        elif w.dtype == "float32":
            w.assign(rng.normal(0, 0.2, w.shape))


def _features(frames, seed=0):
    return np.random.default_rng(seed).normal(size=(frames, 80)).astype(np.float32)


CONFORMER = dataclasses.replace(get_config("conformer-xs"), num_blocks=2, d_model=32, num_heads=2,
                                subsample_channels=8, chunk=4, left_context=8, conv_kernel=7)
LSTM = dataclasses.replace(get_config("lstm-xs"), num_layers=2, units=24)


@pytest.mark.parametrize("cfg", [CONFORMER, LSTM], ids=["conformer", "lstm"])
def test_streaming_equals_offline(cfg):
    keras.utils.set_random_seed(0)
    model = build_model(cfg)
    _randomize(model, 1)
    step = build_step_model(cfg, lstm_steps=4)
    transfer_weights(model, step)
    n = chunk_frames(cfg, lstm_steps=4)
    feats = _features(7 * n)  # longer than the left context: the cache wraps several times
    offline = model(feats[None]).numpy()[0]
    streamed = run_streaming_keras(step, cfg, feats, lstm_steps=4)
    assert streamed.shape == offline.shape
    np.testing.assert_allclose(streamed, offline, rtol=1e-4, atol=1e-4 * np.abs(offline).max())
    assert len(step.inputs) == 1 + len(step_states(cfg)) == len(step.outputs)


@pytest.mark.parametrize("policy", ["w4-sc16-f16-wo", "w4-sc16-f16"])
def test_quantized_streaming_equals_quantized_offline(policy):
    keras.utils.set_random_seed(0)
    model = build_model(CONFORMER)
    _randomize(model, 2)
    q = quantize(model, policy)
    step = build_step_model(CONFORMER)
    qstep = quantize(step, policy)
    transfer_weights(q, qstep)
    feats = _features(6 * chunk_frames(CONFORMER), seed=3)
    offline = q(feats[None]).numpy()[0]
    streamed = run_streaming_keras(qstep, CONFORMER, feats)
    scale = np.abs(offline).max()
    if policy.endswith("-wo"):
        np.testing.assert_allclose(streamed, offline, rtol=1e-4, atol=1e-4 * scale)
    else:
        # int8 activation rounding is discontinuous: a float-rounding difference upstream can move
        # one activation to the next int8 level, and attention spreads that to later frames.
        assert np.abs(streamed - offline).max() < 0.05 * scale
        assert (streamed.argmax(-1) == offline.argmax(-1)).mean() > 0.95


def test_offline_model_rejected_for_streaming():
    with pytest.raises(ValueError, match="streaming configuration"):
        build_step_model(dataclasses.replace(CONFORMER, chunk=0))


def test_long_utterances_run_through_the_step_model(monkeypatch):
    """AsrModel.logits of a long utterance (a streaming Conformer) runs the step model chunk
    by chunk in flat memory, not the [T, T] attention of one pass: the logits of the whole
    pass within float rounding (but the last frame), trimmed to its length; shorter input and
    LSTMs take one pass."""
    import tfq_asr.models.bundle as bundle
    from tfq_asr.models import AsrModel, output_length
    keras.utils.set_random_seed(0)
    km = build_model(CONFORMER)
    _randomize(km, 4)
    m = AsrModel("tiny", CONFORMER, km)
    feats = _features(5 * chunk_frames(CONFORMER) + 3, seed=5)  # the last chunk padded
    whole = m.logits(feats)
    assert m._step is None  # noqa: SLF001
    monkeypatch.setattr(bundle, "LONG_UTTERANCE_FRAMES", chunk_frames(CONFORMER))
    streamed = m.logits(feats)
    assert m._step is not None and streamed.shape == whole.shape == (output_length(len(feats), CONFORMER), 29)
    # the last frame's inputs end inside the padding, silence frames here and the convolution's
    # own padding in the one pass, as between a streaming file and the offline model
    np.testing.assert_allclose(streamed[:-1], whole[:-1], rtol=1e-4, atol=1e-4 * np.abs(whole).max())
    lstm = AsrModel("tiny-lstm", LSTM, build_model(LSTM))
    lstm.logits(feats)
    assert lstm._step is None  # noqa: SLF001
