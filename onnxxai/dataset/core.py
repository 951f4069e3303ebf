"""Explain a whole dataset: shards, the per-shard worker, the in-process engine, results on disk.

A run splits the source's inputs, in the source's fixed id order, into shards of ``shard_size``
inputs. One :class:`ShardExplainer` (the model loaded once) turns a shard into one table: a row per
input and method with the id, the method, the explained output (``target``), the model's top output
(``prediction``), the explained output's value (``score``), the attribution (flat float32 values and
their ``shape``) and, when asked, the heatmap PNG's path. Every shard is computed the same way
whichever engine runs it, and a seeded method draws from a seed derived from the run's seed and the
input's id, so attributions do not depend on the engine, the number of workers or restarts.

On disk (``out``): ``run.json`` (what was run), ``shard=K/`` folders of Parquet files (hive-style,
readable by pyarrow, pandas, Spark or Ray Data as one dataset), ``png/`` when PNGs are asked for. A
shard's folder appears only once it is complete (written under a temporary name, then renamed), so a
stopped run started again skips the shards already there.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from onnxxai.dataset.sources import ArraySource, ImageFolder, Source, as_source
from onnxxai.dataset.worker import RunConfig, ShardExplainer, input_seed, shard_dir
from onnxxai.errors import InputError

__all__ = ["RunConfig", "ShardExplainer", "explain_dataset", "read_results", "DatasetRun", "input_seed",
           "ENGINES", "DEFAULT_SHARD_SIZE"]

DEFAULT_SHARD_SIZE = 64
ENGINES = ("local", "ray")

# -- runs -------------------------------------------------------------------------------------------
@dataclass
class DatasetRun:
    """What :func:`explain_dataset` did: where, how many inputs and shards, which it skipped."""

    out: Path
    inputs: int
    shards: int
    written: list[int] = field(default_factory=list)
    skipped: list[int] = field(default_factory=list)
    engine: str = "local"
    seconds: float = 0.0

    def table(self) -> Any:
        """Every result row (see :func:`read_results`)."""
        return read_results(self.out)


def sha256_of(path: str | os.PathLike) -> str:
    """SHA-256 hex digest of the file at ``path``, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def plan_shards(ids: Sequence[str], shard_size: int) -> list[list[str]]:
    """Consecutive ids in the source's order, ``shard_size`` per shard (the last may be shorter)."""
    if shard_size < 1:
        raise InputError(f"shard_size must be at least 1, got {shard_size}")
    return [list(ids[i:i + shard_size]) for i in range(0, len(ids), shard_size)]


def _manifest(config: RunConfig, source: Source, shard_size: int, model_path: str) -> dict:
    settings = {k: v for k, v in asdict(config).items() if k not in ("png_dir", "source_root", "device")}
    manifest = {"model_sha256": sha256_of(model_path), "inputs": len(source.ids), "shard_size": shard_size,
                "ids_sha256": hashlib.sha256("\n".join(source.ids).encode()).hexdigest(), **settings}
    return json.loads(json.dumps(manifest))  # as it reads back from run.json (tuples become lists)


def _prepare_out(out: Path, manifest: dict, resume: bool) -> None:
    out.mkdir(parents=True, exist_ok=True)
    path = out / "run.json"
    if path.exists():
        previous = json.loads(path.read_text())
        if previous != manifest:
            changed = sorted(k for k in set(previous) | set(manifest) if previous.get(k) != manifest.get(k))
            raise InputError(f"{out} holds results of a different run ({', '.join(changed)} differ); "
                             "use another --out folder")
        if not resume:
            raise InputError(f"{out} already holds this run's results; pass resume=True (--resume) to complete it")
    else:
        path.write_text(json.dumps(manifest, indent=2, sort_keys=True))
    for stale in out.glob(".tmp-*"):  # what a stopped run left half-written
        shutil.rmtree(stale, ignore_errors=True)


def write_shard(out: Path, shard: int, table: Any) -> None:
    """Write one shard's table atomically: a temporary folder renamed to ``shard=K``."""
    import pyarrow.parquet as pq

    tmp = out / f".tmp-shard={shard}-{os.getpid()}"
    tmp.mkdir(parents=True, exist_ok=True)
    pq.write_table(table.drop_columns(["shard"]), tmp / "part-0.parquet")
    os.replace(tmp, shard_dir(out, shard))


def explain_dataset(
    source: Any,
    model_path: str | os.PathLike,
    methods: Sequence[str] = ("integrated-gradients",),
    *,
    out: str | os.PathLike = "onnxxai-dataset",
    engine: str = "local",
    address: str | None = None,
    actors: int | None = None,
    shard_size: int = DEFAULT_SHARD_SIZE,
    output_selection: int | None = None,
    samples: int | None = None,
    batch_size: int | None = None,
    seed: int = 0,
    device: str = "cpu",
    png: bool = False,
    image: dict | None = None,
    resume: bool = True,
    progress: Callable[[int, int], None] | None = None,
) -> DatasetRun:
    """Explain every input of ``source`` with each of ``methods``; results go to sharded Parquet.

    ``source``: a folder of images, a ``.csv``/``.parquet`` file (numeric feature columns, optional
    ``id``), an array (first axis = inputs), or a Ray Dataset (columns ``id`` and ``x``; Ray engine).
    ``engine``: ``"local"`` (this process, nothing to start) or ``"ray"`` (Ray Data: ``map_batches``
    with an actor pool of ``actors`` actors, each loading the model once; ``address`` joins a
    cluster, None starts a local Ray). ``image`` holds image-preprocessing options
    (:func:`onnxxai.preprocess.image_spec`'s layout, size, scale, mean, std). With ``resume`` a run
    into an ``out`` folder that holds part of the same run (same model file, methods, settings and
    inputs) skips the shards already written; a different run there is refused. ``progress(done,
    total)`` is called after each shard with counts of inputs.
    """
    import time

    if engine not in ENGINES:
        raise InputError(f"engine must be one of {', '.join(ENGINES)}, not {engine!r}")
    from onnxxai.methods import method

    methods = tuple(methods)
    if not methods:
        raise InputError("name at least one method")
    for name in methods:
        method(name)  # unknown names fail before any work
    model_path = str(model_path)
    if not Path(model_path).is_file():
        raise InputError(f"{model_path}: no such model file")
    t0 = time.perf_counter()
    ray_dataset = engine == "ray" and _is_ray_dataset(source)
    if ray_dataset:
        from onnxxai.dataset.ray_engine import dataset_ids

        source_obj: Source = Source(dataset_ids(source))
    elif _is_ray_dataset(source):
        raise InputError("a Ray Dataset source needs engine='ray'")
    else:
        source_obj = as_source(source)
    out = Path(out)
    config = RunConfig(
        model_path=os.path.abspath(model_path), methods=methods, output_selection=output_selection, samples=samples,
        batch_size=batch_size, seed=seed, device=device, png_dir=str((out / "png").resolve()) if png else None,
        image=image if image is not None else ({} if isinstance(source_obj, ImageFolder) else None),
        source_kind=source_obj.kind,
        source_root=str(source_obj.root) if isinstance(source_obj, ImageFolder) else None,
    )
    _prepare_out(out, _manifest(config, source_obj, shard_size, model_path), resume)
    shards = plan_shards(source_obj.ids, shard_size)
    done = [k for k in range(len(shards)) if shard_dir(out, k).is_dir()]
    pending = sorted(set(range(len(shards))) - set(done))
    run = DatasetRun(out, len(source_obj.ids), len(shards), skipped=done, engine=engine)
    if engine == "local":
        worker = ShardExplainer(config) if pending else None
        finished = sum(len(shards[k]) for k in done)
        for k in pending:
            x = source_obj.payload(shards[k])
            table = worker.explain(k, shards[k], x.array if isinstance(x, ArraySource) else None)  # type: ignore[union-attr]
            write_shard(out, k, table)
            run.written.append(k)
            finished += len(shards[k])
            if progress is not None:
                progress(finished, len(source_obj.ids))
    else:
        from onnxxai.dataset.ray_engine import run_ray

        run.written = run_ray(source if ray_dataset else source_obj, shards, pending, config, out,
                              address=address, actors=actors, progress=progress)
    run.seconds = time.perf_counter() - t0
    return run


def _is_ray_dataset(source: Any) -> bool:
    return type(source).__module__.startswith("ray.data")


def read_results(out: str | os.PathLike) -> Any:
    """Every row a run wrote (pyarrow Table sorted by id then method, with its ``shard`` column)."""
    import pyarrow.compute as pc
    import pyarrow.dataset as pds

    out = Path(out)
    if not (out / "run.json").is_file():
        raise InputError(f"{out}: not a dataset run folder (no run.json)")
    parts = sorted(out.glob("shard=*"), key=lambda p: int(p.name.split("=", 1)[1]))
    if not parts:
        raise InputError(f"{out}: no shard has been written yet")
    import pyarrow as pa

    tables = []
    for part in parts:
        table = pds.dataset(part, format="parquet").to_table()
        table = table.select([c for c in table.column_names if c != "shard"])
        tables.append(table.append_column("shard", pa.array([int(part.name.split("=", 1)[1])] * table.num_rows, pa.int64())))
    table = pa.concat_tables(tables, promote_options="default")
    order = pc.sort_indices(table, sort_keys=[("id", "ascending"), ("method", "ascending")])
    return table.take(order)


def attributions(table: Any, method: str | None = None) -> dict[str, np.ndarray]:
    """``{id: attribution array}`` (shaped) from a results table, for one method (or the only one)."""
    methods = sorted(set(table.column("method").to_pylist()))
    if method is None:
        if len(methods) != 1:
            raise InputError(f"the results hold several methods {methods}; name one")
        method = methods[0]
    rows = table.filter(np.asarray(table.column("method").to_pylist()) == method)
    return {i: np.asarray(a, dtype=np.float32).reshape(s) for i, a, s in
            zip(rows.column("id").to_pylist(), rows.column("attribution").to_pylist(), rows.column("shape").to_pylist())}
