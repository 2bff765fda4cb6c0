"""hls4ml layer dicts, one builder per hls4ml layer class, in the form its converters hand to
`ModelGraph.from_layer_list` (read from hls4ml 1.3.0: converters/onnx, converters/keras and the
`Layer` classes of model/layers.py).

Every layer is channels-last (`data_format: channels_last`): a value of the graph is [spatial...,
channels] without the batch dimension, flattened in C order, which is also the order of hls4ml's
arrays and streams. Shapes and weights are given here; types come from the HLS config, by name.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

CHANNELS_LAST = "channels_last"


@dataclass(frozen=True)
class Window:
    """A convolution or pooling window over the spatial dims (1 or 2 of them), ONNX's arithmetic:
    `out = floor((in + pad_begin + pad_end - kernel) / stride) + 1` (dilation 1, floor mode)."""

    in_size: tuple[int, ...]
    kernel: tuple[int, ...]
    strides: tuple[int, ...]
    pads_begin: tuple[int, ...]
    pads_end: tuple[int, ...]

    @property
    def rank(self) -> int:
        return len(self.in_size)

    @property
    def out_size(self) -> tuple[int, ...]:
        return tuple(
            (n + b + e - k) // s + 1
            for n, k, s, b, e in zip(self.in_size, self.kernel, self.strides, self.pads_begin, self.pads_end, strict=True)
        )

    @property
    def padded(self) -> bool:
        return any(self.pads_begin) or any(self.pads_end)

    def hls4ml_attributes(self, kernel_prefix: str) -> dict[str, int]:
        """in/out sizes, kernel (`filt_*` or `pool_*`), strides and pads under hls4ml's names."""
        if self.rank == 1:
            return {
                "in_width": self.in_size[0],
                "out_width": self.out_size[0],
                f"{kernel_prefix}_width": self.kernel[0],
                "stride_width": self.strides[0],
                "pad_left": self.pads_begin[0],
                "pad_right": self.pads_end[0],
            }
        (in_h, in_w), (out_h, out_w) = self.in_size, self.out_size
        return {
            "in_height": in_h,
            "in_width": in_w,
            "out_height": out_h,
            "out_width": out_w,
            f"{kernel_prefix}_height": self.kernel[0],
            f"{kernel_prefix}_width": self.kernel[1],
            "stride_height": self.strides[0],
            "stride_width": self.strides[1],
            "pad_top": self.pads_begin[0],
            "pad_bottom": self.pads_end[0],
            "pad_left": self.pads_begin[1],
            "pad_right": self.pads_end[1],
        }

    def divisors(self, count_pad: bool) -> set[int]:
        """How many elements each output of an average pool divides by: the whole window, or
        (ONNX count_include_pad=0, hls4ml count_pad=False) only the part inside the input."""
        if count_pad or not self.padded:
            return {int(np.prod(self.kernel))}
        per_axis = []
        for n, k, s, b, out in zip(self.in_size, self.kernel, self.strides, self.pads_begin, self.out_size, strict=True):
            counts = set()
            for o in range(out):
                start = o * s - b
                counts.add(min(start + k, n) - max(start, 0))
            per_axis.append(counts)
        result = {1}
        for counts in per_axis:
            result = {a * c for a in result for c in counts}
        return result


def input_layer(name: str, shape: tuple[int, ...]) -> dict:
    return {"class_name": "InputLayer", "name": name, "input_shape": list(shape), "inputs": []}


def dense_layer(name: str, source: str, weights: np.ndarray, bias: np.ndarray) -> dict:
    n_in, n_out = weights.shape
    return {
        "class_name": "Dense",
        "name": name,
        "inputs": [source],
        "n_in": int(n_in),
        "n_out": int(n_out),
        # [n_in, n_out], the layout hls4ml's ONNX MatMul path hands to Dense.
        "weight_data": np.ascontiguousarray(weights, dtype=np.float64),
        "bias_data": np.asarray(bias, dtype=np.float64),
        "use_bias": True,
    }


def conv_layer(name: str, source: str, window: Window, weights: np.ndarray, bias: np.ndarray) -> dict:
    """Conv1D / Conv2D from channels-last weights [M, k..., C] (qonnx's channels-last Conv).

    hls4ml's kernels read Keras's layout [k..., C, M]; its ONNX converter transposes the same way
    (optimizer conv_to_convxd)."""
    n_filt, n_chan = weights.shape[0], weights.shape[-1]
    return {
        "class_name": f"Conv{window.rank}D",
        "name": name,
        "inputs": [source],
        "data_format": CHANNELS_LAST,
        "n_chan": int(n_chan),
        "n_filt": int(n_filt),
        **window.hls4ml_attributes("filt"),
        "weight_data": np.ascontiguousarray(np.moveaxis(weights, 0, -1), dtype=np.float64),
        "bias_data": np.asarray(bias, dtype=np.float64),
        "use_bias": True,
    }


def depthwise_conv_layer(name: str, source: str, window: Window, weights: np.ndarray, bias: np.ndarray) -> dict:
    """DepthwiseConv1D / DepthwiseConv2D (depth multiplier 1) from channels-last weights [C, k..., 1].

    hls4ml reads Keras's depthwise layout [k..., C, 1]; flattened it is the same order as
    [k..., 1, C], which is what its ONNX converter passes (conv_to_depthwiseconvxd)."""
    n_chan = weights.shape[0]
    return {
        "class_name": f"DepthwiseConv{window.rank}D",
        "name": name,
        "inputs": [source],
        "data_format": CHANNELS_LAST,
        "n_chan": int(n_chan),
        "n_filt": int(n_chan),
        "depth_multiplier": 1,
        **window.hls4ml_attributes("filt"),
        "depthwise_data": np.ascontiguousarray(np.moveaxis(weights, 0, -1), dtype=np.float64),
        "bias_data": np.asarray(bias, dtype=np.float64),
        "use_bias": True,
    }


def pooling_layer(name: str, source: str, op: str, window: Window, n_chan: int, count_pad: bool) -> dict:
    """MaxPooling1D/2D or AveragePooling1D/2D (`op` is 'Max' or 'Average')."""
    attributes = window.hls4ml_attributes("pool")
    if window.rank == 1:
        # Pooling1D names its sizes n_in / n_out.
        attributes["n_in"] = attributes.pop("in_width")
        attributes["n_out"] = attributes.pop("out_width")
    return {
        "class_name": f"{op}Pooling{window.rank}D",
        "name": name,
        "inputs": [source],
        "data_format": CHANNELS_LAST,
        "n_filt": int(n_chan),
        "count_pad": bool(count_pad),
        **attributes,
    }


def global_pooling_layer(name: str, source: str, op: str, spatial: tuple[int, ...], n_chan: int) -> dict:
    """GlobalMaxPooling1D/2D or GlobalAveragePooling1D/2D; the result is [channels]."""
    layer = {
        "class_name": f"Global{op}Pooling{len(spatial)}D",
        "name": name,
        "inputs": [source],
        "data_format": CHANNELS_LAST,
        "n_filt": int(n_chan),
    }
    if len(spatial) == 1:
        layer["n_in"] = int(spatial[0])
    else:
        layer["in_height"], layer["in_width"] = (int(d) for d in spatial)
    return layer


def batchnorm_layer(name: str, source: str, shape: tuple[int, ...], scale: np.ndarray, bias: np.ndarray) -> dict:
    """`res = data * scale[c] + bias[c]` with c the channel (last axis): hls4ml computes the product
    and the sum at full precision and rounds once, into the result type."""
    n_filt = shape[-1]
    return {
        "class_name": "BatchNormalization",
        "name": name,
        "inputs": [source],
        "data_format": CHANNELS_LAST,
        "n_in": int(np.prod(shape)),
        "n_filt": int(n_filt),
        "scale_data": np.ascontiguousarray(np.broadcast_to(scale, (n_filt,)), dtype=np.float64),
        "bias_data": np.ascontiguousarray(np.broadcast_to(bias, (n_filt,)), dtype=np.float64),
    }


def activation_layer(name: str, source: str, activation: str) -> dict:
    """'relu' (`res = data > 0 ? data : 0`) or 'linear' (`res = data`), assigned to the result type."""
    return {"class_name": "Activation", "name": name, "activation": activation, "inputs": [source]}


def leaky_relu_layer(name: str, source: str, alpha: float) -> dict:
    """`res = data > 0 ? data : alpha * data`, alpha of the `param` type.

    hls4ml writes alpha into the C++ call as Python's repr of `activ_param`, a decimal literal the
    compiler reads as a double and the param type then truncates. So alpha must be a Python float
    (numpy's float32 prints its own shortest repr, e.g. 0.1, which is not float32(0.1))."""
    return {
        "class_name": "LeakyReLU",
        "name": name,
        "activation": "leaky_relu",
        "activ_param": float(alpha),
        "inputs": [source],
    }


def merge_layer(name: str, first: str, second: str, op: str) -> dict:
    """Element-wise `op` ('add') of two values of one shape: exact, assigned to the result type."""
    return {"class_name": "Merge", "name": name, "op": op, "inputs": [first, second]}


def concatenate_layer(name: str, first: str, second: str, rank: int) -> dict:
    """Concatenation along the channels (last axis). hls4ml's kernels read `axis` with the batch
    dimension counted (3 is the channels of a 3-D value) or negative; -1 means the last axis for
    every rank in both io types."""
    return {
        "class_name": "Concatenate",
        "name": name,
        "op": f"concatenate{rank}d",
        "axis": -1,
        "inputs": [first, second],
    }


def resize_layer(name: str, source: str, in_size: tuple[int, int], out_size: tuple[int, int], n_chan: int) -> dict:
    """Nearest-neighbour upsampling of [height, width, channels]."""
    return {
        "class_name": "Resize",
        "name": name,
        "inputs": [source],
        "data_format": CHANNELS_LAST,
        "algorithm": "nearest",
        "in_height": int(in_size[0]),
        "in_width": int(in_size[1]),
        "out_height": int(out_size[0]),
        "out_width": int(out_size[1]),
        "n_chan": int(n_chan),
    }


def reshape_layer(name: str, source: str, target_shape: tuple[int, ...]) -> dict:
    """A reshape of the flat C-order data (ONNX Reshape / Flatten / Squeeze alike): no arithmetic."""
    return {"class_name": "Reshape", "name": name, "inputs": [source], "target_shape": [int(d) for d in target_shape]}


def zero_padding_layer(name: str, source: str, window: Window, n_chan: int) -> dict:
    """ZeroPadding1D/2D with the window's pads (the result has the input's type)."""
    attributes = {"in_width": window.in_size[-1], "out_width": window.in_size[-1] + window.pads_begin[-1] + window.pads_end[-1]}
    attributes.update(pad_left=window.pads_begin[-1], pad_right=window.pads_end[-1])
    if window.rank == 2:
        attributes.update(
            in_height=window.in_size[0],
            out_height=window.in_size[0] + window.pads_begin[0] + window.pads_end[0],
            pad_top=window.pads_begin[0],
            pad_bottom=window.pads_end[0],
        )
    return {
        "class_name": f"ZeroPadding{window.rank}D",
        "name": name,
        "inputs": [source],
        "data_format": CHANNELS_LAST,
        "n_chan": int(n_chan),
        **attributes,
    }
