"""The Ray engine: the same shards, computed by Ray Data's batch-inference path.

Pending shards become rows of a Ray Dataset (``shard``, ``ids``, and ``x`` for in-memory data; image
files are read by the actors from the folder, which every node must reach). ``map_batches`` runs
:class:`onnxxai.dataset.core.ShardExplainer` on an ``ActorPoolStrategy`` pool (the model is loaded
once per actor; one GPU per actor when CUDA is present), one shard per call, so a shard's table is
the one the in-process engine computes. Results are written by Ray Data's ``write_parquet``
(partitioned by shard) into a temporary folder per wave of shards, then each complete shard folder
is renamed into place: a stopped run loses at most the wave in progress.

A Ray Dataset given as the source must have an ``id`` column and an ``x`` column (one model input per
row, without the batch axis, or its flat values); it is grouped into the same shards (ids in sorted
order) by ``groupby("shard").map_groups``.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from onnxxai.dataset.worker import RunConfig, ShardExplainer, shard_dir
from onnxxai.dataset.sources import ArraySource, Source
from onnxxai.errors import InputError

__all__ = ["run_ray", "dataset_ids", "WAVE_PER_ACTOR"]

#: shards per actor in one wave (one Ray Data pipeline): more waves lose less work when stopped
WAVE_PER_ACTOR = 4


def _ray() -> Any:
    try:
        import ray
    except ImportError as exc:
        raise InputError("the Ray engine needs Ray: pip install 'onnxxai[ray]'") from exc
    return ray


def dataset_ids(dataset: Any) -> list[str]:
    """The sorted ids of a Ray Dataset source (only the ``id`` column travels to the driver)."""
    if "id" not in dataset.columns() or "x" not in dataset.columns():
        raise InputError(f"a Ray Dataset source needs columns 'id' and 'x'; it has {dataset.columns()}")
    ids = sorted(str(i) for i in dataset.unique("id"))
    if len(ids) != dataset.count():
        raise InputError("the Ray Dataset's 'id' column has repeated values; ids must be unique")
    return ids


def _init(address: str | None, actors: int) -> None:
    """Join the cluster at ``address``, or start a local Ray with at least ``actors`` CPUs; Ray's own
    INFO logs and progress bars stay off the user's terminal (they go to Ray's log folder)."""
    import logging

    ray = _ray()
    if not ray.is_initialized():
        if address is None:
            ray.init(num_cpus=max(actors, os.cpu_count() or 1), include_dashboard=False, log_to_driver=False,
                     logging_level=logging.ERROR)
        else:
            ray.init(address=address, log_to_driver=False, logging_level=logging.ERROR)
    for name in ("ray", "ray.data"):  # after init, which configures Ray's loggers
        logging.getLogger(name).setLevel(logging.ERROR)
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    context.print_on_execution_start = False
    context.enable_auto_log_stats = False


def _shard_rows(source: Any, shards: list[list[str]], wave: Sequence[int]) -> Any:
    ray = _ray()
    if isinstance(source, Source):
        rows = []
        for k in wave:
            payload = source.payload(shards[k])
            x = payload.array if isinstance(payload, ArraySource) else np.zeros(0, np.float32)
            rows.append({"shard": k, "ids": list(shards[k]), "x": x})
        return ray.data.from_items(rows)
    # a Ray Dataset: tag rows with their shard, keep the wave's, group each shard into one row
    shard_of = {i: k for k in wave for i in shards[k]}

    def tag(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        ids = [str(i) for i in batch["id"]]
        return {"id": np.asarray(ids, dtype=object), "x": batch["x"],
                "shard": np.asarray([shard_of.get(i, -1) for i in ids], dtype=np.int64)}

    def pack(group: dict[str, np.ndarray]) -> dict[str, Any]:
        order = np.argsort(np.asarray([str(i) for i in group["id"]], dtype=object), kind="stable")
        ids = [str(group["id"][i]) for i in order]
        x = np.stack([np.asarray(group["x"][i]) for i in order])
        return {"shard": np.asarray([int(group["shard"][0])]), "ids": np.asarray([ids], dtype=object),
                "x": np.asarray([x], dtype=object) if x.dtype == object else x[None]}

    tagged = source.map_batches(tag, batch_format="numpy").filter(expr="shard >= 0")
    # grouped before the actors start: the shuffle's tasks must not wait for CPUs the actor pool holds
    return tagged.groupby("shard").map_groups(pack, batch_format="numpy").materialize()


def run_ray(
    source: Any,
    shards: list[list[str]],
    pending: Sequence[int],
    config: RunConfig,
    out: Path,
    *,
    address: str | None = None,
    actors: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> list[int]:
    """Explain the ``pending`` shards on Ray; returns the shards written, in order."""
    ray = _ray()
    if not pending:
        return []
    actors = int(actors or 1)
    if actors < 1:
        raise InputError(f"actors must be at least 1, got {actors}")
    _init(address, actors)
    gpus = 1 if config.device.startswith("cuda") else 0
    total = sum(len(s) for s in shards)
    finished = total - sum(len(shards[k]) for k in pending)
    written: list[int] = []
    wave_size = actors * WAVE_PER_ACTOR
    for start in range(0, len(pending), wave_size):
        wave = list(pending[start:start + wave_size])
        rows = _shard_rows(source, shards, wave)
        results = rows.map_batches(
            ShardExplainer, fn_constructor_args=(config,), batch_size=1, batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(size=actors), num_gpus=gpus, num_cpus=1,
        )
        tmp = out / f".tmp-ray-wave-{start}-{os.getpid()}"
        # the wave's tables are materialized first, so the write tasks do not wait for CPUs held by actors
        results.materialize().write_parquet(str(tmp.resolve()), partition_cols=["shard"])
        for k in wave:
            part = tmp / f"shard={k}"
            if not part.is_dir():
                raise InputError(f"the Ray run wrote no results for shard {k}")
            os.replace(part, shard_dir(out, k))
            written.append(k)
            finished += len(shards[k])
        shutil.rmtree(tmp, ignore_errors=True)
        if progress is not None:
            progress(finished, total)
    return written
