"""Exact interventional TreeSHAP computed straight from an ONNX tree ensemble node.

No peer reads trees from an ONNX file: shap's ``TreeExplainer`` needs the native scikit-learn,
LightGBM or XGBoost object. An ``ai.onnx.ml`` tree node's attributes hold exactly the arrays it
needs (children, features, thresholds, leaf weights), so :class:`TreeSHAP` reads them with
``onnx.helper.get_attribute_value`` (legacy ``TreeEnsembleClassifier`` / ``TreeEnsembleRegressor``
and the opset-5 ``TreeEnsemble``) and computes the Shapley values of the interventional game
(Lundberg et al. 2020, "From local explanations to global understanding with explainable AI for
trees"; shap's ``feature_perturbation="interventional"``): for a background row ``r``,
``v(S) = f(x_S, r_~S)``, averaged over the background. The explained quantity is the node's raw
margin before its ``post_transform`` (LOGISTIC, SOFTMAX, ...), one column per output column of the
node, so attributions plus the expected value add up to the margin exactly.

Only the interventional variant can be computed: ONNX trees carry no node covers (skl2onnx writes
hit rates of 1.0), so shap's path-dependent ("tree_path_dependent") variant, which weights the
branches by the training data that reached them, cannot be recovered from the file.

How: a tree's output for a hybrid row ``(x_S, r_~S)`` is the value of the one leaf whose path
constraints it satisfies. Per leaf and per feature on its path, ``x`` either satisfies all the path's
constraints on that feature or not, and so does ``r``. The leaf is reached iff every such feature
is satisfied by whichever row it comes from: with ``A`` the features only ``x`` satisfies and ``B``
those only ``r`` satisfies, iff ``A ⊆ S`` and ``B ∩ S = ∅`` (and no feature is satisfied by
neither). That game's Shapley values are closed-form: ``(|A|-1)!|B|!/(|A|+|B|)!`` for each feature
of ``A``, ``-|A|!(|B|-1)!/(|A|+|B|)!`` for each of ``B``. The leaves of all trees are independent
terms, so the whole ensemble is one batch of small matrix products over (rows, background, leaves,
path features), computed in bounded chunks with numpy.

Pre-processing: the tree node's input for ``x`` and for the background is computed by running the
prefix of the graph (the nodes the tree input depends on) in onnxruntime. When that prefix is a
chain of per-feature elementwise ops (Cast, Scaler, Imputer, Binarizer, arithmetic with constants)
and column selections (ArrayFeatureExtractor, Gather on the last axis) from the analyzed input,
each tree feature is one input column and the game over tree features is the game over input
columns, so attributions map 1:1 to input columns (unused columns get 0). Any other prefix
(one-hot encoding, FeatureVectorizer of several inputs, ...) raises :class:`AnalyzerError`;
:func:`tree_shap_values` still explains the tree input's own features there.

This module imports no torch.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper

from onnxxai.blackbox.base import BlackBoxAnalyzer, as_runtime
from onnxxai.errors import AnalyzerError
from onnxxai.parity import onnxruntime_session
from onnxxai.runtime import RuntimeModel, load_runtime

__all__ = ["TreeSHAP", "TreeEnsemble", "read_tree_ensemble", "tree_node", "tree_shap_values", "TREE_OPS"]

ML_DOMAIN = "ai.onnx.ml"
#: the ai.onnx.ml ops whose trees TreeSHAP reads
TREE_OPS = ("TreeEnsembleClassifier", "TreeEnsembleRegressor", "TreeEnsemble")

# decision modes, numbered as the opset-5 TreeEnsemble numbers them
_LEQ, _LT, _GTE, _GT, _EQ, _NEQ, _MEMBER = range(7)
_LEGACY_MODES = {"BRANCH_LEQ": _LEQ, "BRANCH_LT": _LT, "BRANCH_GTE": _GTE, "BRANCH_GT": _GT,
                 "BRANCH_EQ": _EQ, "BRANCH_NEQ": _NEQ}
_POST_TRANSFORMS = ("NONE", "SOFTMAX", "SOFTMAX_ZERO", "LOGISTIC", "PROBIT")  # opset-5 numbering
_AGGREGATES = ("AVERAGE", "SUM", "MIN", "MAX")  # opset-5 numbering

#: elements of one (rows x background x leaves) block; bounds the memory of the pairwise products
_BLOCK = 2**21


# -- reading the node --------------------------------------------------------------------------
@dataclass
class TreeEnsemble:
    """A tree node's trees as flat arrays, and how its raw sums become its output columns.

    Branch nodes (all trees): ``feature``, ``threshold``, ``mode`` (opset-5 numbering),
    ``missing_true`` (NaN goes the true way), ``members`` (set of a MEMBER node). Leaves: ``values``
    ``(L, C)`` (per class/target id, already divided by the tree count for AVERAGE), ``features``
    ``(L, D)`` the distinct features on each leaf's path (-1 pads). Path entries, sorted by
    ``group = leaf * D + slot``: ``entry_branch``, ``entry_true`` (the side the path takes).
    Output: margins ``z = s @ out_matrix + out_offset`` from the per-id sums ``s``; ``transform``
    names what onnxruntime applies to ``z`` (used to verify the reading against onnxruntime).
    """

    node_name: str
    op_type: str
    n_trees: int
    feature: np.ndarray
    threshold: np.ndarray
    mode: np.ndarray
    missing_true: np.ndarray
    members: dict[int, np.ndarray]
    values: np.ndarray
    features: np.ndarray
    entry_branch: np.ndarray
    entry_true: np.ndarray
    entry_group: np.ndarray
    out_matrix: np.ndarray
    out_offset: np.ndarray
    transform: str
    post_transform: str
    aggregate: str
    layout: str = ""
    _groups: tuple[np.ndarray, np.ndarray] | None = field(default=None, repr=False)

    @property
    def n_features(self) -> int:
        """Columns the trees read (largest feature id + 1)."""
        return int(self.feature.max()) + 1 if self.feature.size else 0

    @property
    def depth(self) -> int:
        """Most distinct features on one root-to-leaf path."""
        return self.features.shape[1]

    # -- evaluation ---------------------------------------------------------------------------
    def decisions(self, z: np.ndarray) -> np.ndarray:
        """``(N, B)``: True where row ``n`` takes branch node ``b``'s true side (onnxruntime's rules,
        NaN included: comparisons with NaN are false, ``!=`` true, unless the node sends NaN true)."""
        v = z[:, self.feature]
        thr = self.threshold
        out = np.zeros(v.shape, dtype=bool)
        for mode, compare in ((_LEQ, np.less_equal), (_LT, np.less), (_GTE, np.greater_equal),
                              (_GT, np.greater), (_EQ, np.equal), (_NEQ, np.not_equal)):
            cols = np.flatnonzero(self.mode == mode)
            if cols.size:
                out[:, cols] = compare(v[:, cols], thr[cols])
        for b, members in self.members.items():
            out[:, b] = np.isin(v[:, b], members)
        if self.missing_true.any():
            out |= self.missing_true & np.isnan(v)
        return out

    def path_matches(self, z: np.ndarray) -> np.ndarray:
        """``(N, L, D)`` booleans: row ``n`` satisfies every constraint leaf ``l``'s path puts on
        its ``s``-th feature (padding slots are True)."""
        n, (leaves, depth) = len(z), self.features.shape
        out = np.ones((n, leaves * depth), dtype=bool)
        if not self.entry_branch.size:
            return out.reshape(n, leaves, depth)
        if self._groups is None:
            starts = np.flatnonzero(np.r_[True, self.entry_group[1:] != self.entry_group[:-1]])
            self._groups = (starts, self.entry_group[starts])
        starts, groups = self._groups
        step = max(1, _BLOCK * 4 // max(self.entry_branch.size, self.feature.size, 1))
        for lo in range(0, n, step):
            go = self.decisions(z[lo:lo + step])
            wrong = go[:, self.entry_branch] != self.entry_true
            out[lo:lo + step, groups] = ~np.logical_or.reduceat(wrong, starts, axis=1)
        return out.reshape(n, leaves, depth)

    def sums(self, matches: np.ndarray) -> np.ndarray:
        """Per-id raw sums ``(N, C)`` of the rows whose :meth:`path_matches` are ``matches``."""
        return matches.all(axis=2).astype(np.float64) @ self.values

    def margins(self, sums: np.ndarray) -> np.ndarray:
        """The node's output columns before onnxruntime's final transform."""
        return sums @ self.out_matrix + self.out_offset

    def apply_transform(self, z: np.ndarray) -> np.ndarray | None:
        """What onnxruntime outputs for margins ``z`` (None where this reader does not emulate it)."""
        if self.transform == "NONE":
            return z
        if self.transform == "LOGISTIC":
            return 1.0 / (1.0 + np.exp(-z))
        if self.transform in ("SOFTMAX", "SOFTMAX_ZERO"):
            keep = np.ones(z.shape, bool) if self.transform == "SOFTMAX" else z != 0
            e = np.where(keep, np.exp(z - np.where(keep, z, -np.inf).max(axis=1, keepdims=True)), 0.0)
            return e / np.maximum(e.sum(axis=1, keepdims=True), np.finfo(np.float64).tiny)
        return None  # PROBIT


def tree_node(model: onnx.ModelProto, label: str = "<model>") -> onnx.NodeProto:
    """The one ``ai.onnx.ml`` tree ensemble node of ``model``'s main graph (AnalyzerError if none or several)."""
    found = [n for n in model.graph.node if n.domain == ML_DOMAIN and n.op_type in TREE_OPS]
    if not found:
        ops = sorted({f"{n.domain or 'ai.onnx'}::{n.op_type}" for n in model.graph.node})
        raise AnalyzerError(f"{label}: TreeSHAP needs an ai.onnx.ml tree ensemble node ({', '.join(TREE_OPS)}); "
                            f"the graph has {ops}. Use KernelSHAP for other models.")
    if len(found) > 1:
        names = [f"{n.op_type} {n.name!r}" for n in found]
        raise AnalyzerError(f"{label}: {len(found)} tree ensemble nodes ({names}); TreeSHAP explains a file "
                            "whose output comes from one. Use KernelSHAP for stacked or voting ensembles.")
    return found[0]


def _attrs(node: onnx.NodeProto) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for a in node.attribute:
        value = helper.get_attribute_value(a)
        if isinstance(value, onnx.TensorProto):
            value = numpy_helper.to_array(value)
        elif isinstance(value, bytes):
            value = value.decode()
        elif isinstance(value, list) and value and isinstance(value[0], bytes):
            value = [v.decode() for v in value]
        out[a.name] = value
    return out


def _pick(attrs: Mapping[str, Any], name: str, default: Any = None) -> np.ndarray:
    """Attribute ``name`` as an array, its ``_as_tensor`` (double) twin winning when present."""
    value = attrs.get(f"{name}_as_tensor", attrs.get(name, default))
    return np.asarray([] if value is None else value)


def read_tree_ensemble(node: onnx.NodeProto, label: str = "<model>") -> TreeEnsemble:
    """Read the trees of a legacy TreeEnsembleClassifier/Regressor or opset-5 TreeEnsemble node."""
    where = f"{label}: {node.op_type} node {node.name!r}"
    attrs = _attrs(node)
    if node.op_type == "TreeEnsemble":
        trees, n_ids = _trees_v5(attrs, where)
        aggregate = _AGGREGATES[int(attrs.get("aggregate_function", 1))]
        post = _POST_TRANSFORMS[int(attrs.get("post_transform", 0))]
    else:
        trees, n_ids = _trees_legacy(node.op_type, attrs, where)
        aggregate = str(attrs.get("aggregate_function", "SUM"))
        post = str(attrs.get("post_transform", "NONE"))
    if aggregate not in ("SUM", "AVERAGE"):
        raise AnalyzerError(f"{where}: aggregate_function {aggregate} is not a sum over trees, so the "
                            "per-tree Shapley values do not add up; TreeSHAP supports SUM and AVERAGE. "
                            "Use KernelSHAP for this file.")
    ensemble = _flatten(trees, n_ids, where)
    if aggregate == "AVERAGE" and ensemble.n_trees:
        ensemble.values /= ensemble.n_trees
    ensemble.node_name, ensemble.op_type = node.name, node.op_type
    ensemble.aggregate, ensemble.post_transform = aggregate, post
    _output_map(ensemble, node.op_type, attrs, n_ids, post)
    return ensemble


@dataclass
class _Node:
    feature: int = -1
    threshold: float = 0.0
    mode: int = -1  # -1: leaf
    missing_true: bool = False
    members: np.ndarray | None = None
    true: int = -1
    false: int = -1
    value: dict[int, float] = field(default_factory=dict)


def _trees_legacy(op: str, attrs: Mapping[str, Any], where: str) -> tuple[list[tuple[list[_Node], int]], int]:
    tree_ids = _pick(attrs, "nodes_treeids").astype(np.int64)
    node_ids = _pick(attrs, "nodes_nodeids").astype(np.int64)
    modes = list(attrs.get("nodes_modes", []))
    features = _pick(attrs, "nodes_featureids").astype(np.int64)
    values = _pick(attrs, "nodes_values").astype(np.float64)
    trues = _pick(attrs, "nodes_truenodeids").astype(np.int64)
    falses = _pick(attrs, "nodes_falsenodeids").astype(np.int64)
    missing = _pick(attrs, "nodes_missing_value_tracks_true", [0] * len(tree_ids)).astype(bool)
    n = len(tree_ids)
    for name, arr in (("nodes_nodeids", node_ids), ("nodes_modes", modes), ("nodes_featureids", features),
                      ("nodes_values", values), ("nodes_truenodeids", trues), ("nodes_falsenodeids", falses),
                      ("nodes_missing_value_tracks_true", missing)):
        if len(arr) != n:
            raise AnalyzerError(f"{where}: attribute {name} has {len(arr)} entries for {n} nodes")
    prefix = "class" if op == "TreeEnsembleClassifier" else "target"
    w_tree = _pick(attrs, f"{prefix}_treeids").astype(np.int64)
    w_node = _pick(attrs, f"{prefix}_nodeids").astype(np.int64)
    w_id = _pick(attrs, f"{prefix}_ids").astype(np.int64)
    w_val = _pick(attrs, f"{prefix}_weights").astype(np.float64)
    if op == "TreeEnsembleClassifier":
        labels = attrs.get("classlabels_int64s") or attrs.get("classlabels_strings") or []
        n_ids = len(labels)
    else:
        n_ids = int(attrs.get("n_targets", 1))
    if w_id.size and (w_id.min() < 0 or w_id.max() >= n_ids):
        raise AnalyzerError(f"{where}: {prefix}_ids reach {int(w_id.max())} but the node has {n_ids} outputs")
    order: dict[int, dict[int, int]] = {}
    trees: list[tuple[list[_Node], int]] = []
    for i in range(n):
        t = int(tree_ids[i])
        if t not in order:
            order[t] = {}
            trees.append(([], t))
        local = order[t]
        if int(node_ids[i]) in local:
            raise AnalyzerError(f"{where}: tree {t} lists node {int(node_ids[i])} twice")
        local[int(node_ids[i])] = len(local)
    by_tree = {t: nodes for nodes, t in trees}
    for i in range(n):
        t = int(tree_ids[i])
        mode = modes[i]
        if mode == "LEAF":
            by_tree[t].append(_Node())
            continue
        if mode not in _LEGACY_MODES:
            raise AnalyzerError(f"{where}: node ({t}, {int(node_ids[i])}) has mode {mode!r}, which TreeSHAP "
                                f"does not know ({sorted(_LEGACY_MODES)} or LEAF)")
        local = order[t]
        try:
            kids = local[int(trues[i])], local[int(falses[i])]
        except KeyError as exc:
            raise AnalyzerError(f"{where}: node ({t}, {int(node_ids[i])}) points to missing node {exc}") from None
        by_tree[t].append(_Node(int(features[i]), float(values[i]), _LEGACY_MODES[mode], bool(missing[i]),
                                None, *kids))
    for j in range(len(w_tree)):
        t, nid = int(w_tree[j]), int(w_node[j])
        if t not in order or nid not in order[t]:
            raise AnalyzerError(f"{where}: weight {j} names node ({t}, {nid}), which does not exist")
        leaf = by_tree[t][order[t][nid]]
        leaf.value[int(w_id[j])] = leaf.value.get(int(w_id[j]), 0.0) + float(w_val[j])
    # onnxruntime starts each tree at its first listed node
    return [(nodes, 0) for nodes, _ in trees], n_ids


def _trees_v5(attrs: Mapping[str, Any], where: str) -> tuple[list[tuple[list[_Node], int]], int]:
    features = _pick(attrs, "nodes_featureids").astype(np.int64)
    splits = np.asarray(attrs.get("nodes_splits", []), dtype=np.float64).reshape(-1)
    modes = np.asarray(attrs.get("nodes_modes", []), dtype=np.int64).reshape(-1)
    trues = _pick(attrs, "nodes_truenodeids").astype(np.int64)
    falses = _pick(attrs, "nodes_falsenodeids").astype(np.int64)
    true_leaf = _pick(attrs, "nodes_trueleafs").astype(bool)
    false_leaf = _pick(attrs, "nodes_falseleafs").astype(bool)
    n = len(features)
    missing = _pick(attrs, "nodes_missing_value_tracks_true", [0] * n).astype(bool)
    missing = np.zeros(n, bool) if missing.size == 0 else missing
    roots = _pick(attrs, "tree_roots").astype(np.int64)
    leaf_ids = _pick(attrs, "leaf_targetids").astype(np.int64)
    leaf_w = np.asarray(attrs.get("leaf_weights", []), dtype=np.float64).reshape(-1)
    n_ids = int(attrs.get("n_targets", 1))
    membership = np.asarray(attrs.get("membership_values", []), dtype=np.float64).reshape(-1)
    sets = np.split(membership, np.flatnonzero(np.isnan(membership)) + 1) if membership.size else []
    sets = [s[~np.isnan(s)] for s in sets]
    member_nodes = np.flatnonzero(modes == _MEMBER)
    if len(sets) < len(member_nodes):
        raise AnalyzerError(f"{where}: {len(member_nodes)} MEMBER nodes but {len(sets)} membership sets")
    member_of = {int(i): sets[k] for k, i in enumerate(member_nodes)}
    for name, arr in (("nodes_splits", splits), ("nodes_modes", modes), ("nodes_truenodeids", trues),
                      ("nodes_falsenodeids", falses), ("nodes_trueleafs", true_leaf), ("nodes_falseleafs", false_leaf),
                      ("nodes_missing_value_tracks_true", missing)):
        if len(arr) != n:
            raise AnalyzerError(f"{where}: attribute {name} has {len(arr)} entries for {n} nodes")
    if len(leaf_ids) != len(leaf_w):
        raise AnalyzerError(f"{where}: {len(leaf_ids)} leaf_targetids for {len(leaf_w)} leaf_weights")
    if leaf_ids.size and (leaf_ids.min() < 0 or leaf_ids.max() >= n_ids):
        raise AnalyzerError(f"{where}: leaf_targetids reach {int(leaf_ids.max())} but n_targets is {n_ids}")
    bad = sorted({int(m) for m in modes} - set(range(7)))
    if bad:
        raise AnalyzerError(f"{where}: nodes_modes has unknown values {bad}")
    # one flat node list: branch nodes first (their indices), then one leaf node per leaf entry
    nodes = [_Node(int(features[i]), float(splits[i]), int(modes[i]), bool(missing[i]), member_of.get(i),
                   int(trues[i]) + (n if true_leaf[i] else 0), int(falses[i]) + (n if false_leaf[i] else 0))
             for i in range(n)]
    nodes += [_Node(value={int(leaf_ids[j]): float(leaf_w[j])}) for j in range(len(leaf_w))]
    for i, node in enumerate(nodes[:n]):
        if not (0 <= node.true < len(nodes) and 0 <= node.false < len(nodes)):
            raise AnalyzerError(f"{where}: node {i} points outside the node or leaf arrays")
    return [(nodes, int(r)) for r in roots], n_ids


def _flatten(trees: Sequence[tuple[list[_Node], int]], n_ids: int, where: str) -> TreeEnsemble:
    """Walk every tree once: number branch nodes globally, enumerate leaves with their path entries."""
    feature, threshold, mode, missing, members = [], [], [], [], {}
    leaf_values, leaf_feats, entries = [], [], []  # entries: (leaf, slot, branch, side)
    for nodes, root in trees:
        branch_of: dict[int, int] = {}
        stack: list[tuple[int, tuple[tuple[int, bool], ...]]] = [(root, ())]
        while stack:
            k, path = stack.pop()
            if len(path) > 4096:
                raise AnalyzerError(f"{where}: a path deeper than 4096 nodes (a cycle?)")
            node = nodes[k]
            if node.mode >= 0:
                if k not in branch_of:
                    branch_of[k] = len(feature)
                    feature.append(node.feature)
                    threshold.append(node.threshold)
                    mode.append(node.mode)
                    missing.append(node.missing_true)
                    if node.members is not None:
                        members[branch_of[k]] = node.members
                b = branch_of[k]
                stack.append((node.false, (*path, (b, False))))
                stack.append((node.true, (*path, (b, True))))
                continue
            leaf = len(leaf_values)
            row = np.zeros(n_ids)
            for i, w in node.value.items():
                row[i] += w
            leaf_values.append(row)
            slots: dict[int, int] = {}
            for b, side in path:
                slot = slots.setdefault(feature[b], len(slots))
                entries.append((leaf, slot, b, side))
            leaf_feats.append(list(slots))
    depth = max((len(f) for f in leaf_feats), default=0)
    feats = np.full((len(leaf_feats), depth), -1, dtype=np.int64)
    for i, f in enumerate(leaf_feats):
        feats[i, :len(f)] = f
    e = np.asarray(entries, dtype=np.int64).reshape(-1, 4)
    group = e[:, 0] * depth + e[:, 1]
    order = np.argsort(group, kind="stable")
    if feature and min(feature) < 0:
        raise AnalyzerError(f"{where}: a branch node has a negative feature id")
    return TreeEnsemble(
        node_name="", op_type="", n_trees=len(trees),
        feature=np.asarray(feature, dtype=np.int64), threshold=np.asarray(threshold, dtype=np.float64),
        mode=np.asarray(mode, dtype=np.int8), missing_true=np.asarray(missing, dtype=bool), members=members,
        values=np.asarray(leaf_values, dtype=np.float64).reshape(-1, n_ids), features=feats,
        entry_branch=e[order, 2], entry_true=e[order, 3].astype(bool), entry_group=group[order],
        out_matrix=np.eye(n_ids), out_offset=np.zeros(n_ids), transform="NONE", post_transform="NONE",
        aggregate="SUM",
    )


def _output_map(ens: TreeEnsemble, op: str, attrs: Mapping[str, Any], n_ids: int, post: str) -> None:
    """Set how per-id sums become the node's output columns, as onnxruntime computes them."""
    base = _pick(attrs, "base_values").astype(np.float64)
    eye, offset = np.eye(n_ids), np.zeros(n_ids)
    if op == "TreeEnsemble":
        ens.out_matrix, ens.out_offset, ens.transform, ens.layout = eye, offset, post, "targets"
        return
    if op == "TreeEnsembleRegressor" or n_ids > 2:
        if n_ids == 1 and base.size == 1 or base.size == n_ids:
            offset = base[:n_ids].copy()
        elif base.size and op == "TreeEnsembleClassifier":
            offset[:base.size] = base[:n_ids]
        ens.out_matrix, ens.out_offset = eye, offset
        ens.transform = post if (n_ids > 1 or post == "PROBIT") else "NONE"
        ens.layout = "targets" if op == "TreeEnsembleRegressor" else "classes"
        return
    # binary classifier: onnxruntime's FinalizeScores for two class labels
    weights = _pick(attrs, "class_weights").astype(np.float64)
    ids = sorted({int(i) for i in _pick(attrs, "class_ids").astype(np.int64)})
    all_positive = bool((weights >= 0).all())
    if len(ids) == 1 and (ids[0] == 0 and base.size in (0, 1)):
        # one score m = s_0 (+ base): columns [1 - m, m] (all weights >= 0) or [-m, m]
        m_off = float(base[0]) if base.size == 1 else 0.0
        if post == "PROBIT":
            ens.out_matrix, ens.out_offset = np.array([[1.0], [0.0]]), np.array([m_off])
            ens.transform, ens.layout = "PROBIT", "binary, one probit score"
            return
        k0 = 1.0 if all_positive else 0.0
        ens.out_matrix = np.array([[-1.0, 1.0], [0.0, 0.0]])
        ens.out_offset = np.array([k0 - m_off, m_off])
        ens.transform = "LOGISTIC" if (not all_positive and post == "LOGISTIC") else "NONE"
        ens.layout = "binary, one score m: columns [1 - m, m]" if all_positive else "binary, one score m: columns [-m, m]"
        return
    if base.size == 2 and 1 in ids:
        # onnxruntime: z1 = base_1 + s_0, z0 = -z1 (class 1's own sums are not used)
        ens.out_matrix = np.array([[-1.0, 1.0], [0.0, 0.0]])
        ens.out_offset = np.array([-base[1], base[1]])
        ens.layout = "binary, two base values: columns [-(b1 + s0), b1 + s0]"
    else:
        offset[:min(base.size, 2)] = base[:2]
        ens.out_matrix, ens.out_offset, ens.layout = eye, offset, "binary as two classes"
    ens.transform = post


# -- Shapley values -----------------------------------------------------------------------------
def _weight_tables(depth: int) -> tuple[np.ndarray, np.ndarray]:
    """Shapley weights of the leaf game: plus[a, b] for a feature of A, minus[a, b] for one of B."""
    plus = np.zeros((depth + 1, depth + 1))
    minus = np.zeros((depth + 1, depth + 1))
    for a in range(depth + 1):
        for b in range(depth + 1 - a):
            total = math.factorial(a + b)
            if a:
                plus[a, b] = math.factorial(a - 1) * math.factorial(b) / total
            if b:
                minus[a, b] = math.factorial(a) * math.factorial(b - 1) / total
    return plus, minus


@dataclass
class Background:
    """A background set read through an ensemble: path matches and per-id sums."""

    matches: np.ndarray  # (M, L, D) bool
    sums: np.ndarray  # (M, C)

    @property
    def size(self) -> int:
        return len(self.sums)


def prepare_background(ens: TreeEnsemble, z: np.ndarray) -> Background:
    """Read background rows ``z`` (the tree node's input) once, for many :func:`interventional_shap` calls."""
    matches = ens.path_matches(np.asarray(z, dtype=np.float64))
    return Background(matches, ens.sums(matches))


def interventional_shap(ens: TreeEnsemble, x: np.ndarray, background: Background,
                        n_features: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Exact interventional Shapley values of the per-id sums.

    ``x``: ``(N, F)`` rows of the tree node's input. Returns ``phi`` ``(N, F, C)``, the sums of
    ``x`` ``(N, C)`` and their background mean ``(C,)``; ``phi.sum(1) + mean == sums`` exactly
    (up to float64 rounding).
    """
    x = np.asarray(x, dtype=np.float64)
    n_features = max(n_features or x.shape[1], ens.n_features)
    px_all = ens.path_matches(x)
    sums = ens.sums(px_all)
    n, (leaves, depth), m = len(x), ens.features.shape, background.size
    phi = np.zeros((n, n_features, ens.values.shape[1]))
    if depth == 0 or m == 0:
        return phi, sums, background.sums.mean(axis=0) if m else np.zeros(ens.values.shape[1])
    plus, minus = _weight_tables(depth)
    plus_flat, minus_flat = np.append(plus.ravel(), 0.0), np.append(minus.ravel(), 0.0)
    pr_all = background.matches
    masks, full = None, (1 << depth) - 1
    if depth <= 62 and hasattr(np, "bitwise_count"):  # numpy >= 2
        bits = np.left_shift(np.int64(1), np.arange(depth, dtype=np.int64))
        masks = ((px_all * bits).sum(axis=2), (pr_all * bits).sum(axis=2))  # (N, L), (M, L)
    rows = max(1, min(n, _BLOCK // max(m, 1)))
    chunk = max(1, _BLOCK // (rows * m))
    for l0 in range(0, leaves, chunk):
        l1 = min(leaves, l0 + chunk)
        feats = ens.features[l0:l1].reshape(-1)
        used = np.flatnonzero(feats >= 0)
        order = used[np.argsort(feats[used], kind="stable")]
        if not order.size:
            continue
        starts = np.flatnonzero(np.r_[True, np.diff(feats[order]) != 0])
        targets = feats[order][starts]
        weights = np.repeat(ens.values[l0:l1], depth, axis=0)[order]  # (Q, C)
        pr = pr_all[:, l0:l1].transpose(1, 0, 2).astype(np.float64)  # (Lc, M, D)
        count_r = pr.sum(axis=2)  # (Lc, M)
        not_pr = 1.0 - pr
        if masks is not None:
            mr = masks[1][:, l0:l1].T[:, None, :]  # (Lc, 1, M)
        for r0 in range(0, n, rows):
            px = px_all[r0:r0 + rows, l0:l1].transpose(1, 0, 2).astype(np.float64)  # (Lc, Nc, D)
            count_x = px.sum(axis=2)  # (Lc, Nc)
            b_x = (depth - count_x).astype(np.int64)[:, :, None]
            if masks is not None:  # path features as bits: one pass of integer ops per pair
                mx = masks[0][r0:r0 + rows, l0:l1].T[:, :, None]  # (Lc, Nc, 1)
                valid = (mx | mr) == full
                key = np.bitwise_count(mx & ~mr).astype(np.int64) * (depth + 1) + b_x
            else:
                both = px @ pr.transpose(0, 2, 1)  # (Lc, Nc, M): features both rows satisfy
                valid = (count_x[:, :, None] + count_r[:, None, :] - both) == depth
                key = (count_x[:, :, None] - both).astype(np.int64) * (depth + 1) + b_x
            key = np.where(valid, key, plus_flat.size - 1)  # the last table entry is 0: unreachable leaf
            c_plus = plus_flat[key]
            c_minus = minus_flat[key].sum(axis=2)  # (Lc, Nc)
            contrib = px * (c_plus @ not_pr) - (1.0 - px) * c_minus[:, :, None]  # (Lc, Nc, D)
            flat = contrib.transpose(1, 0, 2).reshape(px.shape[1], -1)[:, order]  # (Nc, Q)
            phi[r0:r0 + rows, targets] += np.add.reduceat(flat[:, :, None] * weights[None], starts, axis=1)
    phi /= m
    return phi, sums, background.sums.mean(axis=0)


# -- the graph around the node -------------------------------------------------------------------
#: ops that compute each output element from the same element of their one varying input
_ELEMENTWISE = {
    ("", op) for op in ("Identity", "Cast", "CastLike", "Abs", "Neg", "Relu", "Sigmoid", "Tanh", "Exp", "Log",
                        "Sqrt", "Floor", "Ceil", "Round", "Sign", "Reciprocal", "Clip", "Add", "Sub", "Mul", "Div",
                        "Pow", "Max", "Min", "Where")
} | {(ML_DOMAIN, op) for op in ("Scaler", "Imputer", "Binarizer", "Cast")}
#: ops that pick columns of their first input with constant indices
_SELECT = {(ML_DOMAIN, "ArrayFeatureExtractor"), ("", "Gather")}


def _constants(graph: onnx.GraphProto) -> dict[str, np.ndarray]:
    values = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    for n in graph.node:
        if n.op_type == "Constant" and n.domain in ("", "ai.onnx"):
            for a in n.attribute:
                if a.name == "value":
                    values[n.output[0]] = numpy_helper.to_array(a.t)
                elif a.name in ("value_ints", "value_int", "value_floats", "value_float"):
                    values[n.output[0]] = np.asarray(helper.get_attribute_value(a))
    return values


def column_map(model: onnx.ModelProto, tensor: str, input_name: str) -> tuple[np.ndarray | None, str]:
    """Which column of graph input ``input_name`` each column of ``tensor`` is computed from.

    Returns ``(columns, "")`` when ``tensor`` is reached from the input through per-feature elementwise
    ops and constant column selections only (``columns[j]``: the input column of ``tensor``'s
    column j; None for the identity), else ``(None, reason)`` naming the node that mixes columns.
    """
    graph = model.graph
    producer = {o: n for n in graph.node for o in n.output}
    consts = _constants(graph)
    columns: np.ndarray | None = None
    name, steps = tensor, 0
    while name != input_name:
        node = producer.get(name)
        if node is None:
            return None, f"tensor {name!r} does not come from input {input_name!r}"
        key = (node.domain if node.domain != "ai.onnx" else "", node.op_type)
        where = f"{node.op_type} node {node.name!r}"
        varying = [i for i in node.input if i and i not in consts]
        if node.op_type == "Constant" or len(varying) != 1:
            return None, f"{where} combines {len(varying)} varying tensors"
        if key in _ELEMENTWISE:
            if key == ("", "Where") and node.input[0] == varying[0]:
                return None, f"{where} selects by a varying condition"
            if any(consts[i].ndim > 2 for i in node.input if i in consts):
                return None, f"{where} broadcasts a constant of rank > 2"
        elif key in _SELECT and node.input[0] == varying[0]:
            index = consts.get(node.input[1])
            axis = next((a.i for a in node.attribute if a.name == "axis"), 0)
            if index is None or index.ndim != 1 or (key[1] == "Gather" and axis not in (1, -1)):
                return None, f"{where} does not select columns with a constant 1-D index on the last axis"
            index = index.astype(np.int64)
            columns = index if columns is None else index[columns]
        else:
            return None, f"{where} is not a per-feature elementwise op or a column selection"
        name = varying[0]
        steps += 1
        if steps > len(graph.node):
            return None, "the graph has a cycle"
    return columns, ""


def probe_model(model: onnx.ModelProto, outputs: Sequence[str]) -> onnx.ModelProto:
    """The part of ``model`` that computes ``outputs`` (which become its outputs), with the graph
    inputs it reads; the user's model is not changed."""
    graph = model.graph
    producer = {o: n for n in graph.node for o in n.output}
    inits = {t.name for t in graph.initializer}
    keep, seen, todo = set(), set(), list(outputs)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        node = producer.get(name)
        if node is not None and id(node) not in keep:
            keep.add(id(node))
            todo.extend(i for i in node.input if i)
            for a in node.attribute:  # names read by subgraphs (If/Loop bodies)
                if a.type == onnx.AttributeProto.GRAPH:
                    todo.extend(i for sub in a.g.node for i in sub.input if i)
    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False).graph
    typed = {v.name: v for v in [*inferred.value_info, *inferred.input, *inferred.output]}
    outs = []
    for name in outputs:
        value = onnx.ValueInfoProto()
        if name in typed:
            value.CopyFrom(typed[name])
        else:
            value.name = name
        outs.append(value)
    new_graph = helper.make_graph(
        [n for n in graph.node if id(n) in keep], f"{graph.name}_probe",
        [i for i in graph.input if i.name in seen and i.name not in inits], outs,
        [t for t in graph.initializer if t.name in seen],
    )
    probe = helper.make_model(new_graph, opset_imports=list(model.opset_import), ir_version=model.ir_version)
    probe.functions.extend(model.functions)
    return probe


class TreeSHAP(BlackBoxAnalyzer):
    """Exact interventional TreeSHAP of a file whose output comes from an ``ai.onnx.ml`` tree ensemble.

    ``background``: rows of the analyzed input (``(M, F)``) the features are replaced with; the
    expected value is the mean margin over them. Attributions are for the node's raw margin before
    its post_transform (log-odds for LOGISTIC, per-class scores for SOFTMAX, the averaged leaf
    probabilities of a random forest), one column per output column of the node: the output
    selection picks the class. ``val.sum(1) + extras["expected_value"] == extras["margin"]`` up to
    float64 rounding. Interventional only: ONNX trees carry no node covers, so the path-dependent
    variant cannot be recovered from the file (see the module docstring). Construction reads the
    trees, runs the graph before the node on the background, and checks that the trees as read
    reproduce onnxruntime's output of the node.
    """

    def __init__(
        self,
        model: Any,
        background: Any,
        *,
        input_name: str | None = None,
        output_name: str | None = None,
        batch_size: int | None = None,
    ) -> None:
        super().__init__(model, input_name=input_name, output_name=output_name, batch_size=batch_size)
        rt: RuntimeModel = self.runtime
        onnx_model = rt.onnx_model
        node = tree_node(onnx_model, rt.source)
        self.node = node
        self.ensemble = read_tree_ensemble(node, rt.source)
        self.tree_input = node.input[0]
        self.score_output = node.output[1] if node.op_type == "TreeEnsembleClassifier" else node.output[0]
        where = f"{rt.source}: {node.op_type} node {node.name!r}"
        columns, reason = column_map(onnx_model, self.tree_input, self.input_name)
        if reason:
            raise AnalyzerError(
                f"{where}: its input {self.tree_input!r} is not computed column by column from input "
                f"{self.input_name!r} ({reason}), so attributions to the tree's features do not map to input "
                "columns; onnxxai.blackbox.treeshap.tree_shap_values explains the tree input's features, "
                "KernelSHAP the input's columns")
        self.columns = columns
        probe = probe_model(onnx_model, [self.tree_input, self.score_output] if self.tree_input != self.input_name
                            else [self.score_output])
        extra = [i.name for i in probe.graph.input if i.name != self.input_name]
        if extra:
            raise AnalyzerError(f"{where}: the graph before the node reads inputs {extra} besides {self.input_name!r}; "
                                "TreeSHAP attributes to one input")
        try:
            self._probe = onnxruntime_session(probe, rt.provider)
        except Exception as exc:  # noqa: BLE001 - onnxruntime's errors have no common base
            raise AnalyzerError(f"{where}: onnxruntime cannot run the graph before the node alone: {exc}") from exc
        bg = rt.as_array(self.input_name, background)
        if bg.ndim != 2 or len(bg) == 0:
            raise AnalyzerError(f"{where}: background must be a non-empty (rows, columns) array, got shape {bg.shape}")
        z_bg, _ = self._tree_input(bg, "background")
        self.background = prepare_background(self.ensemble, z_bg)
        self.background_rows = len(bg)

    def parameters(self) -> dict[str, Any]:
        return {"background": self.background_rows, "node": self.node.name, "op": self.node.op_type,
                "post_transform": self.ensemble.post_transform, "feature_perturbation": "interventional"}

    def _tree_input(self, x: np.ndarray, what: str) -> tuple[np.ndarray, float | None]:
        """The tree node's input for rows ``x`` (float64), checking the trees as read against the
        node's output in onnxruntime; returns it and the largest difference found."""
        ens, parts, scores = self.ensemble, [], []
        step = max(1, 2**16)
        names = [o.name for o in self._probe.get_outputs()]
        for lo in range(0, len(x), step):
            out = self._probe.run(names, {self.input_name: x[lo:lo + step]})
            self.runtime.calls += 1
            parts.append(out[0] if len(out) == 2 else x[lo:lo + step])
            scores.append(out[-1])
        z = np.concatenate(parts).astype(np.float64).reshape(len(x), -1)
        node_out = np.concatenate(scores).astype(np.float64).reshape(len(x), -1)
        if z.shape[1] < ens.n_features:
            raise AnalyzerError(f"{self.runtime.source}: tree node {self.node.name!r} reads feature "
                                f"{ens.n_features - 1} but its input has {z.shape[1]} columns")
        ours = ens.apply_transform(ens.margins(ens.sums(ens.path_matches(z))))
        if ours is None:
            return z, None
        error = float(np.abs(ours - node_out).max()) if ours.shape == node_out.shape else math.inf
        scale = 1.0 + float(np.abs(node_out).max(initial=0.0))
        if not error <= 1e-4 * scale:
            raise AnalyzerError(
                f"{self.runtime.source}: the trees of {self.node.op_type} node {self.node.name!r} as read "
                f"(layout: {ens.layout}, post_transform {ens.post_transform}) do not reproduce onnxruntime's "
                f"output on the {what} (largest difference {error:.3g}, shapes {ours.shape} vs {node_out.shape}); "
                "TreeSHAP cannot explain this node, use KernelSHAP")
        return z, error

    def attribute(self, x: np.ndarray, target: np.ndarray, output: np.ndarray) -> tuple[np.ndarray, dict[str, Any]]:
        ens = self.ensemble
        n_cols = ens.out_matrix.shape[1]
        if output.reshape(len(x), -1).shape[1] != n_cols:
            raise AnalyzerError(
                f"{self.runtime.source}: output {self.output_name!r} has {output.reshape(len(x), -1).shape[1]} values "
                f"per sample but tree node {self.node.name!r} has {n_cols} output columns; choose the node's "
                "score output with output_name=")
        z, error = self._tree_input(x, "input")
        phi, sums, mean = interventional_shap(ens, z, self.background, z.shape[1])
        rows = np.arange(len(x))
        phi_sel = np.einsum("nfc,nc->nf", phi, ens.out_matrix[:, target].T)  # (N, F_tree)
        margins = ens.margins(sums)
        expected = ens.margins(mean[None])[0]
        if self.columns is None:
            val = np.zeros(x.shape, dtype=np.float64)
            val[:, :phi_sel.shape[1]] = phi_sel
        else:
            val = np.zeros(x.shape, dtype=np.float64)
            val[:, self.columns] = phi_sel[:, :len(self.columns)]
        extras = {"expected_value": expected[target], "margin": margins[rows, target],
                  "expected_values": expected, "margins": margins, "tree_node": self.node.name,
                  "post_transform": ens.post_transform, "layout": ens.layout, "node_output_error": error}
        return val, extras


def tree_shap_values(model: Any, x: Any, background: Any, *, input_name: str | None = None) -> dict[str, np.ndarray]:
    """Interventional TreeSHAP of the tree node's OWN input features, for any graph before the node
    (one-hot encoders, several inputs concatenated, ...). ``x`` and ``background``: arrays for the
    single input, or dicts of arrays for every input the graph before the node reads. Returns
    ``phi`` ``(N, F_tree, columns)``, ``expected_value`` ``(columns,)``, ``margin`` ``(N, columns)``
    and ``tree_input`` ``(N, F_tree)``."""
    rt = load_runtime(model) if isinstance(model, onnx.ModelProto) else as_runtime(model)
    node = tree_node(rt.onnx_model, rt.source)
    ens = read_tree_ensemble(node, rt.source)
    graph_inputs = [s.name for s in rt.inputs]
    if node.input[0] in graph_inputs:
        session, needed = None, [node.input[0]]
    else:
        probe = probe_model(rt.onnx_model, [node.input[0]])
        session, needed = onnxruntime_session(probe, rt.provider), [i.name for i in probe.graph.input]

    def tree_in(value: Any) -> np.ndarray:
        feeds = dict(value) if isinstance(value, Mapping) else {input_name or needed[0]: value}
        if set(feeds) != set(needed) and node.input[0] not in feeds:
            raise AnalyzerError(f"{rt.source}: the graph before tree node {node.name!r} reads inputs {needed}, "
                                f"got {sorted(feeds)}")
        if node.input[0] in feeds or session is None:
            return np.asarray(feeds[node.input[0]], dtype=np.float64)
        feeds = {k: rt.as_array(k, v) for k, v in feeds.items()}
        rt.calls += 1
        return np.asarray(session.run(None, feeds)[0], dtype=np.float64).reshape(len(next(iter(feeds.values()))), -1)

    z_bg = tree_in(background)
    z = tree_in(x)
    phi, sums, mean = interventional_shap(ens, z, prepare_background(ens, z_bg), z.shape[1])
    return {"phi": np.einsum("nfc,ck->nfk", phi, ens.out_matrix), "expected_value": ens.margins(mean[None])[0],
            "margin": ens.margins(sums), "tree_input": z}
