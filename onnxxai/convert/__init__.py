"""onnxxai's converters: additions to onnx2torch's registry and the conversion pipeline.

:mod:`~onnxxai.convert.registry` is the one registration API (the ``register`` decorator, and
:func:`register_all`, which imports every family in :data:`FAMILIES` and writes their converters
into onnx2torch's registry in one checked step). :mod:`~onnxxai.convert.pipeline` normalizes a
model and converts it. Every other module is one op family, named for its ops. Nothing is
registered at import time; the pipeline calls :func:`register_all` before converting.
"""

from __future__ import annotations

from onnxxai.convert.registry import FAMILIES, register_all

__all__ = ["register_all", "FAMILIES"]
