"""onnxruntime vs the converted torch graph on the same inputs -> ParityReport.

The reference is the *original* file run by onnxruntime, so a wrong normalization pass, a wrong
converter or a wrong opset alias all show up here, before any explanation is computed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
import onnx
import onnxruntime as ort

__all__ = ["ParityReport", "OutputParity", "onnxruntime_session", "run_onnxruntime", "compare_outputs", "execution_provider"]

DEFAULT_RTOL = 1e-4
DEFAULT_ATOL = 1e-6


@dataclass(frozen=True)
class OutputParity:
    """Agreement of one output: max abs error and max error relative to the output's largest magnitude."""

    name: str
    shape: tuple[int, ...]
    max_abs: float
    max_rel: float
    ok: bool


@dataclass(frozen=True)
class ParityReport:
    """How closely the converted graph reproduces onnxruntime on seeded probe inputs.

    ``max_rel`` of an output is ``max|torch - ort| / max|ort|`` (a norm-wise relative error, stable
    near zeros); an output passes when ``max_rel <= rtol`` or ``max_abs <= atol``. Integer and bool
    outputs must match exactly.
    """

    outputs: tuple[OutputParity, ...]
    rtol: float
    atol: float
    provider: str
    probe_shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return all(o.ok for o in self.outputs)

    @property
    def max_rel(self) -> float:
        return max((o.max_rel for o in self.outputs), default=0.0)

    @property
    def max_abs(self) -> float:
        return max((o.max_abs for o in self.outputs), default=0.0)

    def summary(self) -> str:
        parts = [f"{o.name}: max_rel={o.max_rel:.3g} max_abs={o.max_abs:.3g}{'' if o.ok else ' FAIL'}" for o in self.outputs]
        return f"parity {'ok' if self.ok else 'FAILED'} ({'; '.join(parts)}; rtol={self.rtol:g}, {self.provider})"

    def to_dict(self) -> dict:
        d = asdict(self)
        d["ok"] = self.ok
        return d


def execution_provider() -> str:
    """CUDA when onnxruntime-gpu can use it, else CPU."""
    available = ort.get_available_providers()
    return "CUDAExecutionProvider" if "CUDAExecutionProvider" in available else "CPUExecutionProvider"


def onnxruntime_session(model: onnx.ModelProto, provider: str | None = None) -> ort.InferenceSession:
    """An onnxruntime session for ``model`` on ``provider`` (default: :func:`execution_provider`)."""
    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(model.SerializeToString(), sess_options=options, providers=[provider or execution_provider()])


def run_onnxruntime(model: onnx.ModelProto, feeds: Mapping[str, np.ndarray], provider: str | None = None) -> list[np.ndarray]:
    """Run the model in onnxruntime on ``feeds``; returns every graph output in order."""
    return onnxruntime_session(model, provider).run(None, dict(feeds))


def compare_outputs(
    names: Sequence[str],
    reference: Sequence[np.ndarray],
    actual: Sequence[np.ndarray],
    *,
    rtol: float = DEFAULT_RTOL,
    atol: float = DEFAULT_ATOL,
    provider: str = "",
    probe_shapes: Mapping[str, tuple[int, ...]] | None = None,
) -> ParityReport:
    """Compare torch outputs with onnxruntime's, output by output."""
    results = []
    for name, ref, act in zip(names, reference, actual):
        ref, act = np.asarray(ref), np.asarray(act)
        if ref.shape != act.shape:
            results.append(OutputParity(name, tuple(ref.shape), float("inf"), float("inf"), False))
            continue
        if ref.dtype.kind in "biu" or ref.dtype == bool:
            equal = bool(np.array_equal(ref, act))
            err = 0.0 if equal else float("inf")
            results.append(OutputParity(name, tuple(ref.shape), err, err, equal))
            continue
        ref64, act64 = ref.astype(np.float64), act.astype(np.float64)
        same_nonfinite = np.array_equal(np.isnan(ref64), np.isnan(act64)) and np.array_equal(
            np.where(np.isinf(ref64), ref64, 0), np.where(np.isinf(act64), act64, 0)
        )
        finite = np.isfinite(ref64) & np.isfinite(act64)
        diff = np.abs(ref64[finite] - act64[finite])
        max_abs = float(diff.max()) if diff.size else 0.0
        scale = float(np.abs(ref64[finite]).max()) if diff.size else 0.0
        max_rel = max_abs / scale if scale > 0 else (0.0 if max_abs == 0 else float("inf"))
        if not same_nonfinite:
            max_abs = max_rel = float("inf")
        ok = same_nonfinite and (max_rel <= rtol or max_abs <= atol)
        results.append(OutputParity(name, tuple(ref.shape), max_abs, max_rel, ok))
    if len(actual) != len(reference):
        results.append(OutputParity("<output count>", (), float("inf"), float("inf"), False))
    return ParityReport(tuple(results), rtol, atol, provider, dict(probe_shapes or {}))
