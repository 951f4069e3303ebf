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


class Binarizer(torch.nn.Module):
    """1 where ``x > threshold``, else 0, in x's dtype (a step function: its gradient is zero)."""

    def __init__(self, threshold: float) -> None:
        super().__init__()
        self.threshold = threshold

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x > self.threshold).to(x.dtype)


@register("Binarizer", (1,), domain=ML_DOMAIN)
def convert_binarizer(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:  # noqa: ARG001
    """Binarizer (ai.onnx.ml, opset 1; threshold default 0)."""
    return result(Binarizer(float(node.attributes.get("threshold", 0.0))), node)


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


class TreeEnsemble(torch.nn.Module):
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
    return result(module, node)
