"""Quantization annotations: what quantizer produced a constant, recorded on the value itself.

`fold-quant` replaces `Quant(W)` on a constant by an initializer holding exactly the Quant's float32
output; the quantization (bit width, signedness, narrow range, scale, zero point, rounding mode) is
kept as an annotation on that initializer, so precision inference and the backends still know that
the values are `(q - zeropt) * scale` with `q` an integer of `bits` bits. The annotation is JSON in
`value.metadata_props["hawqc.quant"]`:

    {"bits": 4, "signed": 1, "narrow": 1, "scale": [[0.5], [0.25]], "zeropt": 0.0, "rounding_mode": "ROUND"}

`scale` and `zeropt` are a number (per tensor) or nested lists with the shape of the Quant's
parameter (per channel, e.g. [[0.5], [0.25]] for a [2, 1] scale), so the channel axis is kept.
float32 parameters are written as the float64 numbers they are; JSON's shortest repr of a float64
reads back to the same float64, hence to the same float32.

Where the annotation survives a round trip (measured with onnx 1.22 and onnx_ir 1.1):
- binary `.onnx`: onnx_ir writes a value's `metadata_props` into the graph's `value_info` entry for
  that name (initializers included) and reads it back onto the value: nothing more is needed.
- ONNX text: the printer drops the `metadata_props` of values, initializers and nodes; only the
  model's own `metadata_props` are printed and parsed. `hawqc.ir.io` therefore mirrors every
  annotation into the model's metadata under `hawqc.quant.<value name>` while printing
  (`mirrored_in_model_metadata`) and moves them back onto the values after parsing
  (`restore_from_model_metadata`), so the text a lit test checks shows the annotation.
"""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx_ir as ir

from hawqc.errors import UserInputError

ANNOTATION_KEY = "hawqc.quant"
# Model-level key of the text mirror of the annotation of one value: this prefix + the value's name.
MODEL_MIRROR_PREFIX = "hawqc.quant."
# Every value annotation the text mirror carries, as `<key>.<value name>`: this module's, and the
# fixed-point types `infer-precision` writes (hawqc.passes.infer_precision).
MIRRORED_KEYS = (ANNOTATION_KEY, "hawqc.type", "hawqc.accum_type")

# A parameter as stored: a number, or nested tuples with the parameter's shape.
Parameter = float | tuple[Any, ...]


@dataclass(frozen=True)
class QuantAnnotation:
    """The parameters of the QONNX `Quant` that produced a constant (see the module docstring).

    The meaning is QONNX's: values are `(q - zeropt) * scale` in float32 with `q` an integer in
    `integer_range()`. A 1-bit signed quantizer is qonnx's bipolar case: `q` is -1 or +1.
    """

    bits: int
    signed: bool
    narrow: bool
    scale: Parameter
    zeropt: Parameter
    rounding_mode: str = "ROUND"

    def __post_init__(self) -> None:
        if isinstance(self.bits, bool) or not isinstance(self.bits, int) or self.bits < 1:
            raise UserInputError(f"quantization annotation: bits must be a positive integer, got {self.bits!r}")
        if not isinstance(self.rounding_mode, str) or not self.rounding_mode:
            raise UserInputError(f"quantization annotation: bad rounding mode {self.rounding_mode!r}")
        for name in ("scale", "zeropt"):
            parameter = getattr(self, name)
            if not all(math.isfinite(x) for x in _flatten(parameter)):
                raise UserInputError(f"quantization annotation: {name} must be finite numbers")
            try:
                np.asarray(parameter, dtype=np.float64)
            except ValueError:
                raise UserInputError(f"quantization annotation: {name} is not a rectangular array") from None
        # Normalized spellings, so that equal quantizers give equal annotations.
        object.__setattr__(self, "signed", bool(self.signed))
        object.__setattr__(self, "narrow", bool(self.narrow))
        object.__setattr__(self, "rounding_mode", self.rounding_mode.upper())

    @classmethod
    def from_arrays(
        cls,
        bits: int,
        signed: bool,
        narrow: bool,
        scale: np.ndarray,
        zeropt: np.ndarray,
        rounding_mode: str = "ROUND",
    ) -> QuantAnnotation:
        """From a Quant's parameter tensors (a scalar or size-1 tensor of rank 0 stays a number)."""
        return cls(int(bits), bool(signed), bool(narrow), _to_parameter(scale), _to_parameter(zeropt), rounding_mode)

    def scale_array(self) -> np.ndarray:
        """The scale as the float32 tensor it was (shape kept; rank 0 when per tensor)."""
        return np.asarray(self.scale, dtype=np.float32)

    def zeropt_array(self) -> np.ndarray:
        return np.asarray(self.zeropt, dtype=np.float32)

    @property
    def per_channel(self) -> bool:
        return self.scale_array().size > 1 or self.zeropt_array().size > 1

    def integer_range(self) -> tuple[int, int]:
        """The integers `q` may take (mathematically; 1-bit signed is qonnx's bipolar -1/+1)."""
        if self.signed and self.bits == 1:
            return -1, 1
        if self.signed:
            return -(2 ** (self.bits - 1)) + int(self.narrow), 2 ** (self.bits - 1) - 1
        # qonnx's code (not its spec) also narrows unsigned quantizers, at the top.
        return 0, 2**self.bits - 1 - int(self.narrow)

    def transposed(self, perm: tuple[int, ...] | list[int]) -> QuantAnnotation:
        """The annotation of the annotated tensor transposed by `perm` (per-channel axes follow).

        Parameters of lower rank broadcast from the right, so they are first padded with leading 1s.
        """
        perm = tuple(perm)
        arrays = []
        for array in (self.scale_array(), self.zeropt_array()):
            if array.ndim == 0:
                arrays.append(array)
                continue
            if array.ndim > len(perm):
                raise UserInputError(f"quantization annotation of rank {array.ndim} cannot take permutation {list(perm)}")
            padded = array.reshape((1,) * (len(perm) - array.ndim) + array.shape)
            arrays.append(padded.transpose(perm))
        return QuantAnnotation.from_arrays(self.bits, self.signed, self.narrow, arrays[0], arrays[1], self.rounding_mode)

    def to_json(self) -> str:
        return json.dumps(
            {
                "bits": self.bits,
                "signed": int(self.signed),
                "narrow": int(self.narrow),
                "scale": _to_json_parameter(self.scale),
                "zeropt": _to_json_parameter(self.zeropt),
                "rounding_mode": self.rounding_mode,
            },
            allow_nan=False,
        )

    @classmethod
    def from_json(cls, text: str) -> QuantAnnotation:
        try:
            data = json.loads(text)
            return cls(
                bits=data["bits"],
                signed=bool(data["signed"]),
                narrow=bool(data["narrow"]),
                scale=_from_json_parameter(data["scale"]),
                zeropt=_from_json_parameter(data["zeropt"]),
                rounding_mode=data.get("rounding_mode", "ROUND"),
            )
        except (ValueError, KeyError, TypeError) as err:
            raise UserInputError(f"bad quantization annotation {text!r} ({err})") from None


def annotate(value: ir.Value, annotation: QuantAnnotation) -> None:
    """Record on `value` that it holds the output of the quantizer `annotation` describes."""
    value.metadata_props[ANNOTATION_KEY] = annotation.to_json()


def read_annotation(value: ir.Value) -> QuantAnnotation | None:
    """The quantization annotation of `value`, or None if it has none."""
    text = value.metadata_props.get(ANNOTATION_KEY)
    if text is None:
        return None
    try:
        return QuantAnnotation.from_json(text)
    except UserInputError as err:
        raise UserInputError(f"value '{value.name}': {err}") from None


# ---------------------------------------------------------------------------------------------------
# The ONNX text mirror (see the module docstring): used by hawqc.ir.io only.
# ---------------------------------------------------------------------------------------------------


def _graph_values(graph: ir.Graph) -> Iterator[ir.Value]:
    yield from graph.inputs
    yield from graph.initializers.values()
    for node in graph:
        yield from node.outputs


@contextlib.contextmanager
def mirrored_in_model_metadata(model: ir.Model) -> Iterator[ir.Model]:
    """While inside, the annotations of the main graph's values are also in the model's metadata.

    The model is left exactly as it was afterwards (printing must not change what it prints).
    """
    saved = dict(model.metadata_props)
    try:
        for value in _graph_values(model.graph):
            for annotation_key in MIRRORED_KEYS:
                text = value.metadata_props.get(annotation_key)
                if text is not None and value.name:
                    model.metadata_props[f"{annotation_key}.{value.name}"] = text
        yield model
    finally:
        model.metadata_props.clear()
        model.metadata_props.update(saved)


def restore_from_model_metadata(model: ir.Model) -> None:
    """Move mirrored annotations from the model's metadata back onto the values they name."""
    keys = [
        (key, annotation_key)
        for key in model.metadata_props
        for annotation_key in MIRRORED_KEYS
        if key.startswith(annotation_key + ".")
    ]
    if not keys:
        return
    by_name = {value.name: value for value in _graph_values(model.graph) if value.name}
    for key, annotation_key in keys:
        name = key[len(annotation_key) + 1 :]
        value = by_name.get(name)
        if value is None:
            raise UserInputError(f"model metadata '{key}' annotates '{name}', which is no value of the graph")
        value.metadata_props[annotation_key] = model.metadata_props.pop(key)


# ---------------------------------------------------------------------------------------------------


def _to_parameter(array: np.ndarray) -> Parameter:
    array = np.asarray(array)
    if array.ndim == 0:
        return float(array)
    return _nested_tuple(array.astype(np.float64).tolist())


def _nested_tuple(data: Any) -> Parameter:
    if isinstance(data, list):
        return tuple(_nested_tuple(item) for item in data)
    return float(data)


def _to_json_parameter(parameter: Parameter) -> Any:
    if isinstance(parameter, tuple):
        return [_to_json_parameter(item) for item in parameter]
    return parameter


def _from_json_parameter(data: Any) -> Parameter:
    if isinstance(data, list):
        return tuple(_from_json_parameter(item) for item in data)
    if isinstance(data, bool) or not isinstance(data, int | float):
        raise TypeError(f"expected a number or a list, got {data!r}")
    return float(data)


def _flatten(parameter: Parameter) -> Iterator[float]:
    if isinstance(parameter, tuple):
        for item in parameter:
            yield from _flatten(item)
    else:
        yield parameter
