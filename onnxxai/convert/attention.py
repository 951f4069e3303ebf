"""Transformer-era ops: Attention (opset 23-25) with masks, causality, sliding windows, KV caches,
grouped/multi-query heads and softcap; LinearAttention (27); SwiGLU (28); RotaryEmbedding (23);
and FlexAttention (ai.onnx.preview, 1) with its score/prob modifier subgraphs."""

from __future__ import annotations

import math

import onnx
import torch
from onnx2torch.onnx_graph import OnnxGraph
from onnx2torch.onnx_node import OnnxNode
from onnx2torch.utils.common import OperationConverterResult

from onnxxai.convert._util import result
from onnxxai.convert.pipeline import convert, converting_model
from onnxxai.convert.registry import register

#: onnx2torch names each module "<domain>/<node>" and torch refuses dots in module names, so the
#: normalization pass ``alias_dotted_domains`` must rename ai.onnx.preview to this before conversion.
PREVIEW_DOMAIN = "ai_onnx_preview"

_HALF = (torch.float16, torch.bfloat16)


def _work_dtype(dtype: torch.dtype) -> torch.dtype:
    """float32 for half-precision inputs (as ONNX's reference computes them), the dtype itself otherwise."""
    return torch.float32 if dtype in _HALF else dtype


class OnnxAttention(torch.nn.Module):
    """Attention as the ONNX spec draws it; returns as many outputs as the node has.

    The bias added to the scores composes ``attn_mask`` with the structural constraints (causality,
    the ``left/right_window_size`` sliding window, ``nonpad_kv_seqlen`` padding), all aligned at the
    query block's offset: ``past_key``'s length, ``nonpad_kv_seqlen - q_len`` per batch, or 0. A query
    row with no attendable key gives zeros (in ``Y`` and mode-3 probabilities), with finite gradients.
    """

    def __init__(self, q_heads: int | None, kv_heads: int | None, scale: float | None, softcap: float,
                 is_causal: bool, qk_mode: int, n_outputs: int, left_window: int = -1, right_window: int = -1) -> None:
        super().__init__()
        self.q_heads, self.kv_heads, self.scale, self.softcap = q_heads, kv_heads, scale, softcap
        self.is_causal, self.qk_mode, self.n_outputs = is_causal, qk_mode, n_outputs
        self.left_window, self.right_window = left_window, right_window

    @staticmethod
    def _heads(x: torch.Tensor, heads: int | None) -> torch.Tensor:
        if x.dim() == 4:
            return x
        b, s, hidden = x.shape
        return x.reshape(b, s, heads, hidden // heads).transpose(1, 2)

    def _structural_bias(self, sq: int, skv: int, past: int, nonpad: torch.Tensor | None, work: torch.dtype,
                         device: torch.device) -> torch.Tensor | None:
        """-inf where causality, the window or padding forbid a key: (sq, skv), or (B, 1, sq, skv) per batch."""
        windowed = self.left_window >= 0 or self.right_window >= 0
        if not (self.is_causal or windowed or nonpad is not None):
            return None
        i = torch.arange(sq, device=device)[:, None]
        j = torch.arange(skv, device=device)[None, :]
        position = i + past  # absolute position of each query
        if nonpad is not None and past == 0:
            position = i + (nonpad.reshape(-1, 1, 1).long() - sq)
        allowed = torch.ones(position.shape[:-1] + (skv,), dtype=torch.bool, device=device)
        if self.is_causal:
            allowed = allowed & (j <= position)
        if self.left_window >= 0:
            allowed = allowed & (position - j <= self.left_window)
        if self.right_window >= 0:
            allowed = allowed & (j - position <= self.right_window)
        if nonpad is not None:
            allowed = allowed & (j < nonpad.reshape(-1, 1, 1).long())
        bias = torch.where(allowed, 0.0, float("-inf")).to(work)
        return bias[:, None] if bias.dim() == 3 else bias

    def forward(self, q, k, v, attn_mask=None, past_key=None, past_value=None, nonpad_kv_seqlen=None):
        three_d = q.dim() == 3
        q, k, v = self._heads(q, self.q_heads), self._heads(k, self.kv_heads), self._heads(v, self.kv_heads)
        past = 0
        if past_key is not None:
            past = past_key.shape[2]
            k, v = torch.cat([past_key, k], dim=2), torch.cat([past_value, v], dim=2)
        present_k, present_v = k, v
        if k.shape[1] != q.shape[1]:  # grouped / multi-query attention
            k = k.repeat_interleave(q.shape[1] // k.shape[1], dim=1)
            v = v.repeat_interleave(q.shape[1] // v.shape[1], dim=1)
        scale = self.scale if self.scale is not None else 1.0 / math.sqrt(q.shape[-1])
        work = _work_dtype(q.dtype)
        root = math.sqrt(scale)
        scores = (q.to(work) * root) @ (k.to(work) * root).transpose(-1, -2)
        stages = [scores]
        if self.softcap > 0:
            scores = self.softcap * torch.tanh(scores / self.softcap)
        stages.append(scores)
        bias = None
        if attn_mask is not None:
            if attn_mask.dtype == torch.bool:
                bias = torch.where(attn_mask, 0.0, float("-inf")).to(work)
            else:
                bias = attn_mask.to(work)
            if bias.shape[-1] < scores.shape[-1]:  # a mask over the new keys only: pad with -inf
                bias = torch.nn.functional.pad(bias, (0, scores.shape[-1] - bias.shape[-1]), value=float("-inf"))
        structural = self._structural_bias(scores.shape[-2], scores.shape[-1], past, nonpad_kv_seqlen, work, q.device)
        if structural is not None:
            bias = structural if bias is None else bias + structural
        empty_row = None
        if bias is not None:
            scores = scores + bias
            if bias.dim() >= 2:
                empty_row = torch.isneginf(bias).all(dim=-1, keepdim=True)
            elif bool(torch.isneginf(bias).all()):  # a rank-0/1 mask masking every key
                empty_row = torch.ones((1, 1), dtype=torch.bool, device=q.device)
        stages.append(scores)
        if empty_row is not None:  # rows with no attendable key: softmax of zeros, then zeroed
            probs = torch.softmax(torch.where(empty_row, 0.0, scores), dim=-1)
            probs = torch.where(empty_row, 0.0, probs)
        else:
            probs = torch.softmax(scores, dim=-1)
        stages.append(probs)
        y = (probs @ v.to(work)).to(q.dtype)
        if three_d:
            y = y.transpose(1, 2).reshape(y.shape[0], y.shape[2], -1)
        outputs = (y, present_k, present_v, stages[self.qk_mode].to(q.dtype))
        return outputs[0] if self.n_outputs == 1 else outputs[: self.n_outputs]


@register("Attention", (23, 24, 25))
def convert_attention(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:  # noqa: ARG001
    """Attention-23/24/25, including ``nonpad_kv_seqlen`` (24) and sliding windows (25)."""
    attrs = node.attributes
    has = [i < len(node.input_values) and bool(node.input_values[i]) for i in range(7)]
    if has[6] and has[4]:
        raise NotImplementedError("Attention with both nonpad_kv_seqlen and past_key is not supported")
    scale = attrs.get("scale")
    module = OnnxAttention(
        attrs.get("q_num_heads"), attrs.get("kv_num_heads"), None if scale is None else float(scale),
        float(attrs.get("softcap", 0.0)), bool(int(attrs.get("is_causal", 0))), int(attrs.get("qk_matmul_output_mode", 0)),
        len(node.output_values), int(attrs.get("left_window_size", -1)), int(attrs.get("right_window_size", -1)),
    )
    return result(module, node, 7)


class LinearAttention(torch.nn.Module):
    """ONNX LinearAttention: a recurrent state ``S`` (B, H_kv, d_k, d_v) updated token by token.

    ``linear``: S += k v^T; ``gated``: S = exp(g) S + k v^T; ``delta``: S += β k (v - S^T k);
    ``gated_delta``: the delta rule on the decayed state. Each output is ``scale * q^T S``; with
    grouped heads each KV state serves ``q_heads / kv_heads`` consecutive query heads. The
    recurrence runs as a loop over time steps, vectorised over batch and heads; half-precision
    inputs are computed in float32 as ONNX's reference does. Returns (output, present_state).
    """

    def __init__(self, q_heads: int, kv_heads: int, scale: float, gated: bool, delta: bool) -> None:
        super().__init__()
        self.q_heads, self.kv_heads, self.scale, self.gated, self.delta = q_heads, kv_heads, scale, gated, delta

    @staticmethod
    def _heads(x: torch.Tensor, heads: int) -> torch.Tensor:
        """(B, T, H*D) -> (B, H, T, D)."""
        b, t, hidden = x.shape
        return x.reshape(b, t, heads, hidden // heads).transpose(1, 2)

    def forward(self, query, key, value, past_state=None, decay=None, beta=None):
        work = _work_dtype(query.dtype)
        b, t, _ = query.shape
        hq, hkv = self.q_heads, self.kv_heads
        dk, dv = query.shape[-1] // hq, value.shape[-1] // hkv
        q = self._heads(query.to(work), hq).reshape(b, hkv, hq // hkv, t, dk)  # query head h reads KV head h // group
        k, v = self._heads(key.to(work), hkv), self._heads(value.to(work), hkv)
        scale = self.scale if self.scale else 1.0 / math.sqrt(dk)
        g = None
        if self.gated:  # (B, H_kv, T, d_k or 1, 1): broadcast over d_v
            width = decay.shape[-1] // hkv
            g = torch.exp(decay.to(work).reshape(b, t, hkv, width).permute(0, 2, 1, 3))[..., None]
        rate = None
        if self.delta:  # (B, H_kv or 1, T, 1)
            rate = beta.to(work).permute(0, 2, 1)[..., None]
        state = past_state.to(work) if past_state is not None else query.new_zeros((b, hkv, dk, dv), dtype=work)
        outputs = []
        for step in range(t):
            if g is not None:
                state = state * g[:, :, step]
            k_t, v_t = k[:, :, step], v[:, :, step]
            if rate is not None:
                retrieved = torch.einsum("bhdm,bhd->bhm", state, k_t)
                v_t = rate[:, :, step] * (v_t - retrieved)
            state = state + k_t[..., :, None] * v_t[..., None, :]
            outputs.append(torch.einsum("bhgd,bhdm->bhgm", q[:, :, :, step], state))
        out = torch.stack(outputs, dim=3) * scale  # (B, H_kv, group, T, d_v)
        out = out.reshape(b, hq, t, dv).transpose(1, 2).reshape(b, t, hq * dv).to(query.dtype)
        state_dtype = past_state.dtype if past_state is not None else query.dtype
        return out, state.to(state_dtype)


_UPDATE_RULES = {"linear": (False, False), "gated": (True, False), "delta": (False, True), "gated_delta": (True, True)}


@register("LinearAttention", (27,))
def convert_linear_attention(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:  # noqa: ARG001
    """LinearAttention-27, every update rule; ``chunk_size`` is only a tuning hint and is ignored."""
    attrs = node.attributes
    rule = attrs.get("update_rule", "gated_delta")
    if rule not in _UPDATE_RULES:
        raise NotImplementedError(f"LinearAttention with update_rule={rule!r} is not supported")
    gated, delta = _UPDATE_RULES[rule]
    has = [i < len(node.input_values) and bool(node.input_values[i]) for i in range(6)]
    if gated != has[4] or delta != has[5]:
        raise ValueError(f"LinearAttention node {node.name!r}: update_rule={rule!r} "
                         f"{'requires' if gated else 'forbids'} decay and {'requires' if delta else 'forbids'} beta")
    if "q_num_heads" not in attrs or "kv_num_heads" not in attrs:
        raise ValueError(f"LinearAttention node {node.name!r}: q_num_heads and kv_num_heads are required")
    module = LinearAttention(int(attrs["q_num_heads"]), int(attrs["kv_num_heads"]), float(attrs.get("scale", 0.0)), gated, delta)
    return result(module, node, 6)


class SwiGLU(torch.nn.Module):
    """ONNX SwiGLU: ``A * sigmoid(alpha * A) * B``, the gated activation of Llama-style MLPs."""

    def __init__(self, alpha: float) -> None:
        super().__init__()
        self.alpha = alpha

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return a * torch.sigmoid(self.alpha * a) * b


@register("SwiGLU", (28,))
def convert_swiglu(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:  # noqa: ARG001
    """SwiGLU-28."""
    return result(SwiGLU(float(node.attributes.get("alpha", 1.0))), node)


class RotaryEmbedding(torch.nn.Module):
    """ONNX RotaryEmbedding (RoPE): rotates pairs of each head's first ``rotary_dim`` channels by
    position-dependent angles, given as ``cos``/``sin`` caches (indexed by ``position_ids`` when
    present, else already (B, S, rotary_dim/2)). Pairs are halves, or adjacent channels when
    ``interleaved``. Input (B, H, S, D), or (B, S, H*D) with ``num_heads``."""

    def __init__(self, num_heads: int | None, rotary_dim: int, interleaved: bool) -> None:
        super().__init__()
        self.num_heads, self.rotary_dim, self.interleaved = num_heads, rotary_dim, interleaved

    def forward(self, x: torch.Tensor, cos_cache: torch.Tensor, sin_cache: torch.Tensor,
                position_ids: torch.Tensor | None = None) -> torch.Tensor:
        shape = x.shape
        if x.dim() == 4:
            x = x.transpose(1, 2)  # (B, S, H, D)
        else:
            x = x.reshape(shape[0], shape[1], self.num_heads, shape[2] // self.num_heads)
        rd = self.rotary_dim or x.shape[-1]
        if position_ids is not None:
            cos_cache, sin_cache = cos_cache[position_ids.long()], sin_cache[position_ids.long()]
        cos, sin = cos_cache.unsqueeze(2), sin_cache.unsqueeze(2)  # (B, S, 1, rd/2)
        rotated, kept = x[..., :rd], x[..., rd:]
        if self.interleaved:
            x1, x2 = rotated[..., 0::2], rotated[..., 1::2]
        else:
            x1, x2 = rotated[..., : rd // 2], rotated[..., rd // 2:]
        real, imag = cos * x1 - sin * x2, sin * x1 + cos * x2
        if self.interleaved:
            rotated = torch.stack([real, imag], dim=-1).reshape(rotated.shape)
        else:
            rotated = torch.cat([real, imag], dim=-1)
        out = torch.cat([rotated, kept], dim=-1)
        return out.reshape(shape) if len(shape) == 3 else out.transpose(1, 2)


@register("RotaryEmbedding", (23,))
def convert_rotary_embedding(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:  # noqa: ARG001
    """RotaryEmbedding-23."""
    attrs = node.attributes
    num_heads = attrs.get("num_heads")
    module = RotaryEmbedding(None if num_heads is None else int(num_heads), int(attrs.get("rotary_embedding_dim", 0)),
                             bool(int(attrs.get("interleaved", 0))))
    return result(module, node, 4)


class FlexAttention(torch.nn.Module):
    """ONNX FlexAttention (ai.onnx.preview): attention on (B, H, L, E) inputs whose scores and
    probabilities pass through optional modifier subgraphs, converted to torch modules.

    ``softmax(score_mod((Q K^T) * scale))`` then ``prob_mod`` then ``@ V``; the softmax and what
    follows run in ``softmax_dtype`` (float32 for half inputs unless ``softmax_precision`` says).
    """

    def __init__(self, scale: float | None, softmax_dtype: torch.dtype | None,
                 score_mod: torch.nn.Module | None, prob_mod: torch.nn.Module | None) -> None:
        super().__init__()
        self.scale, self.softmax_dtype = scale, softmax_dtype
        self.score_mod, self.prob_mod = score_mod, prob_mod

    @staticmethod
    def _apply(mod: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
        out = mod(x)
        out = out[0] if isinstance(out, (tuple, list)) else out
        return out.to(x.dtype)

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        if k.shape[1] != q.shape[1]:  # grouped heads: query head h reads KV head h // group
            k = k.repeat_interleave(q.shape[1] // k.shape[1], dim=1)
            v = v.repeat_interleave(q.shape[1] // v.shape[1], dim=1)
        scale = self.scale if self.scale is not None else 1.0 / math.sqrt(q.shape[-1])
        root = math.sqrt(scale)
        compute = self.softmax_dtype or _work_dtype(q.dtype)
        scores = (q.to(compute) * root) @ (k.to(compute) * root).transpose(-1, -2)
        if self.score_mod is not None:
            scores = self._apply(self.score_mod, scores)
        probs = torch.softmax(scores, dim=-1)
        if self.prob_mod is not None:
            probs = self._apply(self.prob_mod, probs)
        return (probs @ v.to(compute)).to(v.dtype)


_PRECISIONS = {onnx.TensorProto.FLOAT: torch.float32, onnx.TensorProto.FLOAT16: torch.float16,
               onnx.TensorProto.DOUBLE: torch.float64, onnx.TensorProto.BFLOAT16: torch.bfloat16}


def _modifier(node: OnnxNode, name: str) -> torch.nn.Module | None:
    """The node's ``name`` subgraph converted by onnxxai (as a model of the newest ONNX opset: the
    outer model's opsets do not reach a converter), or None when the attribute is absent."""
    attr = node.attributes.get(name)
    if attr is None:
        return None
    subgraph = attr.g
    if len(subgraph.input) != 1 or len(subgraph.output) != 1:
        raise NotImplementedError(f"FlexAttention with a {name} of {len(subgraph.input)} inputs and "
                                  f"{len(subgraph.output)} outputs is not supported")
    known = {subgraph.input[0].name} | {t.name for t in subgraph.initializer}
    for inner in subgraph.node:
        outer = [i for i in inner.input if i and i not in known]
        if outer:
            raise NotImplementedError(f"FlexAttention with a {name} reading outer-scope values {outer} is not supported")
        known.update(inner.output)
    domains = {n.domain for n in subgraph.node} - {"", "ai.onnx"}
    if domains:
        raise NotImplementedError(f"FlexAttention with a {name} using domains {sorted(domains)} is not supported")
    parent = converting_model()  # the model being converted: its default-domain opset applies to the body
    opset = next((o.version for o in parent.opset_import if o.domain in ("", "ai.onnx")), None) if parent is not None else None
    model = onnx.helper.make_model(subgraph, opset_imports=[onnx.helper.make_opsetid("", opset or onnx.defs.onnx_opset_version())])
    _, _, module = convert(model, f"FlexAttention node {node.name!r} {name}")
    return module


@register("FlexAttention", (1,), domain=PREVIEW_DOMAIN)
def convert_flex_attention(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:  # noqa: ARG001
    """FlexAttention (ai.onnx.preview, opset 1), with ``score_mod``/``prob_mod`` subgraphs."""
    attrs = node.attributes
    precision = attrs.get("softmax_precision")
    if precision is not None and int(precision) not in _PRECISIONS:
        raise NotImplementedError(f"FlexAttention with softmax_precision={precision} is not supported")
    scale = attrs.get("scale")
    module = FlexAttention(None if scale is None else float(scale), None if precision is None else _PRECISIONS[int(precision)],
                           _modifier(node, "score_mod"), _modifier(node, "prob_mod"))
    return result(module, node, 3)
