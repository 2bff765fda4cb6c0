"""Reading a written project's `hls4ml_config.yml` safely, binary projects included.

hls4ml dumps its config with `yaml.dump`, so a precision given as an object rather than a string
(hawqc hands hls4ml an `XnorPrecisionType` for binary layers: it has no string spelling, see
`hls4ml_binary_types`) is written as a `!!python/object:hls4ml...` tag, which `yaml.safe_load`
refuses. Constructing those objects (`yaml.unsafe_load`) would run code named by the file, so this
loader reads every `!!python/object...` node as the plain mapping (or scalar, sequence) it holds.
"""

from __future__ import annotations

from typing import Any

import yaml


class _Hls4mlConfigLoader(yaml.SafeLoader):
    """SafeLoader that reads Python object tags as plain data."""


def _plain(loader: yaml.SafeLoader, _suffix: str, node: yaml.Node) -> Any:
    if isinstance(node, yaml.MappingNode):
        return loader.construct_mapping(node, deep=True)
    if isinstance(node, yaml.SequenceNode):
        return loader.construct_sequence(node, deep=True)
    return loader.construct_scalar(node)


_Hls4mlConfigLoader.add_multi_constructor("tag:yaml.org,2002:python/", _plain)


def load_hls4ml_config(text: str) -> Any:
    """The parsed config (yaml.YAMLError on malformed text, as `yaml.safe_load`)."""
    return yaml.load(text, Loader=_Hls4mlConfigLoader)
