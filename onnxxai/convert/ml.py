"""Ops of the ai.onnx.ml domain that classifier exports (skl2onnx) put beside the network."""

from __future__ import annotations

import numpy as np
import onnx
import torch
from onnx2torch.onnx_graph import OnnxGraph
from onnx2torch.onnx_node import OnnxNode
from onnx2torch.utils.common import OperationConverterResult

from onnxxai.convert._util import result
from onnxxai.convert.registry import register

#: onnx2torch names each module "<domain>/<node>", and torch refuses dots in module names, so the
#: normalization pass ``alias_dotted_domains`` renames ai.onnx.ml to this before conversion.
ML_DOMAIN = "ai_onnx_ml"


class PiecewiseConstant:
    """Marker of modules whose output is piecewise constant in their float input (trees, thresholds,
    one-hot codes, lookups): their gradient is zero almost everywhere, so gradient analyzers refuse a
    graph whose explained output depends on the input through one of them (``analyzers.function``)."""

    piecewise_constant = True
    #: the ONNX op the module converts (set by the converter; error messages name it)
    op_type = ""


def _marked(module: torch.nn.Module, node: OnnxNode) -> torch.nn.Module:
    """``module`` with the ONNX op type it converts recorded (for :class:`PiecewiseConstant` messages)."""
    module.op_type = node.operation_type
    return module


class ArrayFeatureExtractor(torch.nn.Module):
    """``x[..., indices]``: entries of the last axis (skl2onnx maps argmax to class labels with it).
    A 1-D ``x`` gives shape (1, k), as onnxruntime does."""

    def forward(self, x: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        out = x.index_select(-1, indices.reshape(-1).long())
        return out.reshape(1, -1) if x.dim() == 1 else out


@register("ArrayFeatureExtractor", (1,), domain=ML_DOMAIN)
def convert_array_feature_extractor(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:  # noqa: ARG001
    """ArrayFeatureExtractor (ai.onnx.ml, opset 1)."""
    return result(ArrayFeatureExtractor(), node)


class Binarizer(PiecewiseConstant, torch.nn.Module):
    """1 where ``x > threshold``, else 0, in x's dtype (a step function: its gradient is zero)."""

    def __init__(self, threshold: float) -> None:
        super().__init__()
        self.threshold = threshold

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x > self.threshold).to(x.dtype)


@register("Binarizer", (1,), domain=ML_DOMAIN)
def convert_binarizer(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:  # noqa: ARG001
    """Binarizer (ai.onnx.ml, opset 1; threshold default 0)."""
    return result(_marked(Binarizer(float(node.attributes.get("threshold", 0.0))), node), node)


# --------------------------------------------------------------------------------------------------
# TreeEnsemble (ai.onnx.ml opset 5)

_LEQ, _LT, _GTE, _GT, _EQ, _NEQ, _MEMBER = range(7)
_AGGREGATES = {0: "AVERAGE", 1: "SUM", 2: "MIN", 3: "MAX"}
_POST_TRANSFORMS = {0: "NONE", 1: "SOFTMAX", 2: "LOGISTIC", 3: "SOFTMAX_ZERO", 4: "PROBIT"}


class _ZeroGradient(torch.autograd.Function):
    """Runs a piecewise-constant function of ``x`` and gives it the gradient it has almost
    everywhere, zero (so the output stays attached to the graph without NaN * 0 tricks)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, module: "TreeEnsemble") -> torch.Tensor:  # noqa: ANN001
        ctx.shape, ctx.dtype = x.shape, x.dtype
        return module.predict(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # noqa: ANN001, ANN205
        return grad.new_zeros(ctx.shape, dtype=ctx.dtype), None


class TreeEnsemble(PiecewiseConstant, torch.nn.Module):
    """ai.onnx.ml TreeEnsemble: every sample walks every tree at once, one tree level per step
    (the loop runs over depth, never over samples), then the reached leaves' weights are
    aggregated per target (SUM, AVERAGE, MIN, MAX). The output is piecewise constant in ``x``: its
    gradient is zero."""

    def __init__(self, nodes: dict[str, torch.Tensor], leaves: dict[str, torch.Tensor], roots: list[int], depth: int,
                 n_targets: int, aggregate: str) -> None:
        super().__init__()
        for name, value in {**nodes, **leaves}.items():
            self.register_buffer(name, value)
        self.register_buffer("roots", torch.tensor(roots, dtype=torch.int64))
        self.depth, self.n_targets, self.aggregate = depth, n_targets, aggregate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _ZeroGradient.apply(x, self)

    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """The ensemble's output for ``x`` (N, F), in x's dtype."""
        values = x.to(torch.float64)
        node = self.roots.expand(x.shape[0], -1)
        at_leaf = torch.zeros(node.shape, dtype=torch.bool, device=x.device)
        for _ in range(self.depth):
            interior = torch.where(at_leaf, 0, node)  # where a walk has ended, ``node`` is a leaf index
            v = values.gather(1, self.features[interior])
            split, mode = self.splits[interior], self.modes[interior]
            member = (v[..., None] == self.members[interior]).any(-1)
            go_true = torch.stack([v <= split, v < split, v >= split, v > split, v == split, v != split, member], -1)
            go_true = go_true.gather(-1, mode[..., None].long()).squeeze(-1) | (torch.isnan(v) & self.missing_true[interior])
            next_node = torch.where(go_true, self.true_ids[interior], self.false_ids[interior])
            next_leaf = torch.where(go_true, self.true_leafs[interior], self.false_leafs[interior])
            node = torch.where(at_leaf, node, next_node)
            at_leaf = at_leaf | next_leaf
        weights, targets = self.leaf_weights[node], self.leaf_targets[node]
        n = x.shape[0]
        if self.aggregate in ("SUM", "AVERAGE"):
            out = weights.new_zeros(n, self.n_targets).scatter_add(1, targets, weights)
            if self.aggregate == "AVERAGE":
                out = out / node.shape[1]
        else:
            # a target no tree reaches is 0, as in onnxruntime (ONNX's reference leaves +-finfo.max there)
            reached = torch.zeros(n, self.n_targets, dtype=torch.bool, device=x.device).scatter(1, targets, True)
            out = weights.new_zeros(n, self.n_targets).scatter_reduce(
                1, targets, weights, "amin" if self.aggregate == "MIN" else "amax", include_self=False)
            out = torch.where(reached, out, 0.0)
        return out.to(x.dtype)


def _attribute(node: OnnxNode, name: str, default=None):  # noqa: ANN001, ANN202
    """An attribute of the node's proto as Python ints/floats or a numpy array (tensor attributes)."""
    for attribute in node.proto.attribute:
        if attribute.name == name:
            value = onnx.helper.get_attribute_value(attribute)
            return onnx.numpy_helper.to_array(value) if isinstance(value, onnx.TensorProto) else value
    return default


def _tree_depth(root: int, true_ids: list[int], false_ids: list[int], true_leafs: list[int], false_leafs: list[int]) -> int:
    """Number of interior nodes on the longest path from ``root`` to a leaf."""
    depth, frontier, seen = 0, [root], 0
    while frontier:
        depth += 1
        seen += len(frontier)
        if seen > len(true_ids) * (len(true_ids) + 1):
            raise ValueError("TreeEnsemble: the node links form a cycle")
        frontier = [nxt for i in frontier for nxt, leaf in ((true_ids[i], true_leafs[i]), (false_ids[i], false_leafs[i])) if not leaf]
    return depth


@register("TreeEnsemble", (5,), domain=ML_DOMAIN)
def convert_tree_ensemble(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:  # noqa: ARG001
    """TreeEnsemble (ai.onnx.ml, opset 5): all branch modes incl. set membership, missing-value
    tracking, aggregate SUM/AVERAGE/MIN/MAX; post_transform NONE only."""
    aggregate = _AGGREGATES.get(int(_attribute(node, "aggregate_function", 1)))
    post = _POST_TRANSFORMS.get(int(_attribute(node, "post_transform", 0)))
    if aggregate is None:
        raise NotImplementedError(f"TreeEnsemble with aggregate_function={_attribute(node, 'aggregate_function')} is not supported")
    if post != "NONE":
        # onnxruntime 1.32 reads 1 as LOGISTIC and 2 as SOFTMAX, the spec the other way round: refuse
        # rather than disagree with one of them
        raise NotImplementedError(f"TreeEnsemble with post_transform={post or _attribute(node, 'post_transform')} is not supported"
                                  " (only NONE; apply Softmax/Sigmoid after the node instead)")
    modes = np.asarray(_attribute(node, "nodes_modes"), dtype=np.int64).reshape(-1)
    count = len(modes)
    true_ids = list(_attribute(node, "nodes_truenodeids"))
    false_ids = list(_attribute(node, "nodes_falsenodeids"))
    true_leafs = [int(v) for v in _attribute(node, "nodes_trueleafs")]
    false_leafs = [int(v) for v in _attribute(node, "nodes_falseleafs")]
    missing = _attribute(node, "nodes_missing_value_tracks_true") or [0] * count
    # membership sets, in the order of the MEMBER nodes, NaN-delimited
    sets: list[list[float]] = []
    current: list[float] = []
    for value in np.asarray(_attribute(node, "membership_values", np.zeros(0)), dtype=np.float64).reshape(-1):
        if np.isnan(value):
            sets.append(current)
            current = []
        else:
            current.append(float(value))
    member_nodes = [i for i in range(count) if modes[i] == _MEMBER]
    if len(sets) < len(member_nodes):
        raise ValueError(f"TreeEnsemble: {len(member_nodes)} set-membership nodes but {len(sets)} membership sets")
    members = torch.full((count, max([1] + [len(m) for m in sets])), float("nan"), dtype=torch.float64)
    for i, values in zip(member_nodes, sets):
        members[i, : len(values)] = torch.tensor(values, dtype=torch.float64)
    nodes = {
        "modes": torch.from_numpy(modes),
        "splits": torch.from_numpy(np.asarray(_attribute(node, "nodes_splits"), dtype=np.float64).reshape(-1).copy()),
        "features": torch.tensor(list(_attribute(node, "nodes_featureids")), dtype=torch.int64),
        "true_ids": torch.tensor(true_ids, dtype=torch.int64), "false_ids": torch.tensor(false_ids, dtype=torch.int64),
        "true_leafs": torch.tensor(true_leafs, dtype=torch.bool), "false_leafs": torch.tensor(false_leafs, dtype=torch.bool),
        "missing_true": torch.tensor([bool(v) for v in missing], dtype=torch.bool), "members": members,
    }
    leaves = {
        "leaf_weights": torch.from_numpy(np.asarray(_attribute(node, "leaf_weights"), dtype=np.float64).reshape(-1).copy()),
        "leaf_targets": torch.tensor(list(_attribute(node, "leaf_targetids")), dtype=torch.int64),
    }
    roots = [int(r) for r in _attribute(node, "tree_roots")]
    depth = max([0] + [_tree_depth(r, true_ids, false_ids, true_leafs, false_leafs) for r in roots])
    module = TreeEnsemble(nodes, leaves, roots, depth, int(_attribute(node, "n_targets")), aggregate)
    return result(_marked(module, node), node)


# --------------------------------------------------------------------------------------------------
# Shared pieces of the classic ai.onnx.ml ops (opsets 1-3): attributes, post transforms, markers

def _attr(node: OnnxNode, name: str, default=None):  # noqa: ANN001, ANN202
    """An attribute as Python values (strings decoded, tensors as numpy arrays), or ``default``."""
    value = _attribute(node, name, None)
    if value is None:
        return default
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, list) and value and isinstance(value[0], bytes):
        return [v.decode() for v in value]
    return value


def _floats(node: OnnxNode, name: str, dtype=np.float64) -> np.ndarray:  # noqa: ANN001
    """A float-list attribute, or its ``<name>_as_tensor`` twin, as a 1-D array (empty when absent)."""
    value = _attr(node, name)
    if value is None:
        value = _attr(node, f"{name}_as_tensor")
    return np.asarray([] if value is None else value, dtype=dtype).reshape(-1)


def _label(node: OnnxNode) -> str:
    return f"ai.onnx.ml::{node.operation_type} node {node.name!r}"


def _erfinv_approx(x: torch.Tensor) -> torch.Tensor:
    """onnxruntime's ErfInv (Winitzki's approximation), which its PROBIT transform uses."""
    sgn = torch.where(x < 0, -1.0, 1.0).to(x.dtype)
    y = (1 - x) * (1 + x)
    log = torch.log(y)
    v = 2 / (np.pi * 0.147) + 0.5 * log
    v2 = 1 / 0.147 * log
    return sgn * torch.sqrt(-v + torch.sqrt(v * v - v2))


def _probit(x: torch.Tensor) -> torch.Tensor:
    return np.sqrt(2.0) * _erfinv_approx(2 * x - 1)


def _softmax_zero(x: torch.Tensor) -> torch.Tensor:
    """onnxruntime's SOFTMAX_ZERO: a softmax over the rows' non-zero entries; zeros stay (almost) zero."""
    vmax = x.max(dim=-1, keepdim=True).values
    nonzero = x.abs() > 1e-7
    e = torch.where(nonzero, torch.exp(x - vmax), x * torch.exp(-vmax))
    total = torch.where(nonzero, e, torch.zeros_like(e)).sum(-1, keepdim=True)
    return e / total


def _post_transform(scores: torch.Tensor, transform: str) -> torch.Tensor:
    """onnxruntime's post transform of a (N, K) score block with K >= 2 (per row)."""
    if transform == "NONE":
        return scores
    if transform == "LOGISTIC":
        return torch.sigmoid(scores)
    if transform == "SOFTMAX":
        return torch.softmax(scores, dim=-1)
    if transform == "SOFTMAX_ZERO":
        return _softmax_zero(scores)
    if transform == "PROBIT":
        return _probit(scores)
    raise NotImplementedError(f"post_transform {transform!r}")


_TRANSFORMS = ("NONE", "LOGISTIC", "SOFTMAX", "SOFTMAX_ZERO", "PROBIT")


def _transform_of(node: OnnxNode) -> str:
    transform = _attr(node, "post_transform", "NONE")
    if transform not in _TRANSFORMS:
        raise NotImplementedError(f"{_label(node)}: post_transform {transform!r} is not one of {_TRANSFORMS}")
    return transform


def _as_float(x: torch.Tensor) -> torch.Tensor:
    """Integer inputs as float32 (onnxruntime's classic ml kernels compute in float32); float inputs
    as they are, so a float64 copy of the graph (the gradient check's reference) stays float64."""
    return x if x.is_floating_point() else x.to(torch.float32)


def _class_labels(node: OnnxNode) -> tuple[torch.Tensor, bool]:
    """The node's class labels as int64 (string labels: their indices) and whether they are strings."""
    strings = _attr(node, "classlabels_strings")
    if strings:
        return torch.arange(len(strings), dtype=torch.int64), True
    ints = _attr(node, "classlabels_ints", _attr(node, "classlabels_int64s"))
    return torch.tensor(list(ints or []), dtype=torch.int64), False


# --------------------------------------------------------------------------------------------------
# Linear models

class LinearRegressor(torch.nn.Module):
    """ai.onnx.ml LinearRegressor: ``x @ W.T + b`` per target, then onnxruntime's post transform
    (with one target only PROBIT applies, as in onnxruntime)."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor, transform: str) -> None:
        super().__init__()
        self.register_buffer("weight", weight)
        self.register_buffer("bias", bias)
        self.transform = transform

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = _as_float(x).reshape(-1, self.weight.shape[1]) if x.dim() < 2 else _as_float(x)
        scores = x @ self.weight.T + self.bias
        if scores.shape[1] == 1:
            return _probit(scores) if self.transform == "PROBIT" else scores
        return _post_transform(scores, self.transform)


@register("LinearRegressor", (1,), domain=ML_DOMAIN)
def convert_linear_regressor(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:  # noqa: ARG001
    """LinearRegressor (ai.onnx.ml, opset 1): every post transform."""
    targets = int(_attr(node, "targets", 1))
    coefficients = _floats(node, "coefficients", np.float32)
    intercepts = _floats(node, "intercepts", np.float32)
    weight = torch.from_numpy(coefficients.reshape(targets, -1).copy())
    bias = torch.from_numpy(intercepts.copy()) if intercepts.size else torch.zeros(targets)
    return result(LinearRegressor(weight, bias, _transform_of(node)), node)


class LinearClassifier(torch.nn.Module):
    """ai.onnx.ml LinearClassifier: scores ``x @ W.T + b``; the label is the first best class (one
    row of weights: the second label when the score is positive); scores as onnxruntime writes
    them (one row and two labels: ``[1 - s, s]``, ``s`` after LOGISTIC when that is the post
    transform; several rows: the post transform)."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor, labels: torch.Tensor, transform: str) -> None:
        super().__init__()
        self.register_buffer("weight", weight)
        self.register_buffer("bias", bias)
        self.register_buffer("labels", labels)
        self.transform = transform

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = _as_float(x).reshape(1, -1) if x.dim() < 2 else _as_float(x)
        scores = x @ self.weight.T + self.bias
        if scores.shape[1] == 1:
            positive = scores[:, 0] > 0
            pair = self.labels if len(self.labels) == 2 else torch.tensor([0, 1], device=x.device)
            label = torch.where(positive, pair[1], pair[0])
            if len(self.labels) == 2:  # onnxruntime: LOGISTIC applies to the one score, then [1 - s, s]
                scores = torch.sigmoid(scores) if self.transform == "LOGISTIC" else scores
                return label, torch.cat([1 - scores, scores], dim=1)
            return label, _probit(scores) if self.transform == "PROBIT" else scores
        return self.labels[scores.argmax(dim=1)], _post_transform(scores, self.transform)


@register("LinearClassifier", (1,), domain=ML_DOMAIN)
def convert_linear_classifier(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:  # noqa: ARG001
    """LinearClassifier (ai.onnx.ml, opset 1): int or string labels (string labels come out as
    their index), every post transform except PROBIT on a two-label single-row model."""
    intercepts = _floats(node, "intercepts", np.float32)
    coefficients = _floats(node, "coefficients", np.float32)
    classes = len(intercepts) if intercepts.size else 1
    labels, _ = _class_labels(node)
    transform = _transform_of(node)
    if classes == 1 and len(labels) == 2 and transform == "PROBIT":
        raise NotImplementedError(f"{_label(node)}: PROBIT on a single-row two-label model (onnxruntime leaves half its scores unset)")
    weight = torch.from_numpy(coefficients.reshape(classes, -1).copy())
    bias = torch.from_numpy(intercepts.copy()) if intercepts.size else torch.zeros(classes)
    return result(LinearClassifier(weight, bias, labels, transform), node)


# --------------------------------------------------------------------------------------------------
# Support vector machines

def _kernel(x: torch.Tensor, vectors: torch.Tensor, kind: str, gamma: float, coef0: float, degree: float) -> torch.Tensor:
    """The SVM kernel between rows of ``x`` (N, F) and ``vectors`` (V, F), as onnxruntime computes it."""
    if kind == "RBF":
        diff = x[:, None, :] - vectors[None, :, :]
        return torch.exp(-gamma * (diff * diff).sum(-1))
    dot = x @ vectors.T
    if kind == "LINEAR":
        return dot
    if kind == "POLY":
        return (gamma * dot + coef0) ** degree
    if kind == "SIGMOID":
        return torch.tanh(gamma * dot + coef0)
    raise NotImplementedError(f"SVM kernel {kind!r}")


def _kernel_params(node: OnnxNode) -> tuple[str, float, float, float]:
    kind = _attr(node, "kernel_type", "LINEAR")
    params = list(_attr(node, "kernel_params", []) or [])
    gamma, coef0, degree = (params + [0.0, 0.0, 0.0])[:3] if params else (0.0, 0.0, 0.0)
    return kind, float(gamma), float(coef0), float(degree)


class SVMRegressor(torch.nn.Module):
    """ai.onnx.ml SVMRegressor: ``sum_v coef_v K(x, sv_v) + rho`` (or ``x . coef + rho`` without
    support vectors); one_class gives +-1; PROBIT is the only post transform of one score."""

    def __init__(self, vectors: torch.Tensor | None, coef: torch.Tensor, rho: float, kernel: tuple, one_class: bool,
                 transform: str) -> None:
        super().__init__()
        self.register_buffer("vectors", vectors if vectors is not None else torch.zeros(0))
        self.register_buffer("coef", coef)
        self.has_vectors = vectors is not None
        self.rho, self.kernel, self.one_class, self.transform = rho, kernel, one_class, transform

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = _as_float(x).reshape(1, -1) if x.dim() < 2 else _as_float(x)
        if self.has_vectors:
            score = _kernel(x, self.vectors, *self.kernel) @ self.coef + self.rho
        else:
            score = _kernel(x, self.coef[None, :], *self.kernel)[:, 0] + self.rho
        if self.one_class:
            score = torch.where(score > 0, 1.0, -1.0).to(score.dtype)
        elif self.transform == "PROBIT":
            score = _probit(score)
        return score[:, None]


@register("SVMRegressor", (1,), domain=ML_DOMAIN)
def convert_svm_regressor(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:  # noqa: ARG001
    """SVMRegressor (ai.onnx.ml, opset 1): LINEAR, POLY, RBF and SIGMOID kernels, one_class."""
    n_vectors = int(_attr(node, "n_supports", 0))
    coef = torch.from_numpy(_floats(node, "coefficients", np.float32).copy())
    rho = float(_floats(node, "rho", np.float32)[0]) if _floats(node, "rho").size else 0.0
    vectors = None
    kernel = _kernel_params(node)
    if n_vectors > 0:
        vectors = torch.from_numpy(_floats(node, "support_vectors", np.float32).reshape(n_vectors, -1).copy())
    else:
        kernel = ("LINEAR", 0.0, 0.0, 0.0)
    one_class = bool(_attr(node, "one_class", 0))
    kind = OneClassSVM if one_class else SVMRegressor
    return result(_marked(kind(vectors, coef, rho, kernel, one_class, _transform_of(node)), node), node)


class OneClassSVM(PiecewiseConstant, SVMRegressor):
    """SVMRegressor with one_class=1: the sign of the score (+1 or -1), piecewise constant."""


def _multiclass_probability(r: torch.Tensor, classes: int) -> torch.Tensor:
    """libsvm's pairwise coupling (Wu, Lin and Weng 2004) as onnxruntime runs it: at most 100
    sweeps, each sample stopping when its error drops below 0.005 / classes. ``r``: (N, K, K)."""
    n, k = r.shape[0], classes
    q = r.new_zeros(n, k, k)
    for i in range(k):
        for j in range(k):
            if j != i:
                q[:, i, i] = q[:, i, i] + r[:, j, i] * r[:, j, i]
        for j in range(i):
            q[:, i, j] = q[:, j, i]
        for j in range(i + 1, k):
            q[:, i, j] = -r[:, j, i] * r[:, i, j]
    p = r.new_full((n, k), 1.0 / k)
    eps = 0.005 / k
    active = torch.ones(n, dtype=torch.bool, device=r.device)
    for _ in range(100):
        qp = (q @ p[:, :, None])[:, :, 0]
        pqp = (p * qp).sum(1)
        error = (qp - pqp[:, None]).abs().max(1).values
        active = active & ~(error < eps)
        if not bool(active.any()):
            break
        new_p = p.clone()
        for i in range(k):
            diff = (-qp[:, i] + pqp) / q[:, i, i]
            p_i = new_p[:, i] + diff
            new_p = torch.cat([new_p[:, :i], p_i[:, None], new_p[:, i + 1:]], dim=1)
            pqp = (pqp + diff * (diff * q[:, i, i] + 2 * qp[:, i])) / (1 + diff) / (1 + diff)
            qp = (qp + diff[:, None] * q[:, i, :]) / (1 + diff[:, None])
            new_p = new_p / (1 + diff[:, None])
        p = torch.where(active[:, None], new_p, p)
    return p


class SVMClassifier(torch.nn.Module):
    """ai.onnx.ml SVMClassifier as onnxruntime computes it: one-vs-one decision values of a kernel
    SVM (label by votes), Platt-scaled and coupled into class probabilities when prob_a/prob_b are
    given, or liblinear's per-class scores without support vectors; then the post transform."""

    def __init__(self, vectors: torch.Tensor | None, per_class: list[int], coef: torch.Tensor, rho: torch.Tensor,
                 prob_a: torch.Tensor, prob_b: torch.Tensor, labels: torch.Tensor, kernel: tuple, transform: str) -> None:
        super().__init__()
        self.register_buffer("vectors", vectors if vectors is not None else torch.zeros(0))
        self.register_buffer("coef", coef)
        self.register_buffer("rho", rho)
        self.register_buffer("prob_a", prob_a)
        self.register_buffer("prob_b", prob_b)
        self.register_buffer("labels", labels)
        self.svc = vectors is not None
        self.per_class, self.kernel, self.transform = per_class, kernel, transform
        self.classes = len(labels) if len(labels) else 1
        self.all_positive = bool((coef >= 0).all())

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = _as_float(x).reshape(1, -1) if x.dim() < 2 else _as_float(x)
        k = self.classes
        if not self.svc:  # liblinear: one row of coefficients per class, one rho
            scores = _kernel(x, self.coef.reshape(k, -1), "LINEAR", 0.0, 0.0, 0.0) + self.rho[0]
            best = scores.argmax(1)
            label = self.labels[best]
            if k == 2:
                top = scores.max(1).values
                second = (top >= 0.5) if self.all_positive else (top > 0)
                label = torch.where(second, self.labels[1], label)
            return label, _post_transform(scores, self.transform)
        kernels = _kernel(x, self.vectors, *self.kernel)
        starts = np.cumsum([0] + self.per_class)
        decisions, votes = [], torch.zeros(x.shape[0], k, dtype=torch.int64, device=x.device)
        index = 0
        for i in range(k - 1):
            for j in range(i + 1, k):
                si, sj = slice(starts[i], starts[i + 1]), slice(starts[j], starts[j + 1])
                value = (kernels[:, si] @ self.coef[j - 1, si] + kernels[:, sj] @ self.coef[i, sj]) + self.rho[index]
                decisions.append(value)
                votes[:, i] += (value > 0).long()
                votes[:, j] += (value <= 0).long()
                index += 1
        decision = torch.stack(decisions, 1)
        label = self.labels[_first_argmax(votes)]
        if len(self.prob_a):
            z = decision * self.prob_a + self.prob_b
            pairwise = (1 - torch.sigmoid(z)).clamp(1e-7, 1 - 1e-7)
            r = decision.new_zeros(x.shape[0], k, k)
            index = 0
            for i in range(k - 1):
                for j in range(i + 1, k):
                    r = r.index_put((torch.arange(x.shape[0]), torch.tensor(i), torch.tensor(j)), pairwise[:, index])
                    r = r.index_put((torch.arange(x.shape[0]), torch.tensor(j), torch.tensor(i)), 1 - pairwise[:, index])
                    index += 1
            return label, _post_transform(_multiclass_probability(r, k), self.transform)
        if k <= 2:
            s = decision
            pair = torch.cat([-s, s], 1) if self.transform == "NONE" else torch.cat([1 - s, s], 1)
            return label, pair
        return label, _post_transform(decision, self.transform)


def _first_argmax(values: torch.Tensor) -> torch.Tensor:
    """Index of the first maximum of each row (std::max_element's choice)."""
    return values.argmax(1)


@register("SVMClassifier", (1,), domain=ML_DOMAIN)
def convert_svm_classifier(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:  # noqa: ARG001
    """SVMClassifier (ai.onnx.ml, opset 1): LINEAR, POLY, RBF and SIGMOID kernels, with and without
    probabilities (prob_a/prob_b), liblinear mode; string labels come out as their index."""
    labels, _ = _class_labels(node)
    per_class = [int(v) for v in (_attr(node, "vectors_per_class", []) or [])]
    coef = torch.from_numpy(_floats(node, "coefficients", np.float32).copy())
    rho = torch.from_numpy(_floats(node, "rho", np.float32).copy())
    prob_a = torch.from_numpy(_floats(node, "prob_a", np.float32).copy())
    prob_b = torch.from_numpy(_floats(node, "prob_b", np.float32).copy())
    transform = _transform_of(node)
    vectors, kernel = None, _kernel_params(node)
    n_vectors = sum(per_class)
    k = max(len(labels), 1)
    if n_vectors > 0:
        vectors = torch.from_numpy(_floats(node, "support_vectors", np.float32).reshape(n_vectors, -1).copy())
        coef = coef.reshape(k - 1, n_vectors)
        if len(prob_a) and transform != "NONE" and k <= 2:
            raise NotImplementedError(f"{_label(node)}: post_transform {transform} on two-class probabilities")
    else:
        kernel = ("LINEAR", 0.0, 0.0, 0.0)
    module = SVMClassifier(vectors, per_class, coef, rho, prob_a, prob_b, labels, kernel, transform)
    return result(module, node)


# --------------------------------------------------------------------------------------------------
# TreeEnsembleClassifier / TreeEnsembleRegressor (ai.onnx.ml opsets 1 and 3)

_LEGACY_MODES = {"BRANCH_LEQ": 0, "BRANCH_LT": 1, "BRANCH_GTE": 2, "BRANCH_GT": 3, "BRANCH_EQ": 4, "BRANCH_NEQ": 5, "LEAF": 6}


class _LegacyZeroGradient(torch.autograd.Function):
    """The forest's outputs, with the zero gradient they have almost everywhere."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, module: "TreeEnsembleLegacy"):  # noqa: ANN001, ANN205
        ctx.shape, ctx.dtype = x.shape, x.dtype
        label, scores = module.predict(x)
        ctx.mark_non_differentiable(label)
        return label, scores

    @staticmethod
    def backward(ctx, grad_label, grad_scores):  # noqa: ANN001, ANN205
        return grad_scores.new_zeros(ctx.shape, dtype=ctx.dtype), None


class TreeEnsembleLegacy(PiecewiseConstant, torch.nn.Module):
    """ai.onnx.ml TreeEnsembleRegressor / TreeEnsembleClassifier, as onnxruntime computes them.

    Every sample walks every tree at once, one level per step (the loop runs over depth, never
    over samples); the reached leaves' weights are aggregated per target in float32 (onnxruntime's
    accumulator type for float inputs), then base values, the classifier's label and binary-case
    rules, and the post transform follow onnxruntime's aggregators. The scores are piecewise
    constant in ``x``: their gradient is zero.
    """

    def __init__(self, arrays: dict[str, torch.Tensor], depth: int, aggregate: str, transform: str,
                 base: torch.Tensor, classifier: bool, binary_case: bool, all_positive: bool) -> None:
        super().__init__()
        for name, value in arrays.items():
            self.register_buffer(name, value)
        self.register_buffer("base", base)
        self.depth, self.aggregate, self.transform = depth, aggregate, transform
        self.classifier, self.binary_case, self.all_positive = classifier, binary_case, all_positive

    def forward(self, x: torch.Tensor):  # noqa: ANN201
        label, scores = _LegacyZeroGradient.apply(x, self)
        return (label, scores) if self.classifier else scores

    def leaves(self, x: torch.Tensor) -> torch.Tensor:
        """The leaf each sample reaches in each tree, (N, trees)."""
        values = x.to(torch.float64)
        node = self.roots.expand(x.shape[0], -1)
        for _ in range(self.depth):
            leaf = self.is_leaf[node]
            v = values.gather(1, self.features[node])
            split = self.splits[node]
            go_true = torch.stack([v <= split, v < split, v >= split, v > split, v == split, v != split], -1)
            go_true = go_true.gather(-1, self.modes[node].clamp(max=5)[..., None]).squeeze(-1)
            go_true = go_true | (torch.isnan(v) & self.missing_true[node])
            node = torch.where(leaf, node, torch.where(go_true, self.true_ids[node], self.false_ids[node]))
        return node

    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(label or empty, scores) for ``x`` (N, F) or (F,)."""
        x = x.reshape(1, -1) if x.dim() < 2 else x
        acc = torch.float64 if x.dtype == torch.float64 else torch.float32
        node = self.leaves(x)
        weights, has = self.leaf_weights[node].to(acc), self.leaf_has[node]  # (N, trees, T)
        n, trees, targets = weights.shape
        hit = has.any(1)
        if self.aggregate in ("SUM", "AVERAGE"):
            score = torch.zeros(n, targets, dtype=acc, device=x.device)
            for t in range(trees):  # tree order, as onnxruntime accumulates
                score = score + torch.where(has[:, t], weights[:, t], 0)
            if self.aggregate == "AVERAGE":
                score = score / trees
        else:
            fill = float("inf") if self.aggregate == "MIN" else float("-inf")
            masked = torch.where(has, weights, fill)
            score = masked.min(1).values if self.aggregate == "MIN" else masked.max(1).values
            score = torch.where(hit, score, 0)
        if self.classifier:
            return self._classify(score, hit, x)
        return torch.zeros(0, dtype=torch.int64), self._regress(score, hit).to(x.dtype if x.is_floating_point() else torch.float32)

    def _regress(self, score: torch.Tensor, hit: torch.Tensor) -> torch.Tensor:
        base = self.base.to(score.dtype)
        if score.shape[1] == 1:
            score = score + (base[0] if len(base) == 1 else 0)
            return _probit(score) if self.transform == "PROBIT" else score
        if len(base) == score.shape[1]:
            score = score + base
        return _post_transform(torch.where(hit, score, 0), self.transform)

    def _classify(self, score: torch.Tensor, hit: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        base = self.base.to(score.dtype)
        classes = score.shape[1]
        if classes > 2:
            if len(base):
                score = score + base
                hit = torch.ones_like(hit)
            best = torch.where(hit, score, float("-inf")).argmax(1)
            return self.labels[best], _post_transform(torch.where(hit, score, 0), self.transform).to(torch.float32)
        s0, s1, h0, h1 = score[:, 0], score[:, 1], hit[:, 0], hit[:, 1]
        write = torch.full_like(h0, -1, dtype=torch.int64)
        two = h1.clone()  # rows whose score vector keeps two entries
        if len(base) == 2:
            s1, s0 = torch.where(h1, base[1] + s0, s1 + base[1]), torch.where(h1, -(base[1] + s0), s0 + base[0])
            two = torch.ones_like(h1)
        elif len(base) == 1:
            s0 = s0 + base[0]
        else:
            write = torch.full_like(write, 3)
        v0 = torch.where(h0, s0, 0)  # what onnxruntime writes for an entry without a score
        v1 = torch.where(h1, s1, 0)
        positive = torch.where(two & h1, s1, torch.where(h0, s0, 0))
        if self.binary_case:
            cut = positive > 0.5 if self.all_positive else positive > 0
            first = (0, 2)[not self.all_positive]
            write = torch.where(cut, first, first + 1)
            label = torch.where(cut, self.labels[1], self.labels[0])
        else:
            label = torch.where(positive > 0, 1, 0).to(torch.int64)
        both = _post_transform(torch.stack([v0, v1], 1), self.transform)
        s = v0[:, None]
        single = torch.where(write[:, None] <= 1, torch.cat([1 - s, s], 1),
                             torch.cat([torch.sigmoid(-s), torch.sigmoid(s)], 1) if self.transform == "LOGISTIC"
                             else torch.cat([-s, s], 1))
        if self.transform == "PROBIT" and not bool(two.all()):
            raise ValueError("TreeEnsembleClassifier: PROBIT on a one-score binary row leaves a score unset in onnxruntime")
        if not bool(two.all()) and bool((write[~two] < 0).any()):
            raise ValueError("TreeEnsembleClassifier: a one-score row without a binary rule leaves a score unset in onnxruntime")
        return label, torch.where(two[:, None], both, single).to(torch.float32)


def _legacy_forest(node: OnnxNode, prefix: str) -> tuple[dict[str, torch.Tensor], int, int]:
    """The node arrays of a classic tree ensemble (``prefix``: "target" or "class"), its depth and
    the number of targets the leaves write to."""
    tree_ids = [int(v) for v in _attr(node, "nodes_treeids")]
    node_ids = [int(v) for v in _attr(node, "nodes_nodeids")]
    index = {(t, i): k for k, (t, i) in enumerate(zip(tree_ids, node_ids))}
    count = len(tree_ids)
    modes_raw = _attr(node, "nodes_modes")
    unknown = sorted(set(modes_raw) - set(_LEGACY_MODES))
    if unknown:
        raise NotImplementedError(f"{_label(node)}: node modes {unknown}")
    modes = [_LEGACY_MODES[m] for m in modes_raw]
    splits = _floats(node, "nodes_values")
    if splits.size == 0:
        splits = np.zeros(count)
    features = [int(v) for v in _attr(node, "nodes_featureids")]
    true_ids, false_ids = _attr(node, "nodes_truenodeids"), _attr(node, "nodes_falsenodeids")
    missing = _attr(node, "nodes_missing_value_tracks_true") or [0] * count
    is_leaf = [m == 6 for m in modes]
    true_idx = [k if is_leaf[k] else index[(tree_ids[k], int(true_ids[k]))] for k in range(count)]
    false_idx = [k if is_leaf[k] else index[(tree_ids[k], int(false_ids[k]))] for k in range(count)]
    target_trees = [int(v) for v in _attr(node, f"{prefix}_treeids", [])]
    target_nodes = [int(v) for v in _attr(node, f"{prefix}_nodeids", [])]
    target_ids = [int(v) for v in _attr(node, f"{prefix}_ids", [])]
    target_weights = _floats(node, f"{prefix}_weights")
    return ({
        "modes": torch.tensor(modes, dtype=torch.int64), "splits": torch.from_numpy(splits.astype(np.float64)),
        "features": torch.tensor([f if not leaf else 0 for f, leaf in zip(features, is_leaf)], dtype=torch.int64),
        "true_ids": torch.tensor(true_idx, dtype=torch.int64), "false_ids": torch.tensor(false_idx, dtype=torch.int64),
        "is_leaf": torch.tensor(is_leaf, dtype=torch.bool), "missing_true": torch.tensor([bool(v) for v in missing], dtype=torch.bool),
    }, index, (target_trees, target_nodes, target_ids, target_weights))


def _convert_legacy(node: OnnxNode, classifier: bool) -> TreeEnsembleLegacy:
    arrays, index, (trees, nodes, ids, weights) = _legacy_forest(node, "class" if classifier else "target")
    count = len(arrays["modes"])
    if classifier:
        labels, _ = _class_labels(node)
        targets = len(labels)
    else:
        labels = torch.zeros(0, dtype=torch.int64)
        targets = int(_attr(node, "n_targets", 1))
    if ids and max(ids) >= targets:
        raise ValueError(f"{_label(node)}: a leaf writes to target {max(ids)} of {targets}")
    leaf_weights = np.zeros((count, targets), dtype=np.float64)
    leaf_has = np.zeros((count, targets), dtype=bool)
    for t, i, target, w in zip(trees, nodes, ids, weights):
        k = index[(t, i)]
        leaf_weights[k, target] += w
        leaf_has[k, target] = True
    tree_order = list(dict.fromkeys(int(v) for v in _attr(node, "nodes_treeids")))
    roots = []
    for tree in tree_order:
        members = [k for (t, _), k in index.items() if t == tree]
        children = {int(v) for k in members if not arrays["is_leaf"][k] for v in (arrays["true_ids"][k], arrays["false_ids"][k])}
        roots.append(next(k for k in members if k not in children))
    is_leaf = arrays["is_leaf"].tolist()
    depth = 0
    for root in roots:
        frontier, level = [root], 0
        while frontier and level <= count:
            frontier = [c for k in frontier if not is_leaf[k] for c in (int(arrays["true_ids"][k]), int(arrays["false_ids"][k]))]
            level += 1 if frontier else 0
        depth = max(depth, level)
    arrays.update(roots=torch.tensor(roots, dtype=torch.int64), leaf_weights=torch.from_numpy(leaf_weights),
                  leaf_has=torch.from_numpy(leaf_has), labels=labels)
    aggregate = "SUM" if classifier else _attr(node, "aggregate_function", "SUM")
    if aggregate not in ("SUM", "AVERAGE", "MIN", "MAX"):
        raise NotImplementedError(f"{_label(node)}: aggregate_function {aggregate!r}")
    base = torch.from_numpy(_floats(node, "base_values"))
    binary_case = classifier and targets == 2 and len(set(ids)) == 1
    all_positive = bool((np.asarray(weights) >= 0).all())
    return TreeEnsembleLegacy(arrays, depth, aggregate, _transform_of(node), base, classifier, binary_case, all_positive)


@register("TreeEnsembleRegressor", (1, 3), domain=ML_DOMAIN)
def convert_tree_ensemble_regressor(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:  # noqa: ARG001
    """TreeEnsembleRegressor (ai.onnx.ml, opsets 1 and 3): every branch mode, missing-value
    tracks, aggregate functions, base values and post transforms (``*_as_tensor`` attributes too)."""
    return result(_marked(_convert_legacy(node, classifier=False), node), node)


@register("TreeEnsembleClassifier", (1, 3), domain=ML_DOMAIN)
def convert_tree_ensemble_classifier(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:  # noqa: ARG001
    """TreeEnsembleClassifier (ai.onnx.ml, opsets 1 and 3): as the regressor, plus onnxruntime's
    binary-case rules; string class labels come out as their index."""
    return result(_marked(_convert_legacy(node, classifier=True), node), node)


# --------------------------------------------------------------------------------------------------
# Preprocessing: Scaler, Normalizer, Imputer, OneHotEncoder, FeatureVectorizer, LabelEncoder, ZipMap

class Scaler(torch.nn.Module):
    """``(x - offset) * scale`` in float32 (offset and scale: one value or one per feature)."""

    def __init__(self, offset: torch.Tensor, scale: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("offset", offset)
        self.register_buffer("scale", scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (_as_float(x) - self.offset) * self.scale


@register("Scaler", (1,), domain=ML_DOMAIN)
def convert_scaler(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:  # noqa: ARG001
    """Scaler (ai.onnx.ml, opset 1)."""
    offset = torch.from_numpy(_floats(node, "offset", np.float32).copy())
    scale = torch.from_numpy(_floats(node, "scale", np.float32).copy())
    return result(Scaler(offset if len(offset) else torch.zeros(1), scale if len(scale) else torch.ones(1)), node)


class Normalizer(torch.nn.Module):
    """Each row divided by its MAX, L1 or L2 norm (rows whose norm is 0 stay as they are)."""

    def __init__(self, norm: str) -> None:
        super().__init__()
        self.norm = norm

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = _as_float(x)
        if self.norm == "MAX":
            d = x.max(dim=-1, keepdim=True).values
        elif self.norm == "L1":
            d = x.abs().sum(-1, keepdim=True)
        else:
            d = torch.sqrt((x * x).sum(-1, keepdim=True))
        zero = d == 0
        return x / torch.where(zero, torch.ones_like(d), d)


@register("Normalizer", (1,), domain=ML_DOMAIN)
def convert_normalizer(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:  # noqa: ARG001
    """Normalizer (ai.onnx.ml, opset 1): MAX, L1, L2."""
    norm = _attr(node, "norm", "MAX")
    if norm not in ("MAX", "L1", "L2"):
        raise NotImplementedError(f"{_label(node)}: norm {norm!r}")
    return result(Normalizer(norm), node)


class Imputer(torch.nn.Module):
    """Entries equal to the replaced value (NaN: NaN entries) become the imputed value of their
    feature; the others pass through unchanged (and keep their gradient)."""

    def __init__(self, imputed: torch.Tensor, replaced: float) -> None:
        super().__init__()
        self.register_buffer("imputed", imputed)
        self.replaced = replaced

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hole = torch.isnan(x) if x.is_floating_point() and np.isnan(self.replaced) else x == self.replaced
        return torch.where(hole, self.imputed.to(x.dtype).expand_as(x) if x.dim() else self.imputed.to(x.dtype), x)


@register("Imputer", (1,), domain=ML_DOMAIN)
def convert_imputer(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:  # noqa: ARG001
    """Imputer (ai.onnx.ml, opset 1): float and int64 values."""
    floats = _floats(node, "imputed_value_floats", np.float32)
    if floats.size:
        imputed, replaced = torch.from_numpy(floats.copy()), float(_attr(node, "replaced_value_float", 0.0))
    else:
        imputed = torch.tensor([int(v) for v in _attr(node, "imputed_value_int64s", [])], dtype=torch.int64)
        replaced = float(_attr(node, "replaced_value_int64", 0))
    return result(Imputer(imputed, replaced), node)


class OneHotEncoder(PiecewiseConstant, torch.nn.Module):
    """A float32 one-hot code of each value over ``categories`` (a new last axis); unknown values
    give all zeros (``zeros=1``) or an error."""

    def __init__(self, categories: torch.Tensor, zeros: bool) -> None:
        super().__init__()
        self.register_buffer("categories", categories)
        self.zeros = zeros

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        values = x.to(torch.int64) if x.is_floating_point() else x.long()
        code = (values[..., None] == self.categories).to(torch.float32)
        if not self.zeros and not torch.jit.is_tracing() and bool((code.sum(-1) == 0).any()):
            raise ValueError("OneHotEncoder: a value is not among the categories and zeros=0")
        return code


@register("OneHotEncoder", (1,), domain=ML_DOMAIN)
def convert_one_hot_encoder(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:  # noqa: ARG001
    """OneHotEncoder (ai.onnx.ml, opset 1) over int64 categories (numeric inputs)."""
    if _attr(node, "cats_strings"):
        raise NotImplementedError(f"{_label(node)}: string categories (string tensors are left to onnxruntime)")
    categories = torch.tensor([int(v) for v in _attr(node, "cats_int64s", [])], dtype=torch.int64)
    return result(_marked(OneHotEncoder(categories, bool(_attr(node, "zeros", 1))), node), node)


class FeatureVectorizer(torch.nn.Module):
    """Inputs concatenated along the last axis in float32, each cut or zero-padded to its declared width."""

    def __init__(self, widths: list[int]) -> None:
        super().__init__()
        self.widths = widths

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        parts = []
        for x, width in zip(inputs, self.widths):
            x = _as_float(x)
            x = x.reshape(1, -1) if x.dim() < 2 else x.reshape(x.shape[0], -1)
            x = x[:, :width]
            if x.shape[1] < width:
                x = torch.nn.functional.pad(x, (0, width - x.shape[1]))
            parts.append(x)
        return torch.cat(parts, dim=1)


@register("FeatureVectorizer", (1,), domain=ML_DOMAIN)
def convert_feature_vectorizer(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:  # noqa: ARG001
    """FeatureVectorizer (ai.onnx.ml, opset 1)."""
    return result(FeatureVectorizer([int(v) for v in _attr(node, "inputdimensions", [])]), node)


class LabelEncoder(PiecewiseConstant, torch.nn.Module):
    """Each value looked up among ``keys`` (its ``values`` entry) or ``default``."""

    def __init__(self, keys: torch.Tensor, values: torch.Tensor, default: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("keys", keys)
        self.register_buffer("values", values)
        self.register_buffer("default", default)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        match = x[..., None] == self.keys.to(x.dtype)
        found = match.any(-1)
        picked = self.values[match.to(torch.int64).argmax(-1)]
        return torch.where(found, picked, self.default)


@register("LabelEncoder", (2, 4), domain=ML_DOMAIN)
def convert_label_encoder(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:  # noqa: ARG001
    """LabelEncoder (ai.onnx.ml, opsets 2 and 4) between int64 and float tensors (string keys or
    values are left to onnxruntime)."""
    def array(kind: str) -> np.ndarray | None:
        for name, dtype in ((f"{kind}_int64s", np.int64), (f"{kind}_floats", np.float32), (f"{kind}_tensor", None)):
            value = _attribute(node, name)
            if value is not None:
                value = np.asarray(value if dtype is None else list(value), dtype=dtype)
                if value.dtype.kind not in "iuf":
                    return None
                return value
        return None

    keys, values = array("keys"), array("values")
    if keys is None or values is None:
        raise NotImplementedError(f"{_label(node)}: string keys or values (string tensors are left to onnxruntime)")
    default_tensor = _attribute(node, "default_tensor")
    if default_tensor is not None:
        default = np.asarray(default_tensor).reshape(-1)[0]
    elif values.dtype.kind == "f":
        default = float(_attr(node, "default_float", -0.0))
    else:
        default = int(_attr(node, "default_int64", -1))
    default = np.asarray(default, dtype=values.dtype)
    module = LabelEncoder(torch.from_numpy(keys.copy()), torch.from_numpy(values.copy()), torch.from_numpy(default.copy()))
    return result(_marked(module, node), node)


class ZipMap(torch.nn.Module):
    """ZipMap's input, the (N, classes) probability tensor it wraps into a sequence of maps.

    torch has no maps: the converted graph returns the tensor, which is what gets explained, and
    the parity check compares it with onnxruntime's maps read in key order (onnxxai.parity).
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


@register("ZipMap", (1,), domain=ML_DOMAIN)
def convert_zip_map(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:  # noqa: ARG001
    """ZipMap (ai.onnx.ml, opset 1): its tensor input (see :class:`ZipMap`)."""
    labels = _attr(node, "classlabels_int64s") or _attr(node, "classlabels_strings") or []
    if list(labels) != sorted(labels):
        raise NotImplementedError(f"{_label(node)}: class labels not in sorted order (onnxruntime's maps list keys sorted)")
    return result(ZipMap(), node)
