"""Widen a converted float16/bfloat16 graph to float32 arithmetic, so explanations of a
half-precision file are computed in at least float32.

onnx2torch turns a float16 file into float16 torch modules; their gradients would then be float16
too (5e-4 relative rounding per op, underflow below 6e-8). :func:`widen` returns a copy that holds the
same weights exactly in float32 (every float16/bfloat16 value is a float32 value) and computes in
float32: parameters, buffers and tensor attributes are widened, and every float16/bfloat16 dtype the
graph casts or creates to (Cast targets, ``dtype=`` arguments) becomes float32. The only difference
from the file's own arithmetic is the rounding of intermediate results, which the float16-derived
parity tolerance bounds: load() verifies the widened graph -- the one explained -- against
onnxruntime running the file as it ships.
"""

from __future__ import annotations

import copy

import torch

__all__ = ["HALF_DTYPES", "widen", "holds_half"]

#: torch dtypes widened to float32.
HALF_DTYPES: tuple[torch.dtype, ...] = (torch.float16, torch.bfloat16)


def _wide(value):
    if isinstance(value, torch.dtype) and value in HALF_DTYPES:
        return torch.float32
    if isinstance(value, torch.Tensor) and value.dtype in HALF_DTYPES:
        return value.to(torch.float32)
    if isinstance(value, (list, tuple)) and not hasattr(value, "_fields"):
        items = [_wide(v) for v in value]
        return value if all(a is b for a, b in zip(items, value)) else type(value)(items)
    if isinstance(value, dict):
        items = {k: _wide(v) for k, v in value.items()}
        return value if all(items[k] is v for k, v in value.items()) else items
    return value  # unchanged values come back as the same object


def holds_half(module: torch.nn.Module) -> bool:
    """Whether ``module`` holds a float16/bfloat16 parameter, buffer, tensor or dtype attribute."""
    for sub in module.modules():
        if any(t.dtype in HALF_DTYPES for t in (*sub.parameters(recurse=False), *sub.buffers(recurse=False))):
            return True
        if any(_wide(v) is not v for k, v in vars(sub).items() if not k.startswith("_")):
            return True
    return False


def widen(module: torch.fx.GraphModule) -> torch.fx.GraphModule:
    """A float32 copy of ``module`` (see the module docstring); ``module`` itself is left untouched."""
    wide = copy.deepcopy(module)
    wide._apply(lambda t: t.to(torch.float32) if t.dtype in HALF_DTYPES else t)
    for sub in wide.modules():
        for key, value in list(vars(sub).items()):
            if key.startswith("_") or isinstance(value, torch.nn.Module):
                continue
            widened = _wide(value)
            if widened is not value:
                setattr(sub, key, widened)
    for node in wide.graph.nodes:
        node.args = _wide(node.args)
        node.kwargs = _wide(node.kwargs)
    wide.recompile()
    return wide
