import numpy as np
import pytest

from tfq_asr.models import CONFIGS, build_model, output_length
from tfq_asr.text import NUM_CLASSES

# Parameter counts of our encoders + CTC heads (the Conformer paper's 10.3M/30.7M/118.8M
# include its LSTM decoder). A change here is a change of architecture: update README too.
EXPECTED_PARAMS = {
    "conformer-xs": 2_150_813,
    "conformer-s": 8_360_829,
    "conformer-m": 26_213_629,
    "conformer-l": 110_392_261,
    "lstm-xs": 1_649_085,
}


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_parameter_counts(name):
    assert build_model(name).count_params() == EXPECTED_PARAMS[name]


@pytest.mark.parametrize("name", ["conformer-xs", "lstm-xs"])
@pytest.mark.parametrize("frames", [1, 7, 100, 101])
def test_output_shapes(name, frames):
    cfg = CONFIGS[name]
    model = build_model(cfg)
    out = model(np.zeros((2, frames, 80), np.float32))
    assert out.shape == (2, output_length(frames, cfg), NUM_CLASSES)


@pytest.mark.parametrize("name", ["conformer-xs", "lstm-xs"])
def test_streaming_models_are_causal_across_chunks(name):
    """Output frames of earlier chunks must not change when later audio is appended."""
    cfg = CONFIGS[name]
    model = build_model(cfg)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(1, 160, 80)).astype(np.float32)
    full = model(x).numpy()
    chunk_in = 4 * cfg.chunk if name.startswith("conformer") else cfg.stack
    head = 3 * chunk_in  # three whole chunks of input frames
    part = model(x[:, :head]).numpy()
    n = output_length(head, cfg)
    np.testing.assert_allclose(part[0, :n], full[0, :n], rtol=1e-4, atol=1e-4)


def test_every_weight_layer_is_a_stock_top_level_layer():
    """The quantizer annotates Dense/Conv/LSTM layers by name at the top level of the model."""
    import tf_keras as keras
    for name in ("conformer-xs", "lstm-xs"):
        model = build_model(name)
        kernels = [l for l in model.layers if any("kernel" in w.name for w in l.weights)]
        assert kernels
        for layer in kernels:
            assert isinstance(layer, (keras.layers.Dense, keras.layers.Conv2D, keras.layers.DepthwiseConv1D,
                                      keras.layers.LSTM)), layer.name


@pytest.mark.parametrize("chunk", [0, 4])
def test_relative_attention_bias_and_mask_are_run_time_values(chunk):
    """RelativeAttention computes bias[h, clip(j - i)] and the chunk mask from run-time positions
    (so a fixed-length .tflite holds no [heads, T, T] constants); the result equals the plain
    formula written with constant indices, and a NaN in q gives NaN, not an indexing error."""
    import math
    import tensorflow as tf
    from tfq_asr.models.layers import RelativeAttention
    heads, r, t, d = 2, 3, 10, 8
    layer = RelativeAttention(heads, r, chunk=chunk, left_context=2)
    q, k, v = (np.random.default_rng(s).normal(size=(1, t, d)).astype(np.float32) for s in range(3))
    layer([q, k, v])  # builds rel_bias
    layer.rel_bias.assign(np.random.default_rng(4).normal(size=(heads, 2 * r + 1)).astype(np.float32))
    got = layer([q, k, v]).numpy()
    split = lambda x: x.reshape(t, heads, d // heads).transpose(1, 0, 2)  # noqa: E731
    logits = split(q) @ split(k).transpose(0, 2, 1) * np.float32(1.0 / math.sqrt(d // heads))
    i, j = np.arange(t)[:, None], np.arange(t)[None, :]
    logits = logits + layer.rel_bias.numpy()[:, np.clip(j - i, -r, r) + r]
    if chunk:
        start = i // chunk * chunk
        logits = np.where((j < start + chunk) & (j >= start - 2), logits, np.float32(-1e9))
    want = (tf.nn.softmax(logits, axis=-1).numpy() @ split(v)).transpose(1, 0, 2).reshape(1, t, d)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    q[0, 0, 0] = np.nan
    assert np.isnan(layer([q, k, v]).numpy()).any()
