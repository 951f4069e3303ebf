"""Where a gradient stops: the check behind "no silent explanation".

A gradient method whose attribution of a sample is identically zero says "nothing matters" -- true
only if the selected output does not change with the input. When it does change, some node between
input and output blocks the gradient (Round, a Cast to an integer type and back, ArgMax, a module
that detaches). :func:`find_gradient_stop` runs only for such samples (the normal path pays one
``== 0`` reduction): it checks that the selected output varies under perturbations of the input,
then replays the converted graph node by node, keeping every intermediate value and its gradient,
and names the first node, in graph order, whose output depends on the input but that passes no
gradient back: its output gradient is non-zero (or its output is an integer or detached tensor)
while its input gradient is zero or absent.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from onnxxai.analyzers.function import ModelFunction, select

__all__ = ["GradientStop", "find_gradient_stop"]

#: Perturbations the "is the output constant?" question tries, in units of each sample's spread.
_SCALES = (0.1, 1.0)


@dataclass(frozen=True)
class GradientStop:
    """The node where the gradient of the selected output stops (``node``: the fx node, named after
    the ONNX node; ``module``: its torch class), for the samples ``samples`` of the batch."""

    node: str
    module: str
    reason: str
    samples: tuple[int, ...]

    def message(self, output: str, input: str) -> str:
        return (
            f"the gradient of output {output!r} w.r.t. input {input!r} is identically zero for sample(s) "
            f"{list(self.samples)} although the selected output changes with the input: it stops at node "
            f"{self.node!r} ({self.module}): {self.reason}. Gradient attributions of this graph are not explanations."
        )


class _Recorder(torch.fx.Interpreter):
    """Runs a GraphModule keeping each node's value (float values that need a gradient keep it)."""

    def __init__(self, module: torch.fx.GraphModule) -> None:
        super().__init__(module)
        self.values: dict[str, Any] = {}

    def run_node(self, n: torch.fx.Node) -> Any:
        value = super().run_node(n)
        if isinstance(value, torch.Tensor) and value.requires_grad and not value.is_leaf:
            value.retain_grad()
        self.values[n.name] = value
        return value


def _spread(x: torch.Tensor) -> torch.Tensor:
    flat = x.reshape(x.shape[0], -1)
    s = flat.std(dim=1, unbiased=False) if flat.shape[1] > 1 else flat.abs().squeeze(1)
    return torch.where(s > 0, s, torch.ones_like(s)).view(-1, *([1] * (x.dim() - 1)))


def _perturbed(x: torch.Tensor) -> list[torch.Tensor]:
    gen = torch.Generator(device="cpu").manual_seed(0)
    noise = torch.randn(x.shape, generator=gen, dtype=torch.float32).to(device=x.device, dtype=x.dtype)
    return [x + scale * _spread(x) * noise for scale in _SCALES]


def _module_name(module: torch.fx.GraphModule, node: torch.fx.Node) -> str:
    if node.op == "call_module":
        return type(module.get_submodule(node.target)).__name__
    return getattr(node.target, "__name__", str(node.target))


def find_gradient_stop(function: ModelFunction, x: torch.Tensor, index: torch.Tensor,
                       samples: list[int], sample_index: torch.Tensor | None = None) -> GradientStop | None:
    """For the ``samples`` of ``x`` whose attribution is all zeros (``index``: the selected flat
    output of each row of ``x``; ``sample_index``: each row's sample, default ``arange``), the node
    where the gradient stops, or None when their selected output is constant under perturbation (a
    zero gradient is then the truth) or no single node can be named."""
    if function.tap is not None or not x.is_floating_point():
        return None
    rows = x[samples].detach()
    chosen = index[samples].to(rows.device)
    picked = torch.tensor(samples, device=rows.device)
    sample_index = picked if sample_index is None else sample_index.to(rows.device)[picked]
    with torch.no_grad():
        clean = select(function(rows, sample_index), chosen)
        varies = torch.zeros(len(samples), dtype=torch.bool, device=rows.device)
        for moved in _perturbed(rows):
            varies |= select(function(moved, sample_index), chosen) != clean
    if not bool(varies.any()):
        return None
    keep = [s for s, v in zip(samples, varies.tolist()) if v]
    rows, chosen, sample_index = rows[varies], chosen[varies], sample_index[varies]

    module = function.model.torch_module
    moved = _Recorder(module)
    with torch.no_grad():
        moved.run(*function._args(_perturbed(rows)[1], sample_index))
    with torch.enable_grad():
        rows = rows.requires_grad_(True)
        recorder = _Recorder(module)
        with function.numerics(rows.device):
            out = recorder.run(*function._args(rows, sample_index))
        out = out[function.output_index] if isinstance(out, (tuple, list)) else out
        if out.requires_grad:  # else no gradient path at all: every grad stays None
            select(out, chosen).sum().backward()
    if rows.grad is not None and bool((rows.grad != 0).any()):
        return None  # the gradient does reach the input here: nothing to name

    def carries(value: Any) -> bool:  # a float value on the gradient path with a non-zero gradient
        return isinstance(value, torch.Tensor) and value.grad is not None and bool((value.grad != 0).any())

    def differentiable(value: Any) -> bool:
        return isinstance(value, torch.Tensor) and value.is_floating_point() and value.requires_grad

    def depends(name: str) -> bool:  # the node's value changes when the input does
        a, b = recorder.values.get(name), moved.values.get(name)
        return isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and (
            a.shape != b.shape or not torch.equal(a.detach(), b.detach()))

    for node in module.graph.nodes:
        if node.op not in ("call_module", "call_function", "call_method"):
            continue
        inputs = [recorder.values.get(i.name) for i in node.all_input_nodes]
        live = [v for v in inputs if differentiable(v)]
        if not live or any(carries(v) for v in live) or not depends(node.name):
            continue
        value = recorder.values.get(node.name)
        if carries(value):
            reason = "its output gradient is non-zero but its input gradient is zero"
        elif isinstance(value, torch.Tensor) and not value.is_floating_point():
            reason = f"it returns an integer tensor ({value.dtype}) computed from a float one"
        elif isinstance(value, torch.Tensor) and not value.requires_grad:
            reason = "it returns a tensor detached from the gradient"
        else:
            continue
        return GradientStop(node.name, _module_name(module, node), reason, tuple(keep))
    return None
