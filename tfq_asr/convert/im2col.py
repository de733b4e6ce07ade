"""Conv2D as patches times a matrix, so that a quantized convolution kernel lowers to the same
packed fully connected op as a Dense layer.

The TFLite converter keeps a Conv2D as CONV_2D, whose float weights the packed op cannot
replace.  `PatchDense` computes the same VALID convolution as strided slices of the input,
one per kernel tap (i, j), concatenated on the channel axis in (i, j, channel) order -- the
order of the Keras kernel [kh, kw, cin, cout] reshaped to [kh*kw*cin, cout], which is the
matrix the quantizer saw -- and then a tensordot with that matrix: STRIDED_SLICE,
CONCATENATION and a FULLY_CONNECTED whose weight is the dequantized kernel, bit for bit.
"""
from __future__ import annotations

import tensorflow as tf
import tf_keras as keras


def why_not_patch_dense(layer) -> str | None:
    """None if `layer` (a Conv2D) can become a PatchDense, else the reason."""
    if not isinstance(layer, keras.layers.Conv2D) or isinstance(layer, keras.layers.DepthwiseConv2D):
        return f"a {type(layer).__name__} is not a Conv2D"
    if layer.padding != "valid":
        return f"padding {layer.padding!r} (only 'valid' convolutions lower as patches)"
    if tuple(layer.dilation_rate) != (1, 1) or getattr(layer, "groups", 1) != 1:
        return "dilated or grouped convolution"
    if layer.data_format != "channels_last":
        return f"data format {layer.data_format}"
    return None


class PatchDense(keras.layers.Layer):
    """A VALID, channels-last Conv2D as im2col + matmul; weights kernel [kh*kw*cin, cout], bias."""

    def __init__(self, filters: int, kernel_size, strides, use_bias: bool = True, activation=None, **kwargs):
        super().__init__(**kwargs)
        self.filters = filters
        self.kernel_size = tuple(kernel_size)
        self.strides = tuple(strides)
        self.use_bias = use_bias
        self.activation = keras.activations.get(activation)

    @classmethod
    def from_conv(cls, conv) -> "PatchDense":
        return cls(conv.filters, conv.kernel_size, conv.strides, conv.use_bias,
                   keras.activations.serialize(conv.activation), name=conv.name)

    def build(self, input_shape):
        kh, kw = self.kernel_size
        cin = int(input_shape[-1])
        self.kernel = self.add_weight("kernel", shape=(kh * kw * cin, self.filters), trainable=False)
        self.bias = self.add_weight("bias", shape=(self.filters,), trainable=False) if self.use_bias else None

    def call(self, x):
        kh, kw = self.kernel_size
        sh, sw = self.strides
        if None in tuple(x.shape[1:]):  # traced with a free time axis: plain strided slices
            hw = tf.shape(x)[1:3]
            ho, wo = (hw[0] - kh) // sh + 1, (hw[1] - kw) // sw + 1
            taps = [x[:, i:i + sh * (ho - 1) + 1:sh, j:j + sw * (wo - 1) + 1:sw, :]
                    for i in range(kh) for j in range(kw)]
        else:
            h, w = int(x.shape[1]), int(x.shape[2])
            taps = self._taps(x, h, w, (h - kh) // sh + 1, (w - kw) // sw + 1)
        patches = tf.concat(taps, axis=-1) if len(taps) > 1 else taps[0]
        y = tf.tensordot(patches, self.kernel, [[3], [0]])
        if self.use_bias:
            y = tf.nn.bias_add(y, self.bias)
        return self.activation(y)

    def _taps(self, x, h: int, w: int, ho: int, wo: int):
        """The kh*kw input windows [B, ho, wo, C], tap (i, j) = x[:, i::sh][:ho], [:, j::sw][:wo].
        Strided slices become STRIDED_SLICE ops that XNNPACK does not take (34 us each at the
        xs subsampling shapes); with batch 1 the strides become a reshape that splits each
        spatial axis into (position, phase), and every tap a plain 4-D slice of it."""
        kh, kw = self.kernel_size
        sh, sw = self.strides
        c = int(x.shape[-1])
        if (sh, sw) == (1, 1):
            return [x[:, i:i + ho, j:j + wo, :] for i in range(kh) for j in range(kw)]
        if x.shape[0] != 1:
            return [x[:, i:i + sh * (ho - 1) + 1:sh, j:j + sw * (wo - 1) + 1:sw, :]
                    for i in range(kh) for j in range(kw)]
        hb, wb = (kh - 1) // sh + ho, (kw - 1) // sw + wo   # positions per phase needed
        x = x[:, :min(h, hb * sh), :min(w, wb * sw), :]
        pad_h, pad_w = hb * sh - int(x.shape[1]), wb * sw - int(x.shape[2])
        if pad_h or pad_w:  # rows and columns no tap reads, to make the split exact
            x = tf.pad(x, [[0, 0], [0, pad_h], [0, pad_w], [0, 0]])
        grid = tf.reshape(x, [hb, sh, wb, sw * c])
        return [tf.reshape(grid[i // sh:i // sh + ho, i % sh:i % sh + 1, j // sw:j // sw + wo,
                                (j % sw) * c:(j % sw + 1) * c], [1, ho, wo, c])
                for i in range(kh) for j in range(kw)]

    def set_from_conv_weights(self, kernel, bias=None) -> None:
        weights = [tf.reshape(kernel, self.kernel.shape).numpy()]
        if self.use_bias:
            weights.append(bias)
        self.set_weights(weights)

    def get_config(self):
        return {**super().get_config(), "filters": self.filters, "kernel_size": self.kernel_size,
                "strides": self.strides, "use_bias": self.use_bias,
                "activation": keras.activations.serialize(self.activation)}
