"""Where a converted graph parts from onnxruntime: the first node, in the graph's (topological) order,
whose output differs between onnxruntime running the original file and the converted torch graph on
the same inputs, and the node a failing torch forward stopped in.

Both run only after a failure (a parity check that failed, a probe forward that raised), on the
same probe inputs, within the caller's time budget; they read the graphs and change nothing.
onnxruntime computes the intermediate tensors on a copy of the original file that lists them as
graph outputs; the torch graph's values of the same tensors are recorded by a ``torch.fx``
interpreter (onnx2torch makes one submodule per ONNX node, named after it).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
import torch

from onnxxai.graph.surgery import module_nodes
from onnxxai.parity import compare_outputs, run_onnxruntime
from onnxxai.proto import limits
from onnxxai.proto.locate import node_label

__all__ = ["Divergence", "first_divergence", "failing_node"]


@dataclass(frozen=True)
class Divergence:
    """The first node whose output disagrees (``node``: ``Op node 'name'``), the tensor and how much."""

    node: str
    tensor: str
    max_abs: float
    max_rel: float
    #: nodes whose outputs were compared (those before ``node`` agreed)
    compared: int
    #: whether the file quantizes (Q/DQ or QLinear nodes): listing its intermediates as outputs stops
    #: onnxruntime from fusing the groups they belong to, so its values there may differ from the shipped run's
    quantized: bool = False

    def note(self) -> str:
        caveat = ("; a quantized file: exposing intermediates changes which groups onnxruntime fuses, so treat the "
                  "node as a hint" if self.quantized else "")
        return (f"output {self.tensor!r}: max_rel={self.max_rel:.3g} max_abs={self.max_abs:.3g}; "
                f"{self.compared - 1} earlier node(s) agree{caveat}")


class _Recorder(torch.fx.Interpreter):
    """Runs a GraphModule node by node, keeping each submodule's result and the node running last."""

    def __init__(self, module: torch.fx.GraphModule, keep: bool) -> None:
        super().__init__(module)
        self.keep = keep
        self.values: dict[str, Any] = {}
        self.current: torch.fx.Node | None = None

    def run_node(self, n: torch.fx.Node) -> Any:
        self.current = n
        result = super().run_node(n)
        if self.keep and n.op == "call_module":
            self.values[str(n.target)] = result
        return result


def _module_outputs(graph: onnx.ModelProto, values: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """ONNX tensor name -> the torch graph's value of it, for every submodule that ran."""
    tensors: dict[str, np.ndarray] = {}
    for name, node in module_nodes(graph).items():
        if name not in values:
            continue
        result = values[name]
        outs = list(result) if isinstance(result, (tuple, list)) and len(node.output) > 1 else [result]
        for tensor, value in zip(node.output, outs):
            if tensor and isinstance(value, torch.Tensor):
                tensors[tensor] = value.detach().cpu().numpy()
    return tensors


def failing_node(module: torch.fx.GraphModule, graph: onnx.ModelProto, args: Sequence[Any]) -> str:
    """The node (``Op node 'name'``) of the converted ``graph`` whose submodule raises when
    ``module`` runs on ``args``; "" when the run passes or stops outside a node's submodule."""
    recorder = _Recorder(module, keep=False)
    try:
        with torch.no_grad():
            recorder.run(*args)
    except Exception:  # noqa: BLE001 - the failure is the caller's to report; here only where it happened counts
        current = recorder.current
        if current is not None and current.op == "call_module":
            node = module_nodes(graph).get(str(current.target))
            if node is not None:
                return node_label(node)
    return ""


def first_divergence(original: onnx.ModelProto, graph: onnx.ModelProto, module: torch.fx.GraphModule,
                     feeds: Mapping[str, np.ndarray], args: Sequence[Any], *, rtol: float, atol: float,
                     provider: str | None = None) -> Divergence | None:
    """The first node of the converted ``graph`` (in its order) whose output, computed by ``module``
    on ``args``, disagrees with onnxruntime's value of the same tensor in ``original`` on ``feeds``
    (beyond ``rtol``/``atol``, as parity compares outputs); None when every tensor both compute agrees.

    Only tensors that both graphs compute under the same name are compared (normalization may
    fold or rename some). onnxruntime and torch errors propagate: the caller records them.
    """
    recorder = _Recorder(module, keep=True)
    with torch.no_grad():
        recorder.run(*args)
    torch_values = _module_outputs(graph, recorder.values)
    made = {o for n in original.graph.node for o in n.output if o}
    names = [t for n in graph.graph.node for t in n.output if t in torch_values and t in made]
    names = list(dict.fromkeys(names))
    if not names:
        return None
    # onnxruntime returns as many bytes again (a MemoryLimitError here is recorded by the caller)
    limits.check_bytes(sum(torch_values[n].nbytes for n in names), "the intermediate tensors compared to find the first diverging node")
    probe = onnx.ModelProto()
    probe.CopyFrom(original)
    listed = {o.name for o in probe.graph.output}
    probe.graph.output.extend(onnx.ValueInfoProto(name=n) for n in names if n not in listed)
    reference = dict(zip(names, run_onnxruntime(probe, feeds, provider, outputs=names)))
    compared = 0
    for index, node in enumerate(graph.graph.node):
        outs = [t for t in node.output if t in reference]
        if not outs:
            continue
        compared += 1
        report = compare_outputs(outs, [reference[t] for t in outs], [torch_values[t] for t in outs], rtol=rtol, atol=atol)
        bad = next((o for o in report.outputs if not o.ok), None)
        if bad is not None:
            quantized = any(n.op_type in ("QuantizeLinear", "DequantizeLinear") or n.op_type.startswith("QLinear")
                            or n.op_type in ("QGemm", "ConvInteger", "MatMulInteger") for n in original.graph.node)
            return Divergence(node_label(node, index), bad.name, bad.max_abs, bad.max_rel, compared, quantized)
    return None
