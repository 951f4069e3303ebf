"""What an analyzer explains (:class:`Target`) and how it runs (:class:`Execution`).

Every analyzer built on a model takes the same keywords: ``input_name``, ``output_name``,
``fixed_inputs`` and ``attribute_at`` say where to attribute; ``batch_size``, ``precision``,
``compile`` and ``check_precision`` say how to run. They are validated here, once, by
:func:`split_options`; each analyzer names the keywords it accepts. ``target=Target(...)`` gives
the first four as one value (e.g. to reuse it across methods).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, fields
from typing import Any, TypedDict

from onnxxai.errors import AnalyzerError

__all__ = [
    "Target", "Execution", "PRECISIONS", "TargetOptions", "GradientOptions", "TARGET_OPTIONS", "GRADIENT_OPTIONS",
    "split_options",
]

#: numerics of the forward/backward passes: exact float32, TF32 tensor cores, or bfloat16 autocast
PRECISIONS = ("float32", "tf32", "bf16")


@dataclass(frozen=True)
class Target:
    """Where an analyzer attributes: input ``input_name`` (None: the single float input), output
    ``output_name`` (None: the first float output), values for the model's other inputs
    (``fixed_inputs``: name -> array of batch 1 or the analyzed batch), and optionally an ONNX
    tensor ``attribute_at`` to attribute at instead of the input (layer attribution; integer inputs
    default to the first float tensor computed from them). Names are checked against the model when
    an analyzer is built."""

    input_name: str | None = None
    output_name: str | None = None
    fixed_inputs: Mapping[str, Any] | None = None
    attribute_at: str | None = None

    def __post_init__(self) -> None:
        for name in ("input_name", "output_name", "attribute_at"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, str):
                raise AnalyzerError(f"{name} must be a tensor name (str), got {type(value).__name__}")
        if self.fixed_inputs is not None and not isinstance(self.fixed_inputs, Mapping):
            raise AnalyzerError(f"fixed_inputs must be a mapping {{input name: array}}, got {type(self.fixed_inputs).__name__}")


@dataclass(frozen=True)
class Execution:
    """How an analyzer runs: ``batch_size`` rows per forward/backward (None: the analyzer's default),
    ``precision`` ("float32", no TF32 either; "tf32"; "bf16" autocast), ``compile`` (run the graph
    through ``torch.compile``) and ``check_precision`` (also run float32 and report the attribution's
    error in ``extras["precision_error"]``)."""

    batch_size: int | None = None
    precision: str = "float32"
    compile: bool = False
    check_precision: bool = False

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise AnalyzerError(f"precision must be one of {PRECISIONS}, not {self.precision!r}")
        if self.batch_size is not None and int(self.batch_size) < 1:
            raise AnalyzerError(f"batch_size must be a positive integer, got {self.batch_size}")
        object.__setattr__(self, "compile", bool(self.compile))
        object.__setattr__(self, "check_precision", bool(self.check_precision))


class TargetOptions(TypedDict, total=False):
    """The keyword form of a :class:`Target` and a batch size (GradCAM, LRP)."""

    input_name: str | None
    output_name: str | None
    fixed_inputs: Mapping[str, Any] | None
    batch_size: int | None


class GradientOptions(TargetOptions, total=False):
    """Every shared keyword: gradient analyzers and their augmentations take all of them."""

    attribute_at: str | None
    precision: str
    compile: bool
    check_precision: bool


#: the keywords of :class:`TargetOptions` and :class:`GradientOptions`
TARGET_OPTIONS = frozenset(TargetOptions.__optional_keys__)
GRADIENT_OPTIONS = frozenset(GradientOptions.__optional_keys__)

_TARGET_FIELDS = tuple(f.name for f in fields(Target))
_EXECUTION_FIELDS = tuple(f.name for f in fields(Execution))


def split_options(owner: str, target: Target | None, options: Mapping[str, Any], accepted: Collection[str]) -> tuple[Target, Execution]:
    """The :class:`Target` and :class:`Execution` of analyzer ``owner``'s keyword ``options``, of
    which it takes those named in ``accepted``. ``target`` replaces the Target keywords (giving
    both is an error)."""
    for name in options:
        if name not in accepted:
            raise TypeError(f"{owner}() got an unexpected keyword argument {name!r}")
    where = {name: options[name] for name in _TARGET_FIELDS if options.get(name) is not None}
    if target is None:
        target = Target(**where)
    elif not isinstance(target, Target):
        raise AnalyzerError(f"{owner}: target must be an onnxxai Target, got {type(target).__name__}")
    elif where:
        raise AnalyzerError(f"{owner}: give target=Target(...) or {', '.join(where)}=..., not both")
    for name in _TARGET_FIELDS:
        if name not in accepted and getattr(target, name) is not None:
            raise AnalyzerError(f"{owner} does not take {name} (its Target sets {name}={getattr(target, name)!r})")
    execution = Execution(**{name: options[name] for name in _EXECUTION_FIELDS if name in options})
    return target, execution
