"""Output selection: which output (class) of each sample an explanation is for.

Selectors take a batch of outputs as a torch tensor (gradient methods) or a numpy array (black-box
methods on onnxruntime) and answer in the same kind; this module imports no torch.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np

from onnxxai.errors import AnalyzerError

__all__ = ["OutputSelector", "MaxActivation", "IndexSelector", "PerSampleSelector", "as_selector"]


@runtime_checkable
class OutputSelector(Protocol):
    """Maps a batch of outputs ``(B, ...)`` to one flat index into each sample's output: ``(B,)`` int64."""

    def __call__(self, output: Any) -> Any: ...


def _flat(output: Any) -> Any:
    return output.reshape(output.shape[0], -1)


def _indices(values: list[int], like: Any) -> Any:
    """``values`` as int64 indices of the same kind (and device) as ``like``."""
    if isinstance(like, np.ndarray):
        return np.asarray(values, dtype=np.int64)
    import torch  # only reached with a torch tensor, so torch is installed

    return torch.tensor(values, dtype=torch.long, device=like.device)


class MaxActivation:
    """Each sample's largest output (the predicted class of a classifier)."""

    def __call__(self, output: Any) -> Any:
        return _flat(output).argmax(1)

    def __repr__(self) -> str:
        return "MaxActivation()"


class IndexSelector:
    """The same output index for every sample; negative indices count from the end."""

    def __init__(self, index: int) -> None:
        self.index = int(index)

    def __call__(self, output: Any) -> Any:
        size = _flat(output).shape[1]
        if not -size <= self.index < size:
            raise AnalyzerError(f"output_selection {self.index} is out of range for outputs of size {size} per sample")
        return _indices([self.index % size] * output.shape[0], output)

    def __repr__(self) -> str:
        return f"IndexSelector({self.index})"


class PerSampleSelector:
    """One output index per sample, in batch order."""

    def __init__(self, indices: Sequence[int]) -> None:
        self.indices = [int(i) for i in indices]

    def __call__(self, output: Any) -> Any:
        size = _flat(output).shape[1]
        if len(self.indices) != output.shape[0]:
            raise AnalyzerError(
                f"output_selection gives {len(self.indices)} indices for a batch of {output.shape[0]} samples"
            )
        bad = [i for i in self.indices if not -size <= i < size]
        if bad:
            raise AnalyzerError(f"output_selection indices {bad} are out of range for outputs of size {size} per sample")
        return _indices([i % size for i in self.indices], output)

    def __repr__(self) -> str:
        return f"PerSampleSelector({self.indices})"


def as_selector(selection: object) -> OutputSelector:
    """None -> max output; int -> that index for all; sequence of ints -> one per sample; or a selector."""
    if selection is None:
        return MaxActivation()
    if isinstance(selection, (bool, np.bool_)):
        raise AnalyzerError(f"output_selection must be an int, a sequence of ints or a selector, not {selection!r}")
    if isinstance(selection, (int, np.integer)):
        return IndexSelector(int(selection))
    if hasattr(selection, "detach"):  # a torch tensor
        selection = selection.detach().cpu().numpy()
    if isinstance(selection, np.ndarray):
        if selection.ndim == 0:
            return IndexSelector(int(selection))
        if selection.ndim == 1 and selection.dtype.kind in "iu":
            return PerSampleSelector(selection.tolist())
    elif isinstance(selection, Sequence) and not isinstance(selection, str):
        if all(isinstance(i, (int, np.integer)) and not isinstance(i, bool) for i in selection):
            return PerSampleSelector(selection)
    if callable(selection):
        return selection  # type: ignore[return-value]
    raise AnalyzerError(f"output_selection must be an int, a sequence of ints or a selector, not {selection!r}")
