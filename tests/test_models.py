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
