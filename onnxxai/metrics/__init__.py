"""Metrics of explanations: faithfulness, robustness, randomisation (sanity) tests, deployment shift.

Every metric is a function returning a :class:`MetricResult` (or a dict of them, one per similarity)
with its direction (``higher_is_better``), per-sample values, their mean, an optional curve, the
parameters that produced it and ``to_dict()`` for JSON. Model evaluations run the ORIGINAL file through
onnxruntime (:class:`onnxxai.runtime.RuntimeModel`, batched); metrics that need new explanations
(max-sensitivity, randomisation) call the analyzers. :data:`METRICS` lists them with direction and
what they take, for reports and command lines.

========================== ========= ========================================================
metric                     direction takes
========================== ========= ========================================================
deletion                   ↓         model, explanation
insertion                  ↑         model, explanation
road (order="morf")        ↓         model, explanation
road (order="lerf")        ↑         model, explanation
faithfulness_correlation   ↑         model, explanation
infidelity                 ↓         model, explanation
max_sensitivity            ↓         analyzer, explanation
random_logit               ↓         analyzer, explanation          (dict: ssim, spearman)
model_parameter_randomisation ↓      model, explanation, method     (dict: spearman, ssim)
deployment_shift           ↑         model, reference model, inputs, methods
========================== ========= ========================================================
"""

from __future__ import annotations

from dataclasses import dataclass

from onnxxai.metrics._common import Scorer, explanation_of, random_explanation
from onnxxai.metrics.deployment import DeploymentShift, deployment_shift
from onnxxai.metrics.faithfulness import (
    DEFAULT_STEPS, ROAD_PERCENTAGES, blur, deletion, faithfulness_correlation, infidelity, insertion,
    noisy_linear_imputation, road,
)
from onnxxai.metrics.randomisation import (
    ParameterisedNode, build_analyzer, model_parameter_randomisation, parameterised_nodes, randomise, random_logit,
)
from onnxxai.metrics.result import Curve, MetricResult
from onnxxai.metrics.robustness import max_sensitivity
from onnxxai.metrics.similarity import SIMILARITIES, compare, constant_maps, spearman, ssim, top_k_iou

__all__ = [
    "MetricResult", "Curve", "MetricInfo", "METRICS", "Scorer", "explanation_of", "random_explanation",
    "deletion", "insertion", "road", "faithfulness_correlation", "infidelity", "max_sensitivity",
    "model_parameter_randomisation", "random_logit", "parameterised_nodes", "randomise", "ParameterisedNode",
    "build_analyzer", "deployment_shift", "DeploymentShift", "spearman", "ssim", "top_k_iou", "compare", "constant_maps",
    "SIMILARITIES", "blur", "noisy_linear_imputation", "DEFAULT_STEPS", "ROAD_PERCENTAGES",
]


@dataclass(frozen=True)
class MetricInfo:
    """One row of :data:`METRICS`: what the metric measures, its direction, what it is called with
    (``"explanation"``: ``f(model, explanation)``; ``"analyzer"``: ``f(analyzer, explanation)``;
    ``"method"``: ``f(model, explanation, method)``) and its reference."""

    description: str
    higher_is_better: bool
    takes: str
    reference: str


METRICS: dict[str, MetricInfo] = {
    "deletion": MetricInfo("AUC of the score as the most relevant features are deleted", False, "explanation",
                           "Petsiuk et al. 2018"),
    "insertion": MetricInfo("AUC of the score as the most relevant features are inserted into a blurred copy", True,
                            "explanation", "Petsiuk et al. 2018"),
    "road_morf": MetricInfo("accuracy after imputing the most relevant pixels", False, "explanation",
                            "Rong et al. 2022"),
    "road_lerf": MetricInfo("accuracy after imputing the least relevant pixels", True, "explanation", "Rong et al. 2022"),
    "faithfulness_correlation": MetricInfo("correlation of subset attribution and score drop", True, "explanation",
                                           "Bhatt et al. 2020"),
    "infidelity": MetricInfo("error of attribution·perturbation against the score change (Captum-normalized)", False,
                             "explanation", "Yeh et al. 2019"),
    "max_sensitivity": MetricInfo("largest relative change of the explanation under small input noise", False,
                                  "analyzer", "Yeh et al. 2019"),
    "random_logit": MetricInfo("similarity to the explanation of a random other class", False, "analyzer",
                               "Sixt et al. 2020"),
    "mprt_cascading": MetricInfo("similarity after randomising every layer from the top down", False, "method",
                                 "Adebayo et al. 2018"),
    "mprt_independent": MetricInfo("mean similarity after randomising one layer at a time", False, "method",
                                   "Adebayo et al. 2018"),
}
