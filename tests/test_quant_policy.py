import pytest
import tf_keras as keras

from tfq_asr.quant.numerics import WeightQuantSpec
from tfq_asr.quant.policy import Policy, from_name
from tfq_asr.quant.size import account, size_report


@pytest.mark.parametrize("name, spec", [
    ("w8", WeightQuantSpec(bits=8)),
    ("w4-pc", WeightQuantSpec(bits=4)),
    ("w2-sc64", WeightQuantSpec(bits=2, granularity="group", group_size=64)),
    ("w4-pt-asym", WeightQuantSpec(bits=4, granularity="tensor", symmetric=False)),
    ("w2-sc32-asym-clipl2-f16", WeightQuantSpec(bits=2, granularity="group", group_size=32, symmetric=False,
                                                clip="l2", scale_dtype="float16")),
])
def test_preset_names(name, spec):
    p = from_name(name)
    assert p.default == spec and p.rules == ()
    assert Policy.from_dict(p.to_dict()) == p


def test_mixed_keeps_first_and_last_layers_at_8_bits():
    p = from_name("w2-sc64-mixed")
    assert p.spec_for("subsample_conv1").bits == 8 and p.spec_for("ctc_head").bits == 8
    assert p.spec_for("block0_ff1_dense1").bits == 2


def test_overrides_and_lstm_roles():
    p = from_name("w4").with_override("lstm*/recurrent_kernel", "w8").with_override("ctc_head", None)
    assert p.spec_for("lstm1", "recurrent_kernel").bits == 8
    assert p.spec_for("lstm1", "kernel").bits == 4
    assert p.spec_for("ctc_head") is None
    assert "lstm*/recurrent_kernel=w8-pc" in p.name
    assert Policy.from_dict(p.to_dict()) == p
    assert "ctc_head: float" in p.describe()


@pytest.mark.parametrize("bad", ["w3", "x4", "w4-sc0", "w4-fast", "w4-sc"])
def test_bad_names(bad):
    with pytest.raises(ValueError, match="policy"):
        from_name(bad)


@pytest.mark.parametrize("bad, message", [("w4-sc64-sc32", "-sc64 and -sc32 both set the granularity"),
                                          ("w4-pc-sc64", "both set the granularity"),
                                          ("w2-asym-asym", "-asym given twice"),
                                          ("w4-clipl1-clipl2", "both set the clipping"),
                                          ("w4-static-wo", "-static and -wo both set the activations")])
def test_conflicting_suffixes_are_refused(bad, message):
    # the last one used to win without a word (w2-sc16-static-wo was a weight-only policy)
    with pytest.raises(ValueError, match=message):
        from_name(bad)


def tiny_model():
    x = keras.Input((None, 40))
    y = keras.layers.Dense(100, name="dense_a")(x)
    y = keras.layers.DepthwiseConv1D(5, padding="same", name="dw")(y)
    y = keras.layers.LSTM(16, return_sequences=True, name="lstm0")(y)
    return keras.Model(x, keras.layers.Dense(7, name="head")(y))


def test_size_accounting_by_hand():
    m = tiny_model()
    r = size_report(m, from_name("w4-sc32-f16").with_override("head", None))
    expected = (
        40 * 100 // 2 + 2 * 100 * 2 + 100 * 4      # dense_a: 2 groups of 32 (ragged 8), f16 scales; float bias
        + 5 * 100 // 2 + 100 * 2 + 100 * 4          # dw: K=5 < 32 -> one group per channel; bias
        + 100 * 64 // 2 + 4 * 64 * 2                # lstm kernel [100, 64]: 4 groups
        + 16 * 64 // 2 + 1 * 64 * 2                 # recurrent [16, 64]: per channel
        + 64 * 4                                    # lstm bias
        + (16 * 7 + 7) * 4                          # head left float
    )
    assert r["total_bytes"] == expected
    assert r["parameters"] == m.count_params()
    specs = {(e.layer, e.role): e.spec for e in account(m, from_name("w4-sc32-f16"))}
    assert specs[("dw", "depthwise_kernel")].granularity == "channel"  # group >= K: stated explicitly


def test_fp32_is_four_bytes_per_parameter():
    m = tiny_model()
    assert size_report(m, from_name("fp32"))["total_bytes"] == 4 * m.count_params()


def test_activation_suffixes_and_round_trip():
    from tfq_asr.quant.policy import Policy, from_name
    assert from_name("w4").activations == "dynamic"
    assert from_name("w8-static").activations == "static"
    assert from_name("w4-sc64-wo").activations == "none"
    p = from_name("w2-sc64-asym-static-mixed")
    assert Policy.from_dict(p.to_dict()) == p
    assert "activations static" in p.describe()
    assert from_name("w4").conv_activations == "none"
    c = from_name("w2-sc64-asym-f16-convq8")
    assert c.conv_activations == "dynamic" and c.activations == "dynamic"
    assert Policy.from_dict(c.to_dict()) == c and "convolutions dynamic" in c.describe()
    assert "conv_activations" not in from_name("w4").to_dict()  # older checkpoints read the same
    with pytest.raises(ValueError, match="-convq8"):
        from_name("w4-convq4")
    assert from_name("w4").lstm_activations == "none" and "lstm_activations" not in from_name("w4").to_dict()
    r = from_name("w4-sc64-lstmq8-convq8")
    assert r.lstm_activations == "dynamic" and r.conv_activations == "dynamic"
    assert Policy.from_dict(r.to_dict()) == r and "LSTMs dynamic" in r.describe()
    with pytest.raises(ValueError, match="-lstmq8"):
        from_name("w4-lstmq4")


@pytest.mark.parametrize("bad, message", [({"bits": 4}, "needs a \"name\""),
                                          ({"name": "x", "defalt": {}}, "unknown key.*defalt"),
                                          ({"name": "x", "default": "w4"}, "object or null"),
                                          ({"name": "x", "rules": [{"pattern": "h"}]}, "rules must be"),
                                          ({"name": "x", "default": {"bits": 4, "bogus": 1}}, "bogus")])
def test_bad_policy_dicts_name_the_problem(bad, message):
    # a JSON policy file (tools/quantize.py --policy P.json) used to fail with a KeyError or
    # ignore a misspelt key
    from tfq_asr.errors import UserError
    from tfq_asr.quant.apply import as_policy
    with pytest.raises(UserError, match=message):
        as_policy(bad)
    p = from_name("w2-sc64-asym-static-mixed")
    assert as_policy(p.to_dict()) == p
