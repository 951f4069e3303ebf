"""The unit of work of a dataset run: a shard of inputs explained by a worker that loads the model once.

Both engines (in-process and Ray) call :class:`ShardExplainer` on the same shards, so a shard's table
does not depend on the engine; seeded methods draw per input (:func:`input_seed`).
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from onnxxai.dataset.sources import ArraySource, ImageFolder
from onnxxai.errors import InputError

__all__ = ["RunConfig", "ShardExplainer", "input_seed", "shard_dir"]


@dataclass(frozen=True)
class RunConfig:
    """Everything a worker needs to explain a shard (plain data: it travels to Ray actors)."""

    model_path: str
    methods: tuple[str, ...]
    output_selection: int | None = None
    samples: int | None = None
    batch_size: int | None = None
    seed: int = 0
    device: str = "cpu"
    png_dir: str | None = None
    image: dict | None = None  # ImageSpec options: layout, size, scale, mean, std
    source_kind: str = ""
    source_root: str | None = None  # image folders: where the ids are relative to


def input_seed(seed: int, input_id: str) -> int:
    """The seed a seeded method uses for input ``input_id`` in a run seeded ``seed``."""
    entropy = [int(seed) & 0xFFFFFFFF, zlib.crc32(input_id.encode("utf-8"))]
    return int(np.random.SeedSequence(entropy).generate_state(1)[0])


class ShardExplainer:
    """Loads the model once; called on a shard (ids + inputs, or ids of image files) returns its table.

    Also the callable class Ray Data's ``map_batches`` instantiates once per actor: called on a batch
    of shard rows (``shard``, ``ids``, ``x``), it returns their tables concatenated.
    """

    def __init__(self, config: RunConfig) -> None:
        from onnxxai.model import load
        from onnxxai.preprocess import image_spec

        self.config = config
        self.model = load(config.model_path, device=config.device)
        self.spec = self.model.input_spec()
        self.image = None
        if config.image is not None:
            self.image = image_spec(self.spec, **config.image)

    def inputs(self, ids: Sequence[str], x: np.ndarray | None) -> np.ndarray:
        """The shard's model inputs: ``x`` when the rows carry them, else the image files ``ids``."""
        if x is not None:
            return ArraySource(list(ids), np.asarray(x)).load(ids, self.spec, self.image)
        if self.config.source_root is None:
            raise InputError("a shard without inputs needs the image folder it comes from")
        return ImageFolder(list(ids), Path(self.config.source_root)).load(ids, self.spec, self.image)

    def explain(self, shard: int, ids: Sequence[str], x: np.ndarray | None = None) -> Any:
        """The table of shard ``shard``: one row per input and method (see the module docstring)."""
        import pyarrow as pa

        from onnxxai.dispatch import analyze
        from onnxxai.methods import MethodOptions, method

        batch = self.inputs(ids, x)
        columns: dict[str, list] = {k: [] for k in ("id", "method", "target", "prediction", "score",
                                                     "shape", "attribution", "png")}
        for name in self.config.methods:
            chosen = method(name)
            options = dict(batch_size=self.config.batch_size, samples=self.config.samples, seed=self.config.seed)
            if chosen.seeded:  # one seed per input, from the run's seed and the input's id
                expls = [analyze(batch[i:i + 1], chosen.build(self.model, MethodOptions(
                    **{**options, "seed": input_seed(self.config.seed, ids[i])})), self.config.output_selection)
                    for i in range(len(ids))]
            else:
                whole = analyze(batch, chosen.build(self.model, MethodOptions(**options)), self.config.output_selection)
                expls = [whole]
            vals = np.concatenate([np.asarray(e.val) for e in expls])
            outputs = np.concatenate([np.asarray(e.output).reshape(len(np.asarray(e.val)), -1) for e in expls])
            targets = np.concatenate([np.asarray(e.output_selection).reshape(-1) for e in expls]).astype(np.int64)
            pngs = self._pngs(name, ids, expls) if self.config.png_dir else [None] * len(ids)
            for i, input_id in enumerate(ids):
                columns["id"].append(input_id)
                columns["method"].append(name)
                columns["target"].append(int(targets[i]))
                columns["prediction"].append(int(outputs[i].argmax()))
                columns["score"].append(float(outputs[i, targets[i]]))
                columns["shape"].append(list(vals[i].shape))
                columns["attribution"].append(vals[i].astype(np.float32).ravel())
                columns["png"].append(pngs[i])
        schema = pa.schema([("id", pa.string()), ("method", pa.string()), ("target", pa.int64()),
                            ("prediction", pa.int64()), ("score", pa.float64()), ("shape", pa.list_(pa.int64())),
                            ("attribution", pa.list_(pa.float32())), ("png", pa.string())])
        table = pa.table({k: columns[k] for k in schema.names}, schema=schema)
        return table.append_column("shard", pa.array([int(shard)] * table.num_rows, pa.int64()))

    def _pngs(self, name: str, ids: Sequence[str], expls: list) -> list[str | None]:
        from onnxxai.heatmap import heatmap, save_png

        folder = Path(self.config.png_dir) / name  # type: ignore[arg-type]
        folder.mkdir(parents=True, exist_ok=True)
        layout = self.image.layout if self.image is not None else "auto"
        images = np.concatenate([heatmap(e, layout=layout) for e in expls]) if len(self.spec.shape) == 4 else None
        if images is None:
            return [None] * len(ids)
        paths = []
        for input_id, image in zip(ids, images):
            path = folder / (input_id.replace("/", "__") + ".png")
            save_png(image, path)
            paths.append(str(path))
        return paths

    def __call__(self, batch: dict[str, Any]) -> Any:
        """Ray Data's entry point: a batch of shard rows -> their tables concatenated."""
        import pyarrow as pa

        tables = []
        for k in range(len(batch["shard"])):
            x = batch["x"][k] if "x" in batch else None
            tables.append(self.explain(int(batch["shard"][k]), [str(i) for i in batch["ids"][k]],
                                       None if x is None or np.asarray(x).size == 0 else np.asarray(x)))
        return pa.concat_tables(tables)


def shard_dir(out: Path, shard: int) -> Path:
    """The folder of shard ``shard``'s results (hive-style ``shard=K``)."""
    return out / f"shard={shard}"
