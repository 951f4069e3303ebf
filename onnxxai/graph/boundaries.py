"""Candidate GradCAM boundaries: the cuts of a :class:`~onnxxai.graph.dataflow.DataFlow` with shapes
and kinds, the default one, and the token grid.

A *boundary* (a cut) is a tensor that every data path from the analyzed input to the explained
output passes through: in the data-flow graph of float tensors it dominates the output. Weights and
constants do not depend on the input, so they are no paths; neither are shape computations
(``Shape``/``Size`` and integer or boolean tensors), which carry no gradient. Cutting the graph at
a boundary gives a *features* graph (input -> boundary) and a *head* graph (boundary -> outputs);
GradCAM reads the boundary activation and the gradient of the output with respect to it.

Default boundary (``boundary=None``): walking from the output back towards the input, the first
cut that is

* a spatial feature map (rank 4, NCHW, H·W > 1, no larger than the input image: a channels-last
  tensor read as NCHW has its channel count as width) or a token sequence ``(N, T, C)`` whose
  tokens map onto the input's image grid (see :func:`token_grid`), and
* followed by at least one layer with weights (Conv, Gemm, MatMul, ...) before the output: a map
  after the last such layer is a per-class map (SqueezeNet's classifier convolution), where GradCAM
  degenerates to reading one channel, and
* for token sequences, one whose patch tokens influence the output (checked with onnxruntime by
  perturbing them): a ViT's final LayerNorm feeds only the class token to the head, so its patch
  tokens get a zero gradient; the default is then the input of the last encoder block.

In int8 files the quantized activations are cuts too (:mod:`onnxxai.graph.quantized`), so the rule
picks the counterpart of the float file's default: the dequantized output of the last pooling stage
in a QDQ file, the uint8 tensor itself in a QOperator file, the float tensor in a dynamic one.
Integer data with no constant scale and zero point (int32 accumulators) is never the default.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
from onnx import helper

from onnxxai.errors import BoundaryError, ResourceLimitError
from onnxxai.graph.dataflow import DataFlow, graph_of, head_graph
from onnxxai.parity import onnxruntime_session, run_onnxruntime
from onnxxai.proto import limits
from onnxxai.proto.layout import image_layout
from onnxxai.proto.normalize import dotted_domains
from onnxxai.proto.specs import dims_of, graph_input_specs, probe_feeds

__all__ = [
    "Boundary", "boundaries", "candidates", "default_boundary", "default_cut", "token_grid", "format_boundaries",
    "MAX_PREFIX_TOKENS",
]

#: Most leading non-patch tokens (class, distillation, register tokens) a token boundary may have.
MAX_PREFIX_TOKENS = 8
_WEIGHTED_OPS = {
    "Conv", "ConvTranspose", "Gemm", "MatMul", "Einsum", "ConvInteger", "MatMulInteger", "QLinearConv",
    "QLinearMatMul", "LSTM", "GRU", "RNN", "Attention", "MultiHeadAttention", "FusedMatMul", "FusedConv", "FusedGemm",
    "QGemm", "QAttention", "MatMulIntegerToFloat", "DynamicQuantizeMatMul", "DynamicQuantizeLSTM",
}


@dataclass(frozen=True)
class Boundary:
    """One cut tensor of the graph, in order from input to output.

    ``shape`` comes from shape inference (a probe run when inference left dimensions open; the
    batch axis keeps its symbolic name), ``kind`` is "spatial" (NCHW map with H·W > 1 within the
    input's height and width), "tokens"
    (``(N, T, C)`` on the input's image grid) or "other", ``node``/``op_type`` name the producer,
    ``note`` says why a spatial/token cut is not eligible as the default, ``default`` marks the one
    :func:`default_boundary` picks.
    """

    name: str
    shape: tuple[int | str, ...]
    kind: str
    node: str
    op_type: str
    note: str = ""
    default: bool = False

    def __str__(self) -> str:
        dims = ", ".join(str(d) for d in self.shape) if self.shape else "?"
        return f"{self.name} [{dims}] {self.kind} ({self.op_type} {self.node!r})"


def token_grid(tokens: int, height: int, width: int) -> tuple[int, int, int] | None:
    """``(prefix, h, w)``: how a sequence of ``tokens`` maps onto an ``height × width`` image.

    The rule: patches are ``p × p`` for an integer ``p`` (``h = height // p``, ``w = width // p``),
    laid out row-major after ``prefix`` leading tokens (class, distillation or register tokens,
    at most :data:`MAX_PREFIX_TOKENS`), which are dropped. Among the patch sizes that fit, the one
    with the fewest dropped tokens wins. None when no patch size fits.
    """
    best: tuple[int, int, int] | None = None
    for p in range(1, min(height, width) + 1):
        h, w = height // p, width // p
        prefix = tokens - h * w
        if 0 <= prefix <= MAX_PREFIX_TOKENS and h * w > 1 and (best is None or prefix < best[0]):
            best = (prefix, h, w)
    return best


def _image_hw(shape: Sequence[int | str]) -> tuple[int, int] | None:
    """H, W of an image batch (:func:`onnxxai.proto.layout.image_layout`), None unless static."""
    found = image_layout(shape)
    return found.size if found is not None else None


def _kind(shape: Sequence[int | str] | None, image_hw: tuple[int, int] | None) -> str:
    if shape is None:
        return "other"
    if len(shape) == 4 and isinstance(shape[2], int) and isinstance(shape[3], int) and shape[2] * shape[3] > 1:
        # a channels-last tensor read as NCHW has the channel count as its width: larger than the image
        if image_hw is None or (shape[2] <= image_hw[0] and shape[3] <= image_hw[1]):
            return "spatial"
        return "other"
    if len(shape) == 3 and isinstance(shape[1], int) and image_hw is not None and token_grid(shape[1], *image_hw):
        return "tokens"
    return "other"


def _known(shape: tuple[int | str, ...] | None) -> bool:
    return shape is not None and all(isinstance(d, int) and d > 0 for d in shape[1:])


def _run_tensors(model: onnx.ModelProto, names: Iterable[str], feeds: Mapping[str, np.ndarray],
                 types: Mapping[str, int]) -> dict[str, np.ndarray]:
    """Run ``model`` in onnxruntime and return the values of (intermediate) tensors ``names``."""
    names = list(dict.fromkeys(names))
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    have = {o.name for o in probe.graph.output}
    for n in names:
        if n not in have:
            probe.graph.output.append(helper.make_tensor_value_info(n, types.get(n) or onnx.TensorProto.FLOAT, None))
    values = run_onnxruntime(dotted_domains(probe), feeds, outputs=names)
    return dict(zip(names, values))


def boundaries(model_or_path: Any, *, input_name: str | None = None, output_name: str | None = None,
               probe_inputs: Mapping[str, np.ndarray] | None = None) -> list[Boundary]:
    """Every cut tensor between the analyzed input and output, input to output, with shapes and
    kinds; the one :func:`default_boundary` picks has ``default=True`` (none when no cut fits)."""
    proto, label = graph_of(model_or_path)
    return candidates(DataFlow(proto, input_name, output_name, label), probe_inputs)


def candidates(flow: DataFlow, probe_inputs: Mapping[str, np.ndarray] | None = None) -> list[Boundary]:
    """Every cut of ``flow`` with shape and kind, input to output; the default one marked (see
    :func:`boundaries`). Its onnxruntime probes have the default stage timeout (TimeLimitError)."""
    with limits.budget(timeout=limits.stage_timeout(), stage="GradCAM boundary probing", label=flow.label):
        return _candidates(flow, probe_inputs)


def _candidates(flow: DataFlow, probe_inputs: Mapping[str, np.ndarray] | None) -> list[Boundary]:
    shapes = {n: dims_of(flow.infos.get(n)) for n in flow.cuts}
    input_shape = dims_of(flow.infos.get(flow.input_name)) or ()
    feeds = None
    values: dict[str, np.ndarray] = {}
    image_hw = _image_hw(input_shape)
    unknown = [n for n in flow.cuts if not _known(shapes[n])]
    maybe_tokens = [n for n in flow.cuts if shapes[n] is not None and len(shapes[n]) == 3]
    if unknown or image_hw is None or maybe_tokens:
        feeds = probe_feeds(graph_input_specs(flow.model), probe_inputs, batch=1, integers="zeros", label=flow.label)
        x = feeds[flow.input_name]
        image_hw = image_hw or _image_hw(x.shape)
        probe_names = unknown + maybe_tokens
        if probe_names:
            try:
                values = _run_tensors(flow.model, probe_names, feeds, flow.types)
            except ResourceLimitError:
                raise
            except Exception as exc:  # noqa: BLE001 - onnxruntime's own errors have no common base
                raise BoundaryError(f"{flow.label}: onnxruntime cannot run the model on probe inputs to read the "
                                    f"shapes of its cut tensors ({exc}); pass probe_inputs=") from exc
        for n in unknown:
            batch = shapes[n][0] if shapes[n] else "batch"
            shapes[n] = (batch, *values[n].shape[1:])
    after_weights = _last_weighted_cut(flow)
    result: list[Boundary] = []
    default_found = False
    for n in reversed(flow.cuts):
        _, node = flow.producer[n]
        kind = _kind(shapes[n], image_hw)
        note, is_default = "", False
        if kind != "other":
            if n in flow.quantized and flow.quantized[n] is None:
                note = "integer data with no constant scale and zero point to read it as float"
            elif flow.order[n] >= after_weights:
                note = "no layer with weights after it (a per-class map)"
            elif kind == "tokens" and not default_found and not _patches_matter(flow, n, values, feeds, image_hw):
                note = "its patch tokens do not influence the output"
            elif not default_found:
                is_default = default_found = True
        result.append(Boundary(n, tuple(shapes[n] or ()), kind, node.name, node.op_type, note, is_default))
    return result[::-1]


def _last_weighted_cut(flow: DataFlow) -> int:
    """Position (in ``flow.order``) of the output of the last weighted node on the output's paths;
    cuts at or after it have no weighted layer left before the output."""
    region = flow.ancestors(flow.output_name)
    last = -1
    for t in region:
        if t in flow.producer and flow.producer[t][1].op_type in _WEIGHTED_OPS:
            last = max(last, flow.order[t])
    return last


def _patches_matter(flow: DataFlow, name: str, values: Mapping[str, np.ndarray],
                    feeds: Mapping[str, np.ndarray] | None, image_hw: tuple[int, int] | None) -> bool:
    """Whether perturbing the patch tokens of ``name`` changes the output (head run in onnxruntime)."""
    act = values.get(name)
    if act is None or feeds is None or image_hw is None:
        return True
    grid = token_grid(act.shape[1], *image_hw)
    if grid is None:
        return False
    head, extra = head_graph(flow, name)
    head_feeds = {name: act}
    needed = [i.name for i in head.graph.input if i.name != name]
    if needed:
        head_feeds.update({k: feeds[k] for k in needed if k in feeds})
        missing = [k for k in needed if k not in head_feeds]
        if missing:
            head_feeds.update(_run_tensors(flow.model, missing, feeds, flow.types))
    rng = np.random.default_rng(0)
    moved = act.copy()
    scale = float(np.abs(act).max()) or 1.0
    moved[:, grid[0]:, :] += (rng.standard_normal(moved[:, grid[0]:, :].shape) * scale).astype(act.dtype)
    session = onnxruntime_session(dotted_domains(head))
    out = [o.name for o in head.graph.output].index(flow.output_name)
    a = run_onnxruntime(session, head_feeds)[out]
    b = run_onnxruntime(session, {**head_feeds, name: moved})[out]
    return bool(np.abs(a.astype(np.float64) - b).max() > 1e-6 * max(float(np.abs(a).max()), 1e-30))


def default_boundary(model_or_path: Any, *, input_name: str | None = None, output_name: str | None = None,
                     probe_inputs: Mapping[str, np.ndarray] | None = None) -> str:
    """The tensor GradCAM uses by default (see the module docstring); BoundaryError when none fits."""
    proto, label = graph_of(model_or_path)
    return default_cut(DataFlow(proto, input_name, output_name, label), probe_inputs)


def default_cut(flow: DataFlow, probe_inputs: Mapping[str, np.ndarray] | None = None) -> str:
    """The default GradCAM boundary of ``flow`` (see the module docstring); BoundaryError when no cut fits."""
    return _default(flow, candidates(flow, probe_inputs))


def _default(flow: DataFlow, found: list[Boundary]) -> str:
    for b in found:
        if b.default:
            return b.name
    usable = [b for b in found if b.kind != "other"]
    detail = ("; spatial/token cuts rejected: " + "; ".join(f"{b.name} ({b.note})" for b in usable)) if usable else ""
    shapes = ", ".join(f"{b.name} {list(b.shape)}" for b in found[-4:]) or "none"
    raise BoundaryError(
        f"{flow.label}: no cut between input {flow.input_name!r} and output {flow.output_name!r} is a spatial feature "
        f"map (N, C, H, W with H·W > 1) or a token sequence (N, T, C) on the input's image grid{detail} "
        f"(last cuts: {shapes}). GradCAM needs one: use a gradient method (Gradient, IntegratedGradients, LRP) "
        "for this model, or pass boundary=<tensor name>"
    )


def format_boundaries(found: Sequence[Boundary]) -> str:
    """A table of candidate boundaries for the CLI: name, shape, kind, producer, default mark."""
    rows = [("", "tensor", "shape", "kind", "producer", "note")]
    for b in found:
        rows.append(("*" if b.default else "", b.name, "[" + ", ".join(map(str, b.shape)) + "]", b.kind,
                     f"{b.op_type} {b.node}", b.note))
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r[:5], widths)) + (f"  {r[5]}" if r[5] else "") for r in rows]
    return "\n".join(line.rstrip() for line in lines)
