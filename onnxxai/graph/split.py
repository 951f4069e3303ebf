"""Cut an ONNX graph at a boundary into a features graph and a head graph, and check the cut.

``features`` maps the model's inputs to the boundary; ``head`` maps the boundary (plus the shape
computations and other graph inputs it needs) to the outputs computed from it. onnxruntime checks
on seeded probe inputs that ``head(features(x))`` equals ``model(x)``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import onnx

from onnxxai.errors import BoundaryError, ResourceLimitError
from onnxxai.graph.boundaries import default_cut
from onnxxai.graph.dataflow import DataFlow, features_graph, graph_of, head_graph
from onnxxai.parity import ParityReport, compare_outputs, execution_provider, parity_tolerance, run_onnxruntime
from onnxxai.proto.normalize import dotted_domains
from onnxxai.proto.specs import graph_input_specs, probe_feeds

__all__ = ["split", "verify_split"]


def split(
    model_or_path: Any,
    boundary: str | None = None,
    *,
    input_name: str | None = None,
    output_name: str | None = None,
    probe_inputs: Mapping[str, np.ndarray] | None = None,
    verify: bool = True,
    rtol: float | None = None,
    atol: float | None = None,
) -> tuple[onnx.ModelProto, onnx.ModelProto, str]:
    """Cut the graph at ``boundary`` (a cut tensor or single-output node; None: the default GradCAM
    boundary) into ``(features, head, boundary_name)``.

    ``features`` maps the model's inputs to the boundary (first output) plus any side tensors the
    head needs (shape computations); ``head`` takes the boundary, those side tensors and any other
    graph inputs it reads, by name, and returns the model outputs computed from the boundary.
    With ``verify``, onnxruntime checks on seeded probe inputs (or ``probe_inputs``) that
    ``head(features(x))`` equals ``model(x)`` within the model's derived parity tolerance
    (:func:`onnxxai.parity.parity_tolerance`: float16 and quantized graphs may round differently
    once onnxruntime can no longer fuse across the cut; ``rtol``/``atol`` given win); a mismatch
    raises :class:`BoundaryError`.
    """
    proto, label = graph_of(model_or_path)
    flow = DataFlow(proto, input_name, output_name, label)
    name = flow.resolve(boundary) if boundary is not None else default_cut(flow, probe_inputs)
    head, sides = head_graph(flow, name)
    features = features_graph(flow, name, sides)
    if verify:
        verify_split(proto, features, head, probe_inputs, rtol=rtol, atol=atol, label=label)
    return features, head, name


def verify_split(model: onnx.ModelProto, features: onnx.ModelProto, head: onnx.ModelProto,
                 probe_inputs: Mapping[str, np.ndarray] | None = None, *, rtol: float | None = None,
                 atol: float | None = None, label: str = "<model>") -> ParityReport:
    """Run ``model`` and ``head(features(x))`` in onnxruntime on the same probe inputs; return the
    ParityReport of the head's outputs, or raise :class:`BoundaryError` when they differ by more than
    ``model``'s derived parity tolerance (or ``rtol``/``atol`` given)."""
    tolerance = parity_tolerance(model, rtol, atol)
    feeds = probe_feeds(graph_input_specs(model), probe_inputs, batch=2, integers="zeros", label=label)
    names = [o.name for o in model.graph.output]
    try:
        reference = dict(zip(names, run_onnxruntime(dotted_domains(model), feeds)))
        feats = dict(zip([o.name for o in features.graph.output],
                         run_onnxruntime(dotted_domains(features), {i.name: feeds[i.name] for i in features.graph.input})))
        head_feeds = {i.name: feats[i.name] if i.name in feats else feeds[i.name] for i in head.graph.input}
        outs = run_onnxruntime(dotted_domains(head), head_feeds)
    except ResourceLimitError:
        raise
    except Exception as exc:  # noqa: BLE001 - onnxruntime's own errors have no common base
        raise BoundaryError(f"{label}: onnxruntime cannot run the split at {features.graph.output[0].name!r} ({exc})") from exc
    out_names = [o.name for o in head.graph.output]
    report = compare_outputs(out_names, [reference[n] for n in out_names], outs, rtol=tolerance.rtol, atol=tolerance.atol,
                             provider=execution_provider(), probe_shapes={k: tuple(v.shape) for k, v in feeds.items()},
                             tolerance_rule=tolerance.rule)
    if not report.ok:
        raise BoundaryError(f"{label}: head(features(x)) differs from the model at boundary "
                            f"{features.graph.output[0].name!r}: {report.summary()}")
    return report
