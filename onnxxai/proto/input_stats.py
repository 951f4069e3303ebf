"""What a float image model's first layer says about the input range it was trained on.

A forgotten normalization (ImageNet mean/std) silently explains the wrong input. The first
convolution tells which input mean the model was trained with when a bias follows it: a
BatchNormalization's running mean is the training mean of the convolution's output, and an export
that folded the BatchNormalization into the convolution keeps ``b' = beta - W'·E[x]`` in its bias.
So with ``S`` the per-channel sum of the kernel folded with the BatchNorm, ``b' + S·E[x]`` is the
BatchNorm shift ``beta`` for the input mean ``E[x]`` the model was trained on. Heuristic (documented
in the README): compare how well two hypotheses leave a small ``beta``: zero-mean inputs (``|b'|``)
and [0, 1] pixels with ImageNet's channel means (``|b' + S·mean|``); one norm under half of the
other decides. Only a BatchNormalization after the first convolution is evidence: a plain
convolution bias (LeNet-5 trained on [0, 1] pixels) or a BatchNorm an exporter already folded into
the convolution cannot be told apart from each other, so they say nothing, nor does an input the
graph normalizes itself or a kernel that is not a constant.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import numpy_helper

__all__ = ["InputRange", "expected_input_range", "PIXEL_MEANS"]

#: channel means of [0, 1] pixels assumed for the "unnormalized" hypothesis (ImageNet's; gray: their mean)
PIXEL_MEANS = (0.485, 0.456, 0.406)
#: ops through which the input reaches the first convolution unchanged in value
_PASS = {"Transpose", "Cast", "Identity"}
#: ops that normalize the input inside the graph when they read it with a constant
_NORMALIZING = {"Sub", "Div", "Mul", "Add", "BatchNormalization", "InstanceNormalization", "LayerNormalization"}


@dataclass(frozen=True)
class InputRange:
    """The verdict: ``expects`` "zero-mean" (a normalization was expected), "unit" ([0, 1] pixels),
    "graph" (the graph normalizes its input itself) or "unclear"; ``node`` the convolution read;
    ``zero_mean_residual`` and ``unit_residual`` the two norms compared."""

    expects: str
    node: str
    zero_mean_residual: float = float("nan")
    unit_residual: float = float("nan")

    def to_dict(self) -> dict:
        return {"expects": self.expects, "node": self.node, "zero_mean_residual": self.zero_mean_residual,
                "unit_residual": self.unit_residual}


def expected_input_range(model: onnx.ModelProto, input_name: str, *, margin: float = 2.0) -> InputRange | None:
    """Read the first convolution fed by float input ``input_name``; None when nothing can be said
    (no convolution first, a kernel that is not an initializer, no bias and no BatchNorm)."""
    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    tensor, conv = input_name, None
    for _ in range(8):
        readers = consumers.get(tensor, [])
        if len(readers) != 1:
            return None
        node = readers[0]
        if node.op_type in _PASS:
            tensor = node.output[0]
            continue
        if node.op_type in _NORMALIZING and any(i in inits for i in node.input if i != tensor):
            return InputRange("graph", node.name or node.op_type)
        if node.op_type == "Conv" and node.input[0] == tensor:
            conv = node
        break
    if conv is None or conv.input[1] not in inits:
        return None
    w = numpy_helper.to_array(inits[conv.input[1]]).astype(np.float64)
    if w.ndim < 3:
        return None
    bias_name = conv.input[2] if len(conv.input) > 2 and conv.input[2] else None
    if bias_name is not None and bias_name not in inits:
        return None
    b = numpy_helper.to_array(inits[bias_name]).astype(np.float64) if bias_name else np.zeros(w.shape[0])
    after = consumers.get(conv.output[0], [])
    bn = after[0] if len(after) == 1 and after[0].op_type == "BatchNormalization" else None
    if bn is not None and all(i in inits for i in bn.input[1:5]):
        gamma, beta, mean, var = (numpy_helper.to_array(inits[i]).astype(np.float64) for i in bn.input[1:5])
        eps = next((a.f for a in bn.attribute if a.name == "epsilon"), 1e-5)
        k = gamma / np.sqrt(var + eps)
        w = w * k.reshape(-1, *([1] * (w.ndim - 1)))
        b = (b - mean) * k + beta
    else:
        return None
    group = next((a.i for a in conv.attribute if a.name == "group"), 1)
    if group != 1:
        return None
    s = w.reshape(w.shape[0], w.shape[1], -1).sum(axis=2)  # (out, in)
    means = np.asarray(PIXEL_MEANS if w.shape[1] == 3 else [float(np.mean(PIXEL_MEANS))] * w.shape[1])
    zero = float(np.linalg.norm(b))
    unit = float(np.linalg.norm(b + s @ means))
    expects = "zero-mean" if zero * margin < unit else "unit" if unit * margin < zero else "unclear"
    return InputRange(expects, conv.name or "Conv", zero, unit)
