"""Tensor layouts of a model's inputs and outputs, as the `channels-last` pass leaves them.

A pass that changes the layout a graph input or output has at the model's interface (NCHW -> NHWC)
records it in the model's metadata, so that whoever feeds the compiled model (the C simulation, the
verifier, translation validation, a user) can transpose its data the same way. One key per value:

    metadata_props["hawqc.layout.<value name>"] = "NCHW->NHWC perm=0,2,3,1"

`perm` maps the value's ORIGINAL layout (the one of the model as it was exported) to its current
one, numpy's way: `current = original.transpose(perm)`. The letters before `perm=` are for people
(and reports); only the permutation is read back. The record survives `.onnx` and ONNX text, both
of which keep the model's metadata.
"""

from __future__ import annotations

from collections.abc import Sequence

import onnx_ir as ir

from hawqc.errors import UserInputError
from hawqc.ir.ops.traits import Trait, ops_with

LAYOUT_KEY_PREFIX = "hawqc.layout."

# Standard ops with a channels-last version in `CHANNELS_LAST_DOMAIN` (the same op types there):
# qonnx's Conv, MaxPool and BatchNormalization, and hawqc's extensions AveragePool,
# GlobalAveragePool and GlobalMaxPool (`Trait.CHANNELS_FIRST` says what they mean).
CHANNELS_LAST_OPS = ops_with(Trait.CHANNELS_FIRST)

# How a channels-first tensor of each rank is spelled (batch, channels, spatial...).
_AXIS_LETTERS = {1: "N", 2: "NC", 3: "NCW", 4: "NCHW", 5: "NCDHW"}

Permutation = tuple[int, ...]


def channels_last_perm(rank: int) -> Permutation:
    """[N, C, spatial...] -> [N, spatial..., C]: numpy's transpose argument."""
    return (0, *range(2, rank), 1)


def channels_first_perm(rank: int) -> Permutation:
    """[N, spatial..., C] -> [N, C, spatial...]: the inverse of `channels_last_perm`."""
    return invert(channels_last_perm(rank))


def invert(perm: Sequence[int]) -> Permutation:
    """The permutation that undoes `perm`: `x.transpose(perm).transpose(invert(perm)) == x`."""
    inverse = [0] * len(perm)
    for position, axis in enumerate(perm):
        inverse[axis] = position
    return tuple(inverse)


def compose(first: Sequence[int], then: Sequence[int]) -> Permutation:
    """One permutation for two transposes: `x.transpose(first).transpose(then)`."""
    return tuple(first[axis] for axis in then)


def is_identity(perm: Sequence[int]) -> bool:
    return all(axis == position for position, axis in enumerate(perm))


def record_layout(model: ir.Model, value_name: str, perm: Sequence[int]) -> None:
    """Record that graph input/output `value_name` was transposed by `perm` from its layout so far.

    A value recorded before keeps one record, the composition, so that it still maps the original
    layout to the current one; a composition that gives the original layout back removes the record.
    """
    key = LAYOUT_KEY_PREFIX + value_name
    previous = layout_permutations(model).get(value_name, tuple(range(len(perm))))
    if len(previous) != len(perm):
        raise ValueError(f"layout of '{value_name}': rank {len(perm)} does not match the recorded {previous}")
    total = compose(previous, perm)
    if is_identity(total):
        model.metadata_props.pop(key, None)
    else:
        model.metadata_props[key] = f"{_letters(total)} perm={','.join(map(str, total))}"


def layout_permutations(model: ir.Model) -> dict[str, Permutation]:
    """Every recorded value name -> the permutation from its original layout to its current one."""
    found = {}
    for key, text in model.metadata_props.items():
        if not key.startswith(LAYOUT_KEY_PREFIX):
            continue
        name = key[len(LAYOUT_KEY_PREFIX):]
        _, marker, digits = text.rpartition("perm=")
        try:
            perm = tuple(int(axis) for axis in digits.split(","))
        except ValueError:
            perm = ()
        if not marker or sorted(perm) != list(range(len(perm))):
            raise UserInputError(f"metadata '{key}': {text!r} does not end in a permutation 'perm=0,2,3,1'")
        found[name] = perm
    return found


def describe_layouts(model: ir.Model) -> dict[str, str]:
    """Every recorded value name -> its layout change in letters, e.g. {"x": "NCHW->NHWC"}, for reports."""
    return {name: _letters(perm) for name, perm in layout_permutations(model).items()}


def _letters(perm: Sequence[int]) -> str:
    names = _AXIS_LETTERS.get(len(perm))
    if names is None:  # no customary letters: number the axes
        names = [f"d{axis}" for axis in range(len(perm))]
        return f"({','.join(names)})->({','.join(names[axis] for axis in perm)})"
    return f"{names}->{''.join(names[axis] for axis in perm)}"
