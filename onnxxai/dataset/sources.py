"""Where a dataset's inputs come from: a folder of images, a CSV/Parquet table, or an array.

A source lists its inputs' ids (stable strings, in a fixed order) and loads any subset of them as one
model-input batch. The order of :attr:`Source.ids` defines the shards, so it never depends on the
engine or the machine: image files sorted by relative path, table rows by position (or their ``id``
column), array rows by index.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from onnxxai.errors import InputError
from onnxxai.preprocess import IMAGE_SUFFIXES, ImageSpec, load_images
from onnxxai.proto.specs import TensorSpec

__all__ = ["Source", "ImageFolder", "Table", "ArraySource", "as_source", "TABLE_SUFFIXES"]

TABLE_SUFFIXES = (".csv", ".parquet")


@dataclass
class Source:
    """Ids of the inputs, in shard order; :meth:`load` makes the batch of some of them."""

    ids: list[str]

    def load(self, ids: Sequence[str], spec: TensorSpec, image: ImageSpec | None) -> np.ndarray:  # pragma: no cover
        raise NotImplementedError

    @property
    def kind(self) -> str:
        return type(self).__name__

    def payload(self, ids: Sequence[str]) -> Any:
        """What a remote worker needs to load ``ids`` (paths for files, the rows for in-memory data)."""
        return list(ids)


@dataclass
class ImageFolder(Source):
    """Every image file under ``root`` (recursively, sorted); ids are paths relative to ``root``."""

    root: Path = Path(".")

    @classmethod
    def scan(cls, root: str | os.PathLike) -> ImageFolder:
        root = Path(root)
        files = sorted(p.relative_to(root).as_posix() for p in root.rglob("*")
                       if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise InputError(f"{root}: no image files ({', '.join(IMAGE_SUFFIXES)}) in this folder")
        return cls(files, root.resolve())

    def load(self, ids: Sequence[str], spec: TensorSpec, image: ImageSpec | None) -> np.ndarray:
        if image is None:
            raise InputError("an image folder needs an image input: the model's input is not image-like")
        return load_images([self.root / i for i in ids], image, spec.dtype)


@dataclass
class ArraySource(Source):
    """Rows of an in-memory array (first axis = inputs); ids are ``0``, ``1``, ... unless given."""

    array: np.ndarray = None  # type: ignore[assignment]

    @classmethod
    def of(cls, array: Any, ids: Sequence[str] | None = None) -> ArraySource:
        array = np.asarray(array)
        if array.ndim == 0:
            raise InputError("an array source needs a first axis of inputs")
        ids = [str(i) for i in (ids if ids is not None else range(len(array)))]
        if len(ids) != len(array) or len(set(ids)) != len(ids):
            raise InputError(f"an array source needs {len(array)} distinct ids, got {len(ids)} ({len(set(ids))} distinct)")
        return cls(ids, array)

    @cached_property
    def _index(self) -> dict[str, int]:
        """Row of each id, built once: every shard looks its rows up here."""
        return {k: i for i, k in enumerate(self.ids)}

    def _rows(self, ids: Sequence[str]) -> np.ndarray:
        return self.array[[self._index[i] for i in ids]]

    def load(self, ids: Sequence[str], spec: TensorSpec, image: ImageSpec | None) -> np.ndarray:
        return _shaped(self._rows(ids), spec)

    def payload(self, ids: Sequence[str]) -> Any:
        return ArraySource(list(ids), self._rows(ids))


@dataclass
class Table(ArraySource):
    """A CSV or Parquet file, one input per row: numeric columns are the features (reshaped to the
    model's input); an ``id`` column, when present, names the rows (else their position)."""

    path: Path = Path(".")
    columns: tuple[str, ...] = ()

    @classmethod
    def read(cls, path: str | os.PathLike) -> Table:
        import pyarrow.csv as pcsv
        import pyarrow.parquet as pq

        path = Path(path)
        try:
            table = pq.read_table(path) if path.suffix.lower() == ".parquet" else pcsv.read_csv(path)
        except (OSError, ValueError) as exc:  # pyarrow's ArrowInvalid is a ValueError
            raise InputError(f"{path}: cannot read this table ({exc})") from exc
        ids = [str(v) for v in table.column("id").to_pylist()] if "id" in table.column_names else None
        features = [c for c in table.column_names if c != "id"]
        bad = [c for c in features if not _numeric(table.schema.field(c).type)]
        if bad:
            raise InputError(f"{path}: columns {bad} are not numeric; features must be numbers (an 'id' column may be text)")
        array = np.stack([table.column(c).to_numpy(zero_copy_only=False).astype(np.float64) for c in features], axis=1)
        source = ArraySource.of(array, ids)
        return cls(source.ids, source.array, path, tuple(features))


def _numeric(arrow_type: Any) -> bool:
    import pyarrow as pa

    return pa.types.is_integer(arrow_type) or pa.types.is_floating(arrow_type) or pa.types.is_boolean(arrow_type)


def _shaped(rows: np.ndarray, spec: TensorSpec) -> np.ndarray:
    """Rows of flat features (or already shaped inputs) as a batch of ``spec``'s shape and dtype."""
    tail = spec.shape[1:]
    if all(isinstance(d, int) and d > 0 for d in tail):
        size = int(np.prod(tail)) if tail else 1
        if rows[0].size != size:
            raise InputError(f"each input has {rows[0].size} values but the model's input {spec} takes {size} per sample")
        rows = rows.reshape(len(rows), *tail)
    return np.ascontiguousarray(rows.astype(spec.dtype))


def as_source(source: Any) -> Source:
    """A :class:`Source` for a folder, a .csv/.parquet path, an array, or a Source (returned as is)."""
    if isinstance(source, Source):
        return source
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if path.is_dir():
            return ImageFolder.scan(path)
        if path.suffix.lower() in TABLE_SUFFIXES:
            if not path.is_file():
                raise InputError(f"{path}: no such file")
            return Table.read(path)
        raise InputError(f"{path}: a dataset is a folder of images or a {'/'.join(TABLE_SUFFIXES)} file")
    if isinstance(source, np.ndarray) or hasattr(source, "__array__"):
        return ArraySource.of(source)
    raise InputError(f"cannot read a dataset from {type(source).__name__}; pass a folder, a CSV/Parquet file or an array")
