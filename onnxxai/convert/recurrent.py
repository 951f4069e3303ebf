"""RNN, GRU and LSTM as torch modules following the ONNX equations.

onnx2torch has no converter for the recurrent ops. These modules take W, R, B, sequence_lens and
the initial states as forward inputs (so weights may be initializers or run-time tensors), project
the inputs of every time step and direction in one matmul, and loop over time steps only. Both
directions of a bidirectional op advance together (a batched matmul over the direction axis).

``sequence_lens`` follows onnxruntime: a sequence of length L is read from step 0 to L-1 (reverse
direction: from L-1 down to 0), Y is zero at steps >= L, Y_h / Y_c are the states after its last
valid step, and a sequence of length 0 gives zero states.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from onnx2torch.onnx_graph import OnnxGraph
from onnx2torch.onnx_node import OnnxNode
from onnx2torch.utils.common import OnnxMapping, OperationConverterResult

from onnxxai.convert.registry import register, since

__all__ = ["OnnxRNN", "OnnxGRU", "OnnxLSTM", "activation"]

# Activations the ONNX spec lists for the recurrent ops, with the alpha/beta each one takes and its
# default, which the spec says is the default of the ONNX operator of the same name (None: that
# operator has none). onnxruntime 1.32 differs for Affine and ThresholdedRelu, whose omitted alpha it
# reads as 0 (Affine then gives 0, ThresholdedRelu becomes Relu): we follow the spec.
_ALPHA_DEFAULT = {"affine": 1.0, "leakyrelu": 0.01, "thresholdedrelu": 1.0, "scaledtanh": None, "hardsigmoid": 0.2, "elu": 1.0}
_BETA_DEFAULT = {"affine": 0.0, "scaledtanh": None, "hardsigmoid": 0.5}
_ACTIVATIONS = {"relu", "tanh", "sigmoid", "affine", "leakyrelu", "thresholdedrelu", "scaledtanh", "hardsigmoid", "elu",
                "softsign", "softplus"}

Activation = tuple[str, float, float]  # (lower-case name, alpha, beta)


def activation(spec: Activation, x: torch.Tensor) -> torch.Tensor:
    """Apply one of the recurrent ops' activation functions ``(name, alpha, beta)``."""
    name, alpha, beta = spec
    if name == "sigmoid":
        return torch.sigmoid(x)
    if name == "tanh":
        return torch.tanh(x)
    if name == "relu":
        return torch.relu(x)
    if name == "affine":
        return alpha * x + beta
    if name == "leakyrelu":
        return F.leaky_relu(x, alpha)
    if name == "thresholdedrelu":
        return torch.where(x > alpha, x, torch.zeros_like(x))
    if name == "scaledtanh":
        return alpha * torch.tanh(beta * x)
    if name == "hardsigmoid":
        return torch.clamp(alpha * x + beta, 0.0, 1.0)
    if name == "elu":
        return F.elu(x, alpha)
    if name == "softsign":
        return F.softsign(x)
    if name == "softplus":
        return F.softplus(x)
    raise NotImplementedError(f"recurrent activation {name!r} is not supported")


class _OnnxRecurrent(torch.nn.Module):
    """What RNN, GRU and LSTM share: layout, directions, input projection, time loop, masking."""

    def __init__(self, direction: str, layout: int, activations: list[list[Activation]], clip: float | None,
                 n_outputs: int, input_slots: tuple[int, ...] | None = None) -> None:
        super().__init__()
        self.direction, self.layout, self.clip, self.n_outputs = direction, layout, clip, n_outputs
        # where the positional inputs sit among the ONNX inputs when the graph omits some ("" names)
        self.input_slots = input_slots
        # activations[k] = the k-th function (f, g, h) for each direction
        self.activations = activations
        self.reversed = {"forward": [False], "reverse": [True], "bidirectional": [False, True]}[direction]

    def forward(self, *inputs: torch.Tensor | None, **named: torch.Tensor | None):
        """The ONNX inputs in order (None for omitted ones, or by name), or only the present ones when
        ``input_slots`` says where they go; returns Y alone or (Y, Y_h[, Y_c]) as the node uses them."""
        return self._outputs(self.compute(*self._slotted(inputs), **named))

    def _slotted(self, inputs: tuple) -> tuple:
        """``inputs`` at their ONNX positions (None for omitted ones) when ``input_slots`` says where
        the present ones go; else as given."""
        if self.input_slots is None:
            return tuple(inputs)
        full: list[torch.Tensor | None] = [None] * (max(self.input_slots) + 1)
        for slot, value in zip(self.input_slots, inputs):
            full[slot] = value
        return tuple(full)

    def extra_repr(self) -> str:
        return f"direction={self.direction!r}, layout={self.layout}, clip={self.clip}, activations={self.activations}"

    def _act(self, k: int, x: torch.Tensor, clip: bool = True) -> torch.Tensor:
        """The k-th activation on a (directions, batch, width) tensor (clipped first), per direction where
        they differ."""
        if clip and self.clip is not None:
            x = torch.clamp(x, -self.clip, self.clip)
        specs = self.activations[k]
        if all(s == specs[0] for s in specs):
            return activation(specs[0], x)
        return torch.stack([activation(s, x[d]) for d, s in enumerate(specs)])

    def _orient(self, x: torch.Tensor) -> torch.Tensor:
        """Flip the time axis (dim 1) of the reverse directions of a (directions, time, ...) tensor."""
        if not any(self.reversed):
            return x
        return torch.stack([x[d].flip(0) if rev else x[d] for d, rev in enumerate(self.reversed)])

    def _project(self, x: torch.Tensor, w: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        """Input projection of all steps and directions in one matmul: (directions, time, batch, gates)."""
        xw = torch.einsum("tni,dgi->dtng", x, w) + bias[:, None, None, :]
        return self._orient(xw)

    def _states(self, x: torch.Tensor, state: torch.Tensor | None, d: int, hidden: int) -> torch.Tensor:
        if state is None:
            return x.new_zeros(d, x.shape[1], hidden)
        return state.transpose(0, 1) if self.layout else state

    def _run(self, x: torch.Tensor, sequence_lens: torch.Tensor | None, states: list[torch.Tensor], step) -> list[torch.Tensor]:
        """Loop ``step(s, states) -> new states`` over time; return [Y, *final states] in ONNX layout."""
        n_dirs, steps = len(self.reversed), x.shape[0]
        keep = None
        if sequence_lens is not None:
            lens = sequence_lens.to(device=x.device, dtype=torch.long)
            valid = torch.arange(steps, device=x.device)[:, None] < lens[None, :]  # (time, batch)
            keep = self._orient(valid.expand(n_dirs, -1, -1))[..., None]  # (dirs, time, batch, 1)
            # a sequence of length 0 ends with zero states (onnxruntime)
            nonempty = (lens > 0)[None, :, None]
            states = [torch.where(nonempty, s, torch.zeros_like(s)) for s in states]
        ys = []
        for s in range(steps):
            new = step(s, states)
            if keep is None:
                states = new
                ys.append(new[0])
            else:
                k = keep[:, s]
                states = [torch.where(k, n, o) for n, o in zip(new, states)]
                ys.append(torch.where(k, new[0], torch.zeros_like(new[0])))
        y = self._orient(torch.stack(ys, 1)).permute(1, 0, 2, 3)  # (time, dirs, batch, hidden)
        if self.layout:
            return [y.permute(2, 0, 1, 3)] + [s.transpose(0, 1) for s in states]
        return [y] + states

    def _outputs(self, outs: list[torch.Tensor]):
        return outs[0] if self.n_outputs == 1 else tuple(outs[: self.n_outputs])


class OnnxRNN(_OnnxRecurrent):
    """ONNX RNN: H_t = f(X_t W^T + H_{t-1} R^T + Wb + Rb); returns (Y, Y_h) as the node uses them."""

    def compute(self, X: torch.Tensor, W: torch.Tensor, R: torch.Tensor, B: torch.Tensor | None = None,
                sequence_lens: torch.Tensor | None = None, initial_h: torch.Tensor | None = None) -> list[torch.Tensor]:
        """[Y, Y_h] from the ONNX inputs (None for omitted ones)."""
        x = X.transpose(0, 1) if self.layout else X
        n_dirs, hidden = W.shape[0], R.shape[-1]
        bias = W.new_zeros(n_dirs, hidden) if B is None else B[:, :hidden] + B[:, hidden:]
        xw = self._project(x, W, bias)
        rt = R.transpose(1, 2)

        def step(s: int, states: list[torch.Tensor]) -> list[torch.Tensor]:
            return [self._act(0, torch.baddbmm(xw[:, s], states[0], rt))]

        return self._run(x, sequence_lens, [self._states(x, initial_h, n_dirs, hidden)], step)


class OnnxGRU(_OnnxRecurrent):
    """ONNX GRU (gates z, r, h; ``linear_before_reset`` applies r after R_h); returns (Y, Y_h)."""

    def __init__(self, direction: str, layout: int, activations: list[list[Activation]], clip: float | None,
                 n_outputs: int, linear_before_reset: bool) -> None:
        super().__init__(direction, layout, activations, clip, n_outputs)
        self.linear_before_reset = linear_before_reset

    def compute(self, X: torch.Tensor, W: torch.Tensor, R: torch.Tensor, B: torch.Tensor | None = None,
                sequence_lens: torch.Tensor | None = None, initial_h: torch.Tensor | None = None) -> list[torch.Tensor]:
        """[Y, Y_h] from the ONNX inputs (None for omitted ones)."""
        x = X.transpose(0, 1) if self.layout else X
        n_dirs, hidden = W.shape[0], R.shape[-1]
        if B is None:
            B = W.new_zeros(n_dirs, 6 * hidden)
        wb, rb = B[:, : 3 * hidden], B[:, 3 * hidden:]
        rb_h = rb[:, None, 2 * hidden:]  # (dirs, 1, hidden)
        if self.linear_before_reset:
            bias = wb + torch.cat([rb[:, : 2 * hidden], torch.zeros_like(rb[:, 2 * hidden:])], -1)
        else:
            bias = wb + rb
        xw = self._project(x, W, bias)
        rt = R.transpose(1, 2)  # (dirs, hidden, 3 hidden)
        rt_zr, rt_h = rt[..., : 2 * hidden], rt[..., 2 * hidden:]

        def step(s: int, states: list[torch.Tensor]) -> list[torch.Tensor]:
            h, xs = states[0], xw[:, s]
            if self.linear_before_reset:
                hr = torch.bmm(h, rt)
                z, r = self._act(0, xs[..., : 2 * hidden] + hr[..., : 2 * hidden]).chunk(2, -1)
                cand = self._act(1, xs[..., 2 * hidden:] + r * (hr[..., 2 * hidden:] + rb_h))
            else:
                z, r = self._act(0, torch.baddbmm(xs[..., : 2 * hidden], h, rt_zr)).chunk(2, -1)
                cand = self._act(1, torch.baddbmm(xs[..., 2 * hidden:], r * h, rt_h))
            return [(1 - z) * cand + z * h]

        return self._run(x, sequence_lens, [self._states(x, initial_h, n_dirs, hidden)], step)


class OnnxLSTM(_OnnxRecurrent):
    """ONNX LSTM (gates i, o, f, c; peepholes P; ``input_forget`` couples f = 1 - i); returns (Y, Y_h, Y_c)."""

    def __init__(self, direction: str, layout: int, activations: list[list[Activation]], clip: float | None,
                 n_outputs: int, input_forget: bool) -> None:
        super().__init__(direction, layout, activations, clip, n_outputs)
        self.input_forget = input_forget

    def compute(self, X: torch.Tensor, W: torch.Tensor, R: torch.Tensor, B: torch.Tensor | None = None,
                sequence_lens: torch.Tensor | None = None, initial_h: torch.Tensor | None = None,
                initial_c: torch.Tensor | None = None, P: torch.Tensor | None = None) -> list[torch.Tensor]:
        """[Y, Y_h, Y_c] from the ONNX inputs (None for omitted ones)."""
        x = X.transpose(0, 1) if self.layout else X
        n_dirs, hidden = W.shape[0], R.shape[-1]
        bias = W.new_zeros(n_dirs, 4 * hidden) if B is None else B[:, : 4 * hidden] + B[:, 4 * hidden:]
        xw = self._project(x, W, bias)
        rt = R.transpose(1, 2)
        p_i = p_o = p_f = None
        if P is not None:
            p_i, p_o, p_f = (p[:, None, :] for p in P.chunk(3, -1))

        def step(s: int, states: list[torch.Tensor]) -> list[torch.Tensor]:
            h, c = states
            return self._cell(torch.baddbmm(xw[:, s], h, rt), c, p_i, p_o, p_f)

        states = [self._states(x, initial_h, n_dirs, hidden), self._states(x, initial_c, n_dirs, hidden)]
        return self._run(x, sequence_lens, states, step)

    def _cell(self, gates: torch.Tensor, c: torch.Tensor, p_i: torch.Tensor | None, p_o: torch.Tensor | None,
              p_f: torch.Tensor | None) -> list[torch.Tensor]:
        """[h, c] of one step from the summed gate pre-activations (i, o, f, c) and the previous cell
        state, with the peepholes when given (all three or none)."""
        gi, go, gf, gc = gates.chunk(4, -1)
        if p_i is not None:
            gi, gf = gi + p_i * c, gf + p_f * c
        i = self._act(0, gi)
        f = 1 - i if self.input_forget else self._act(0, gf)
        c = f * c + i * self._act(1, gc)
        if p_o is not None:
            go = go + p_o * c
        return [self._act(0, go) * self._act(2, c, clip=False), c]  # h(C_t) is not clipped


_DEFAULT_ACTIVATIONS = {"RNN": ["Tanh"], "GRU": ["Sigmoid", "Tanh"], "LSTM": ["Sigmoid", "Tanh", "Tanh"],
                        "DynamicQuantizeLSTM": ["Sigmoid", "Tanh", "Tanh"]}  # com.microsoft: the LSTM on int8 weights


def _activations(node: OnnxNode, n_dirs: int) -> list[list[Activation]]:
    """The node's activations as ``[function k][direction]``; alpha/beta are consumed in order by the
    functions that take them (onnxruntime's reading of the spec), defaults otherwise."""
    op = node.operation_type
    n_funcs = len(_DEFAULT_ACTIVATIONS[op])
    names = [str(n.decode() if isinstance(n, bytes) else n) for n in node.attributes.get("activations", [])]
    if not names:
        names = _DEFAULT_ACTIVATIONS[op] * n_dirs
    if len(names) != n_funcs * n_dirs:
        raise NotImplementedError(f"{op} with activations={names} is not supported "
                                  f"(expected {n_funcs} per direction, {n_dirs} direction(s))")
    alphas = [float(a) for a in node.attributes.get("activation_alpha", [])]
    betas = [float(b) for b in node.attributes.get("activation_beta", [])]
    specs = []
    for name in names:
        low = name.lower()
        if low not in _ACTIVATIONS:
            raise NotImplementedError(f"{op} with activations={names} is not supported ({name!r} is not an ONNX "
                                      "recurrent activation)")
        alpha = alphas.pop(0) if low in _ALPHA_DEFAULT and alphas else _ALPHA_DEFAULT.get(low, 0.0)
        beta = betas.pop(0) if low in _BETA_DEFAULT and betas else _BETA_DEFAULT.get(low, 0.0)
        if alpha is None or beta is None:
            raise NotImplementedError(f"{op} with activations={names} is not supported without activation_alpha and "
                                      f"activation_beta for {name} (the spec gives ScaledTanh no default)")
        specs.append((low, alpha, beta))
    return [[specs[d * n_funcs + k] for d in range(n_dirs)] for k in range(n_funcs)]


def _common(node: OnnxNode) -> dict:
    op = node.operation_type
    direction = node.attributes.get("direction", "forward")
    direction = direction.decode() if isinstance(direction, bytes) else str(direction)
    if direction not in ("forward", "reverse", "bidirectional"):
        raise NotImplementedError(f"{op} with direction={direction} is not supported")
    layout = int(node.attributes.get("layout", 0))
    if layout not in (0, 1):
        raise NotImplementedError(f"{op} with layout={layout} is not supported")
    clip = node.attributes.get("clip")
    return {"direction": direction, "layout": layout, "clip": None if clip is None else float(clip),
            "activations": _activations(node, 2 if direction == "bidirectional" else 1),
            "n_outputs": max(len(node.output_values), 1)}


def _result(module: _OnnxRecurrent, node: OnnxNode) -> OperationConverterResult:
    """Feed the module only the node's present inputs: onnx2torch takes an omitted input ("") for the
    output of any node with an omitted output, so omitted inputs must not reach its mapping."""
    slots = tuple(i for i, name in enumerate(node.input_values) if name)
    module.input_slots = None if slots == tuple(range(len(slots))) else slots
    return OperationConverterResult(torch_module=module, onnx_mapping=OnnxMapping(
        inputs=tuple(node.input_values[i] for i in slots), outputs=node.output_values))


@register("RNN", since(1))
def convert_rnn(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:  # noqa: ARG001
    """RNN-1/7/14/22 (direction, layout, activations with alpha/beta, clip)."""
    return _result(OnnxRNN(**_common(node)), node)


@register("GRU", since(1))
def convert_gru(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:  # noqa: ARG001
    """GRU-1/3/7/14/22 (as RNN, plus linear_before_reset)."""
    return _result(OnnxGRU(**_common(node), linear_before_reset=bool(int(node.attributes.get("linear_before_reset", 0)))), node)


@register("LSTM", since(1))
def convert_lstm(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:  # noqa: ARG001
    """LSTM-1/7/14/22 (as RNN, plus peepholes P and input_forget)."""
    return _result(OnnxLSTM(**_common(node), input_forget=bool(int(node.attributes.get("input_forget", 0)))), node)
