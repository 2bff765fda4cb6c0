"""Pass names -> pass classes, and named pipelines -> pipeline text.

Lazy on purpose: built-in passes are listed as import paths and imported on first use, and plugin
passes (entry-point group `hawqc.passes`) are looked up only when a name is not built in or the
full list is asked for. Nothing is filled in as a side effect of importing a module.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from importlib.metadata import entry_points

from hawqc.errors import UserInputError
from hawqc.passes.base import Pass

ENTRY_POINT_GROUP = "hawqc.passes"

BUILTIN_PASSES: dict[str, str] = {
    "dce": "hawqc.passes.dce:DeadCodeElimination",
    "remove-identity": "hawqc.passes.remove_identity:RemoveIdentity",
    "remove-dropout": "hawqc.passes.remove_dropout:RemoveDropout",
    "fold-constants": "hawqc.passes.fold_constants:FoldConstants",
    "topo-sort": "hawqc.passes.topo_sort:TopologicalSort",
    "unique-names": "hawqc.passes.unique_names:UniqueNames",
    "gemm-to-matmul": "hawqc.passes.gemm_to_matmul:GemmToMatMul",
    "fold-quant": "hawqc.passes.fold_quant:FoldQuant",
    "exact-requant": "hawqc.passes.exact_requant:ExactRequant",
    "integer-requant": "hawqc.passes.integer_requant:IntegerRequant",
    "infer-precision": "hawqc.passes.infer_precision:InferPrecision",
    "channels-last": "hawqc.passes.channels_last:ChannelsLast",
    "fuse-bn": "hawqc.passes.fuse_bn:FuseBatchNorm",
    "remove-output-softmax": "hawqc.passes.remove_output_softmax:RemoveOutputSoftmax",
    "read-as-hawq": "hawqc.passes.read_as_hawq:ReadAsHawq",
    "default-precision": "hawqc.passes.default_precision:DefaultPrecision",
    "input-precision": "hawqc.passes.input_precision:InputPrecision",
}

# A named pipeline is usable wherever a pass name is. DCE runs again after folding because folding
# leaves the producers of folded values (and their now unused constants) behind.
BUILTIN_PIPELINES: dict[str, str] = {
    "cleanup": "dce,remove-identity,remove-dropout,fold-constants,dce,topo-sort,unique-names",
    # What the hls4ml lowering needs in front of it: quantized constants folded, BatchNorm turned into
    # requantization, the whole graph channels-last, dense layers as MatMul+Add, all clean.
    # fold-quant runs before fuse-bn so that fuse-bn sees annotated (quantized) weights; exact-requant
    # before fold-quant, which would fold the weight Quants and power-of-two Divs it reads;
    # integer-requant after exact-requant (which keeps HAWQ exports' float32 meaning where it can) and
    # before fold-quant (it reads weight Quants to take their exact codes).
    "hls4ml-prepare": "cleanup,exact-requant,integer-requant,fold-quant,fuse-bn,channels-last,gemm-to-matmul,cleanup",
    # What `hawqc` runs before lowering. Not infer-precision: the lowering infers the types itself, and
    # it would refuse a float model, which gets its types only after the pipeline, from
    # `--default-precision` (the pass default-precision).
    "default": "hls4ml-prepare",
}


@dataclass
class PassRegistry:
    """Where pass names are resolved. `default_registry()` is the one the CLI and API use."""

    passes: dict[str, str | type[Pass]] = field(default_factory=lambda: dict(BUILTIN_PASSES))
    pipelines: dict[str, str] = field(default_factory=lambda: dict(BUILTIN_PIPELINES))
    _plugins_loaded: bool = False

    def register(self, cls: type[Pass]) -> type[Pass]:
        """Add a pass class (usable as a decorator). A name may be registered only once."""
        name = getattr(cls, "name", None)
        if not isinstance(name, str) or not name:
            raise UserInputError(f"{cls.__qualname__}: a pass needs a class attribute 'name'")
        if name in self.passes or name in self.pipelines:
            existing = self.passes.get(name)
            if existing is not cls:
                raise UserInputError(f"pass name '{name}' is already registered")
        self.passes[name] = cls
        return cls

    def register_pipeline(self, name: str, text: str) -> None:
        if name in self.passes or name in self.pipelines:
            raise UserInputError(f"pipeline name '{name}' is already registered")
        self.pipelines[name] = text

    def lookup(self, name: str) -> type[Pass]:
        if name not in self.passes:
            self._load_plugins()
        target = self.passes.get(name)
        if target is None:
            raise UserInputError(f"unknown pass '{name}' (known: {', '.join(self.names())})")
        if isinstance(target, str):
            module, _, attribute = target.partition(":")
            target = getattr(importlib.import_module(module), attribute)
            self.passes[name] = target
        return target

    def is_pipeline(self, name: str) -> bool:
        return name in self.pipelines

    def names(self) -> list[str]:
        """Every pass and named pipeline, sorted: what error messages offer."""
        self._load_plugins()
        return sorted({*self.passes, *self.pipelines})

    def _load_plugins(self) -> None:
        if self._plugins_loaded:
            return
        self._plugins_loaded = True
        for entry in entry_points(group=ENTRY_POINT_GROUP):
            if entry.name not in self.passes:
                self.passes[entry.name] = entry.value


_DEFAULT: PassRegistry | None = None


def default_registry() -> PassRegistry:
    global _DEFAULT
    if _DEFAULT is None:
        _DEFAULT = PassRegistry()
    return _DEFAULT


def register_pass(cls: type[Pass]) -> type[Pass]:
    """Decorator: make a pass available by name in the default registry."""
    return default_registry().register(cls)
