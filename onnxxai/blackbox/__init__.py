"""Black-box methods: explanations from the original file run by onnxruntime alone (no torch).

``base`` (BlackBoxAnalyzer: inputs, outputs, chunked evaluation, Explanation), ``masks`` (feature
masks and baselines), then one module per method family: ``ablation`` (FeatureAblation,
Occlusion), ``rise`` (RISE), ``surrogate`` (KernelSHAP, LIME), ``treeshap`` (TreeSHAP of ONNX tree
ensembles). :func:`onnxxai.analyze` dispatches here for these analyzers.
"""

from onnxxai.blackbox.ablation import FeatureAblation, Occlusion
from onnxxai.blackbox.base import BlackBoxAnalyzer, analyze_blackbox, as_runtime
from onnxxai.blackbox.masks import column_mask, default_mask, grid_mask, slic_mask
from onnxxai.blackbox.rise import RISE
from onnxxai.blackbox.surrogate import LIME, KernelSHAP
from onnxxai.blackbox.treeshap import TreeSHAP, tree_shap_values

__all__ = [
    "BlackBoxAnalyzer", "analyze_blackbox", "as_runtime",
    "FeatureAblation", "Occlusion", "RISE", "KernelSHAP", "LIME", "TreeSHAP", "tree_shap_values",
    "grid_mask", "slic_mask", "column_mask", "default_mask",
]
