"""The differentiable function ``rows -> output`` that gradient methods explain, built from a Target."""

from __future__ import annotations

import contextlib
from typing import Any

import torch

from onnxxai.analyzers.tap import Tap, choose_tensor
from onnxxai.analyzers.target import Execution, Target
from onnxxai.errors import AnalyzerError, InputError, NotDifferentiableError
from onnxxai.model import Model

__all__ = ["ModelFunction", "select", "no_gradient_message"]

#: the methods that need only onnxruntime, named when a gradient method gets a model without a torch graph
BLACKBOX_METHODS = ("Occlusion", "FeatureAblation", "RISE", "KernelSHAP", "LIME", "TreeSHAP")


def no_gradient_message(model: Any) -> str:
    """Why a gradient method cannot run on ``model`` (not a converted :class:`Model`), naming the
    black-box methods that can, and the conversion error a runtime-only model keeps."""
    methods = ", ".join(BLACKBOX_METHODS)
    source = getattr(model, "source", None)
    if source is not None and hasattr(model, "batch_mode"):  # an onnxxai.RuntimeModel
        cause = getattr(model, "conversion_error", None)
        why = f"it did not convert to torch ({cause})" if cause else "it is run by onnxruntime alone (onnxxai.load_runtime)"
        return (f"{source}: gradient methods need a differentiable torch graph, and {why}; "
                f"explain it with a black-box method: {methods}")
    return f"expected an onnxxai.Model (from onnxxai.load), got {type(model).__name__}; black-box methods ({methods}) also take an onnxxai.RuntimeModel"


class ModelFunction:
    """The differentiable function ``rows -> output`` that gradient methods explain.

    Built from a :class:`Target` (which input, which output, fixed inputs, where to attribute) and
    an :class:`Execution` (precision, compile). It feeds ``rows`` (a batch of the analyzed input,
    possibly augmented) to input ``input_name`` and the user's ``fixed_inputs`` to the others; ``sample_index`` maps each row to the sample
    of the original batch whose fixed inputs it uses. It returns output ``output_name`` (by default
    the first float output).

    An integer input (token ids, bytes) is attributed at the first float tensor computed from it
    (the embedding lookup; :mod:`onnxxai.analyzers.tap`), or at ``attribute_at`` when given: the
    rows are then values of that tensor, and the input itself is bound per analysis with
    :meth:`bound`. ``attribute_at`` also works for a float input (layer attribution).
    ``integer_inputs=False`` refuses integer inputs instead (methods that need the input itself).
    """

    def __init__(
        self,
        model: Model,
        target: Target | None = None,
        execution: Execution | None = None,
        *,
        integer_inputs: bool = True,
    ) -> None:
        target = Target() if target is None else target
        execution = Execution() if execution is None else execution
        self.precision = execution.precision
        self.compile = execution.compile
        self._compiled: Any = None
        if not isinstance(model, Model):
            raise AnalyzerError(no_gradient_message(model))
        self.model = model
        self.input_name = _input_name(model, target.input_name, integer_inputs)
        spec = model.input_spec(self.input_name)
        if not spec.is_float and not integer_inputs:
            raise InputError(f"{model.source}: input {self.input_name!r} is {spec.dtype}; this method needs a float input")
        attribute_at = target.attribute_at
        self.tap: Tap | None = None
        if not spec.is_float or attribute_at is not None:
            self.tap = Tap(model, choose_tensor(model, self.input_name, attribute_at) if not spec.is_float else attribute_at)
        self._bound: torch.Tensor | None = None
        names = [o.name for o in model.outputs]
        output_name = target.output_name
        if output_name is None:  # the first float output: classifiers may put an integer label first
            floats = [o.name for o in model.outputs if o.is_float]
            if not floats:
                raise AnalyzerError(f"{model.source}: no float output to explain; outputs are {[str(o) for o in model.outputs]}")
            output_name = floats[0]
        if output_name not in names:
            raise AnalyzerError(f"{model.source}: no output named {output_name!r}; outputs are {names}")
        self.output_name = output_name
        self.output_index = names.index(output_name)
        _refuse_piecewise_constant(model, self.input_name, output_name, self.output_index)
        fixed_inputs = dict(target.fixed_inputs or {})
        others = [s.name for s in model.inputs if s.name != self.input_name]
        unknown = sorted(set(fixed_inputs) - set(others))
        if unknown:
            raise InputError(f"{model.source}: fixed_inputs names unknown input(s) {unknown}; other inputs are {others}")
        missing = [n for n in others if n not in fixed_inputs]
        if missing:
            raise InputError(
                f"{model.source}: inputs {missing} need values: pass fixed_inputs={{name: array}} "
                f"(attributing to {self.input_name!r})"
            )
        self.fixed = {n: model.as_tensor(n, v) for n, v in fixed_inputs.items()}

    def __call__(self, rows: torch.Tensor, sample_index: torch.Tensor) -> torch.Tensor:
        args = self._args(rows, sample_index)
        with self.numerics(rows.device):
            out = self.model.call(self._module(), args)
        out = out[self.output_index] if isinstance(out, (tuple, list)) else out
        return out.to(rows.dtype) if out.dtype != rows.dtype and out.is_floating_point() else out

    def _args(self, rows: torch.Tensor, sample_index: torch.Tensor) -> list[torch.Tensor]:
        """The graph's arguments for ``rows``: the inputs in order, then the tap value if any."""
        if self.tap is None:
            feeds = self.feeds(self.input_name, rows, sample_index)
            return [feeds[s.name] for s in self.model.inputs]
        if self._bound is None:
            raise AnalyzerError(f"attributing at {self.tap.tensor!r}: bind the input with ModelFunction.bound(x)")
        feeds = self.feeds(self.input_name, self._bound.index_select(0, sample_index), sample_index)
        return [feeds[s.name] for s in self.model.inputs] + [rows]

    def feeds(self, name: str, value: torch.Tensor, sample_index: torch.Tensor) -> dict[str, torch.Tensor]:
        """``value`` for input ``name`` and the fixed inputs of the samples ``sample_index``."""
        feeds = {name: value}
        for fixed_name, fixed in self.fixed.items():
            if fixed.shape[0] == 1:
                feeds[fixed_name] = fixed.expand(value.shape[0], *fixed.shape[1:])
            else:
                if int(sample_index.max()) >= fixed.shape[0]:
                    raise InputError(
                        f"fixed input {fixed_name!r} has batch {fixed.shape[0]}, fewer than the analyzed batch; "
                        "give it batch 1 or the same batch"
                    )
                feeds[fixed_name] = fixed.index_select(0, sample_index)
        return feeds

    def _module(self):
        module = self.model.torch_module if self.tap is None else self.tap.substitute
        if not self.compile:
            return module
        if self._compiled is None:
            self._compiled = torch.compile(module, dynamic=True)
        return self._compiled

    @contextlib.contextmanager
    def bound(self, x: torch.Tensor):
        """Bind the analyzed input batch ``x`` while attributing at the tap tensor; yields the tap
        tensor's values on ``x`` (the rows the analyzers start from)."""
        try:
            self._bound = x
            yield self.embed(x)
        finally:
            self._bound = None

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """The tap tensor's values when the analyzed input is ``x`` (other inputs as fixed)."""
        if self.tap is None:
            raise AnalyzerError("embed() needs attribution at a tensor (integer input or attribute_at)")
        feeds = self.feeds(self.input_name, x, torch.arange(x.shape[0], device=x.device))
        with torch.no_grad():
            return self.model.call(self.tap.embed, [feeds[s.name] for s in self.model.inputs]).detach()

    @contextlib.contextmanager
    def numerics(self, device: torch.device):
        """float32 (no TF32 anywhere), tf32 (TF32 matmuls and convolutions) or bf16 (autocast); the
        global flags touched are restored on exit."""
        matmul = torch.backends.cuda.matmul.allow_tf32
        try:
            torch.backends.cuda.matmul.allow_tf32 = self.precision == "tf32"
            with torch.backends.cudnn.flags(enabled=torch.backends.cudnn.enabled, allow_tf32=self.precision == "tf32"):
                if self.precision == "bf16":
                    with torch.autocast(device_type=device.type, dtype=torch.bfloat16):
                        yield
                else:
                    yield
        finally:
            torch.backends.cuda.matmul.allow_tf32 = matmul

    def output(self, x: torch.Tensor) -> torch.Tensor:
        """The output on a clean batch, without autograd."""
        with torch.no_grad():
            return self(x, torch.arange(x.shape[0], device=x.device))


#: The black-box methods a piecewise-constant model is explained with (they run the file in onnxruntime).
BLACK_BOX = "KernelSHAP, TreeSHAP, Occlusion, FeatureAblation, LIME, RISE"


def _refuse_piecewise_constant(model: Model, input_name: str, output_name: str, output_index: int) -> None:
    """Raise NotDifferentiableError when output ``output_index`` depends on input ``input_name`` only
    through modules that declare themselves piecewise constant (``piecewise_constant``: tree ensembles,
    Binarizer, OneHotEncoder, LabelEncoder, one-class SVM; :class:`onnxxai.convert.ml.PiecewiseConstant`).
    Every gradient analyzer (Gradient and its augmentations, GradCAM, LRP) builds a ModelFunction,
    so each refuses such a graph before computing an all-zero attribution."""
    module = model.torch_module
    graph = module.graph
    placeholders = [n for n in graph.nodes if n.op == "placeholder"]
    names = [s.name for s in model.inputs]
    if input_name not in names or len(placeholders) < len(names):
        return

    def piecewise(n: torch.fx.Node) -> bool:
        return n.op == "call_module" and bool(getattr(module.get_submodule(n.target), "piecewise_constant", False))

    start = placeholders[names.index(input_name)]
    smooth = {start}  # reached from the input along paths free of piecewise-constant modules
    for n in graph.nodes:
        if not piecewise(n) and any(i in smooth for i in n.all_input_nodes):
            smooth.add(n)
    out = next(n for n in graph.nodes if n.op == "output").args[0]
    out = out[output_index] if isinstance(out, (tuple, list)) else out
    if not isinstance(out, torch.fx.Node) or out in smooth:
        return  # a smooth path exists (e.g. numeric columns beside a one-hot encoded one): gradients mean something
    upstream, stack = set(), [out]
    while stack:
        n = stack.pop()
        if n not in upstream:
            upstream.add(n)
            stack.extend(n.all_input_nodes)
    for n in graph.nodes:
        if not (piecewise(n) and n in upstream and any(i in smooth for i in n.all_input_nodes)):
            continue
        sub = module.get_submodule(n.target)
        if getattr(sub, "piecewise_constant", False):
            op = getattr(sub, "op_type", "") or type(sub).__name__
            onnx_name = str(n.target).split("/", 1)[-1]
            raise NotDifferentiableError(
                f"{model.source}: output {output_name!r} depends on input {input_name!r} through {op} node {onnx_name!r} "
                "(piecewise constant: its gradient is zero almost everywhere), so gradient methods (Gradient, "
                "SmoothGrad, IntegratedGradients, GradCAM, LRP) cannot explain it; use a black-box method: "
                f"{BLACK_BOX} (they run the file in onnxruntime)"
            )


def _input_name(model: Model, name: str | None, integer_inputs: bool) -> str:
    """``name``, or the single float input, or (when integer inputs are allowed and the model has
    no float input) the single input."""
    if name is not None or not integer_inputs or any(s.is_float for s in model.inputs) or len(model.inputs) != 1:
        return model.input_spec(name).name
    return model.inputs[0].name


def select(output: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Each row's selected output value: ``output.reshape(R, -1)[r, index[r]]``."""
    return output.reshape(output.shape[0], -1).gather(1, index.view(-1, 1)).squeeze(1)
