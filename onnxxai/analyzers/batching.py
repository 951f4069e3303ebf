"""Chunked execution: every explain loop runs one function per piece of rows through :func:`run_chunks`.

A batch (or the ``n * batch`` rows of an augmentation) is cut into :class:`RowChunks`; each piece
gets one forward and one backward, so memory is bounded by the piece, not the batch. On CUDA the
pieces after the first can be sized to a :class:`CudaMemoryBudget` measured on the first one.
The results of the pieces are concatenated, or summed into a tensor piece by piece (augmentations,
whose rows map back onto fewer samples).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence

import torch

from onnxxai.errors import AnalyzerError
from onnxxai.selectors import IndexSelector, MaxActivation, OutputSelector

__all__ = ["RowChunks", "CudaMemoryBudget", "run_chunks", "run_samples", "row_targets"]


class RowChunks:
    """``(start, stop)`` pieces over ``total`` rows, of ``size`` rows each (None: all at once); with a
    ``resize`` callback, the size after the first piece is ``resize(rows_in_first_piece)`` (used to
    fit the pieces to a memory budget measured on the first one)."""

    def __init__(self, total: int, size: int | None, resize: Callable[[int], int] | None = None) -> None:
        size = total if not size else int(size)
        if size < 1:
            raise AnalyzerError(f"batch_size must be a positive integer, got {size}")
        self.total, self.size, self.resize = total, size, resize

    @property
    def single(self) -> bool:
        """True when one piece covers every row."""
        return self.size >= self.total

    def __iter__(self) -> Iterator[tuple[int, int]]:
        start, first = 0, True
        while start < self.total:
            stop = min(start + self.size, self.total)
            yield start, stop
            if first and self.resize is not None:
                self.size = max(1, int(self.resize(stop - start)))
            first = False
            start = stop


class CudaMemoryBudget:
    """Measures the peak CUDA memory of the first chunk and sizes the next ones to use at most
    ``fraction`` of the memory still available (free on the device plus cached by torch).

    Resets torch's CUDA peak-memory statistics when it starts a measurement.
    """

    def __init__(self, device: torch.device, fraction: float = 0.6, limit: int | None = None) -> None:
        self.device, self.fraction, self.limit = device, fraction, limit
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        self.base = torch.cuda.memory_allocated(device)

    def __call__(self, rows: int) -> int:
        torch.cuda.synchronize(self.device)
        per_row = max((torch.cuda.max_memory_allocated(self.device) - self.base) / rows, 1.0)
        free, _ = torch.cuda.mem_get_info(self.device)
        cached = torch.cuda.memory_reserved(self.device) - torch.cuda.memory_allocated(self.device)
        size = int(self.fraction * (free + cached) / per_row)
        return max(1, min(size, self.limit or size))


def run_chunks(
    step: Callable[[int, int], Sequence[torch.Tensor] | tuple[torch.Tensor, torch.Tensor]],
    pieces: Iterable[tuple[int, int]],
    *,
    into: torch.Tensor | None = None,
) -> tuple[torch.Tensor, ...] | torch.Tensor:
    """Run ``step(start, stop)`` on each piece of rows, in order.

    Without ``into``, each step returns a tuple of tensors and the result is the tuple of their
    concatenations along axis 0. With ``into``, each step returns ``(index, value)`` and the rows of
    ``value`` are added to rows ``index`` of ``into`` right away (only one piece is alive at a time);
    the result is ``into``.
    """
    if into is not None:
        for start, stop in pieces:
            index, value = step(start, stop)
            into.index_add_(0, index, value)
        return into
    results = [tuple(step(start, stop)) for start, stop in pieces]
    if not results:
        raise AnalyzerError("nothing to explain: the batch has no rows")
    return tuple(torch.cat(column) for column in zip(*results))


def row_targets(selector: OutputSelector, pieces: RowChunks, full_output: Callable[[], torch.Tensor]) -> torch.Tensor | OutputSelector:
    """A row-wise selector, or any selector when the batch is one chunk, is applied to each chunk's
    own output; otherwise the selector sees the full batch output (one extra forward, only when
    the batch is split into several chunks)."""
    if isinstance(selector, (MaxActivation, IndexSelector)) or pieces.single:
        return selector
    return selector(full_output())


def run_samples(
    step: Callable[[torch.Tensor, torch.Tensor, torch.Tensor | OutputSelector], Sequence[torch.Tensor]],
    input: torch.Tensor,
    selector: OutputSelector,
    batch_size: int | None,
    full_output: Callable[[], torch.Tensor],
) -> tuple[torch.Tensor, ...]:
    """Explain ``input`` in pieces of ``batch_size`` samples (None: all at once):
    ``step(rows, sample_index, target)`` per piece, where ``target`` is the piece's flat output
    indices or a row-wise selector (see :func:`row_targets`); results concatenated as in
    :func:`run_chunks`."""
    pieces = RowChunks(input.shape[0], batch_size)
    targets = row_targets(selector, pieces, full_output)

    def piece(start: int, stop: int) -> Sequence[torch.Tensor]:
        sample_index = torch.arange(start, stop, device=input.device)
        target = targets if not isinstance(targets, torch.Tensor) else targets[start:stop]
        return step(input[start:stop], sample_index, target)

    return run_chunks(piece, pieces)
