"""Layer-wise Relevance Propagation on converted ONNX graphs.

One idea per file: ``rules`` (how relevance crosses one node), ``composites`` (which rule each node
gets, by ONNX op type or node name), ``canonize`` (ONNX rewrites before conversion: BatchNorm
folding), ``nodes`` (module -> ONNX node, relevance path), ``apply`` (rules applied to a copy of
the graph inside a ``with`` block), ``analyzer`` (the ``LRP`` analyzer and its model check),
``quantized`` (integer ops as their float ops on dequantized values), ``fused`` (onnxruntime's fused
layers as the float layer followed by its activation).
"""

from onnxxai.analyzers.lrp.analyzer import LRP, LRPModelError, NodeProblem
from onnxxai.analyzers.lrp.apply import rules_applied
from onnxxai.analyzers.lrp.canonize import canonize, fold_batchnorm
from onnxxai.analyzers.lrp.composites import (
    Composite,
    EpsilonAlpha2Beta1,
    EpsilonAlpha2Beta1Flat,
    EpsilonGammaBox,
    EpsilonPlus,
    EpsilonPlusFlat,
    base_rules,
)
from onnxxai.analyzers.lrp.ops import LINEAR_OPS
from onnxxai.analyzers.lrp.rules import (
    AlphaBeta,
    BasicRule,
    Epsilon,
    Flat,
    Gamma,
    Pass,
    Rule,
    Term,
    WSquare,
    ZBox,
    Zero,
    ZPlus,
)

__all__ = [
    "LRP", "LRPModelError", "NodeProblem", "rules_applied", "canonize", "fold_batchnorm",
    "Composite", "base_rules", "LINEAR_OPS", "EpsilonPlus", "EpsilonPlusFlat", "EpsilonAlpha2Beta1", "EpsilonAlpha2Beta1Flat",
    "EpsilonGammaBox", "Rule", "BasicRule", "Term", "Pass", "Zero", "Epsilon", "Gamma", "WSquare", "Flat",
    "AlphaBeta", "ZPlus", "ZBox",
]
