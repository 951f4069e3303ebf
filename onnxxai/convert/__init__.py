"""Additions to onnx2torch's converter registry, one file per op family.

:func:`register` imports the families on purpose (once) and then registers aliases for opset
versions whose only change is wider type support. Nothing is registered at import time of
``onnxxai`` itself; :func:`onnxxai.load` calls :func:`register` before converting.
"""

from __future__ import annotations

import importlib

__all__ = ["register", "FAMILIES"]

FAMILIES = ("reduce", "pad", "pool", "activation", "split", "cast", "unary", "normalization", "shape", "sampling", "attention", "ml", "conv",
            "recurrent", "control_flow", "tensor_ops",
            "quantize", "losses", "indexing", "signal", "bitwise", "detection", "sequence")
_REGISTERED = False


def register() -> None:
    """Register onnxxai's converters and version aliases in onnx2torch's registry (idempotent)."""
    global _REGISTERED
    if _REGISTERED:
        return
    for family in FAMILIES:
        importlib.import_module(f"onnxxai.convert.{family}")
    from onnxxai.convert.aliases import register_type_only_aliases

    register_type_only_aliases()
    _REGISTERED = True
