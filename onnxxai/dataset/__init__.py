"""Explain whole datasets: sharded Parquet results, an in-process engine and a Ray Data engine.

See :func:`explain_dataset` (:mod:`onnxxai.dataset.core`); sources in :mod:`onnxxai.dataset.sources`;
the Ray engine in :mod:`onnxxai.dataset.ray_engine` (imported only when asked for).
"""

from onnxxai.dataset.core import DatasetRun, attributions, explain_dataset, input_seed, read_results
from onnxxai.dataset.sources import ArraySource, ImageFolder, Source, Table, as_source

__all__ = ["explain_dataset", "read_results", "attributions", "DatasetRun", "input_seed",
           "Source", "ImageFolder", "Table", "ArraySource", "as_source"]
