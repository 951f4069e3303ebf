"""The method table: each attribution method the CLI and the scripts offer, by name.

A :class:`Method` has a description and builds its analyzer from a model and a few
:class:`MethodOptions` (batch size, samples, seed); callers only look names up with :func:`method`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from dataclasses import dataclass

from onnxxai.analyzers import LRP, GradCAM, Gradient, InputTimesGradient, IntegratedGradients, SmoothGrad
from onnxxai.analyzers.core import Analyzer
from onnxxai.blackbox import LIME, RISE, FeatureAblation, KernelSHAP, Occlusion, TreeSHAP, as_runtime
from onnxxai.errors import InputError
from onnxxai.model import Model
from onnxxai.proto.layout import image_layout

__all__ = ["METHODS", "Method", "MethodOptions", "method", "methods", "DEFAULT_SAMPLES"]

#: noisy copies (SmoothGrad) or path steps (Integrated Gradients) when no number is given
DEFAULT_SAMPLES = 50


@dataclass(frozen=True)
class MethodOptions:
    """What a caller may set on any method: ``batch_size`` rows per forward/backward (None: the
    method's default), ``samples`` for sampled methods (None: :data:`DEFAULT_SAMPLES`), ``seed`` of
    SmoothGrad's noise, ``background`` rows of the analyzed input (TreeSHAP's reference set), ``target``
    of the gradient methods."""

    batch_size: int | None = None
    samples: int | None = None
    seed: int = 0
    background: Any = None
    #: where gradient methods attribute (an :class:`onnxxai.Target`: input name, fixed inputs such as an
    #: attention mask); None: the model's single analyzed input
    target: Any = None

    @property
    def n(self) -> int:
        return self.samples or DEFAULT_SAMPLES


@dataclass(frozen=True)
class Method:
    """One named method: a description and ``build(model, options)`` returning its analyzer.
    ``sampled`` methods run ``options.n`` augmented copies of every input; ``seeded`` methods draw
    random numbers from ``options.seed`` (dataset runs give each input its own seed)."""

    description: str
    build: Callable[[Model, MethodOptions], Analyzer]
    sampled: bool = False
    seeded: bool = False
    #: needs only onnxruntime: ``build`` takes an :class:`onnxxai.runtime.RuntimeModel` (or a Model)
    blackbox: bool = False

    def samples_per_input(self, options: MethodOptions) -> int:
        """Forward/backward rows one input costs (for progress displays)."""
        return options.n if self.sampled else 1


METHODS: dict[str, Method] = {
    "gradient": Method("Gradient (sensitivity)", lambda m, o: Gradient(m, target=o.target, batch_size=o.batch_size)),
    "input-x-gradient": Method("Input×Gradient", lambda m, o: InputTimesGradient(m, target=o.target, batch_size=o.batch_size)),
    "smoothgrad": Method(f"SmoothGrad, --samples noisy copies (default {DEFAULT_SAMPLES})",
                         lambda m, o: SmoothGrad(m, n=o.n, generator=o.seed, target=o.target, batch_size=o.batch_size), sampled=True,
                         seeded=True),
    "integrated-gradients": Method(f"Integrated Gradients, --samples steps (default {DEFAULT_SAMPLES}), zero baseline",
                                   lambda m, o: IntegratedGradients(m, n=o.n, target=o.target, batch_size=o.batch_size), sampled=True),
    "gradcam": Method("GradCAM", lambda m, o: GradCAM(m, target=o.target, batch_size=o.batch_size)),
    "lrp": Method("LRP, EpsilonPlusFlat composite", lambda m, o: LRP(m, target=o.target, batch_size=o.batch_size)),
    "occlusion": Method("Occlusion (onnxruntime only), windows of 1/8 of the image side, stride half a window, "
                        "zero baseline; one column at a time for tables", lambda m, o: _occlusion(m, o), blackbox=True),
    "feature-ablation": Method("Feature ablation (onnxruntime only): 8x8 image grid, or each column / token, to zero",
                               lambda m, o: FeatureAblation(m, batch_size=o.batch_size), blackbox=True),
    "rise": Method("RISE (onnxruntime only), --samples masks (default 4000)",
                   lambda m, o: RISE(m, n=o.samples or 4000, seed=o.seed, batch_size=o.batch_size), blackbox=True,
                   seeded=True),
    "kernelshap": Method("KernelSHAP (onnxruntime only), --samples coalitions (default 2M+2048), zero baseline",
                         lambda m, o: KernelSHAP(m, n=o.samples, seed=o.seed, batch_size=o.batch_size), blackbox=True,
                         seeded=True),
    "lime": Method("LIME (onnxruntime only), --samples coalitions (default 1000)",
                   lambda m, o: LIME(m, n=o.samples, seed=o.seed, batch_size=o.batch_size), blackbox=True, seeded=True),
    "treeshap": Method("TreeSHAP (onnxruntime only): exact interventional SHAP of an ai.onnx.ml tree ensemble's raw "
                       "margin against background rows (the CLI: the CSV's rows)", lambda m, o: _treeshap(m, o),
                       blackbox=True),
}


def _treeshap(model: Any, options: MethodOptions) -> TreeSHAP:
    """TreeSHAP against ``options.background`` (rows of the analyzed input)."""
    if options.background is None:
        raise InputError("method treeshap needs background rows (MethodOptions.background; the CLI passes the "
                         "rows of its CSV file)")
    return TreeSHAP(model, options.background, batch_size=options.batch_size)


def _occlusion(model: Any, options: MethodOptions) -> Occlusion:
    """Occlusion with windows of an eighth of an image's side (stride half a window), else one element."""
    spec = as_runtime(model).input_spec()
    found = image_layout(spec.shape) if len(spec.shape) == 4 else None
    if found is not None and found.size is not None:
        window = max(1, -(-min(found.size) // 8))
        return Occlusion(model, window, max(1, window // 2), batch_size=options.batch_size)
    return Occlusion(model, 1, 1, batch_size=options.batch_size)


def methods(spec: str) -> list[str]:
    """Method names from ``"a,b,c"`` or ``"all"`` (every method in the table), each checked."""
    if spec.strip() == "all":
        return list(METHODS)
    names = [n.strip() for n in spec.split(",") if n.strip()]
    if not names:
        raise InputError(f"no method named in {spec!r}; choose from {', '.join(METHODS)} or all")
    for name in names:
        method(name)
    return list(dict.fromkeys(names))


def method(name: str) -> Method:
    """The method called ``name``; an unknown name raises :class:`InputError` listing the names."""
    found = METHODS.get(name)
    if found is None:
        raise InputError(f"unknown method {name!r}; choose one of {', '.join(METHODS)}")
    return found
