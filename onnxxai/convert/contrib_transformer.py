"""onnxruntime's transformer contrib ops, as its optimizers (``SessionOptions`` levels and
``onnxruntime.transformers.optimizer``) write them: LayerNormalization before opset 17 and
SimplifiedLayerNormalization (registered by onnxruntime in the default domain),
SkipLayerNormalization / SkipSimplifiedLayerNormalization, EmbedLayerNormalization, Attention,
MultiHeadAttention and RotaryEmbedding (com.microsoft).

Masks follow onnxruntime's CPU kernels: a masked score is *set* to ``mask_filter_value``
(-10000 by default), not to -inf, so a fully masked row averages its values as onnxruntime does.
"""

from __future__ import annotations

import math

import onnx
import torch
import torch.nn.functional as F
from onnx2torch.onnx_graph import OnnxGraph
from onnx2torch.onnx_node import OnnxNode
from onnx2torch.utils.common import OperationConverterResult

from onnxxai.convert._util import optional_result
from onnxxai.convert.attention import RotaryEmbedding as OnnxRotaryEmbedding
from onnxxai.convert.contrib_fused import MS_DOMAIN
from onnxxai.convert.normalization import LayerNormalization
from onnxxai.convert.registry import register

__all__ = ["SimplifiedLayerNormalization", "SkipLayerNormalization", "EmbedLayerNormalization", "ContribAttention",
           "MultiHeadAttention", "ContribRotaryEmbedding"]


def _statistics_used(node: OnnxNode, first: int = 1) -> bool:
    return any(node.output_values[first:])


@register("LayerNormalization", range(1, 17))
def convert_layer_norm_contrib(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:  # noqa: ARG001
    """LayerNormalization at opsets before 17, as onnxruntime's LayerNormFusion writes it (its own
    default-domain schema, version 1; same semantics as ONNX's LayerNormalization-17)."""
    module = LayerNormalization(int(node.attributes.get("axis", -1)), float(node.attributes.get("epsilon", 1e-5)),
                                _statistics_used(node))
    return optional_result(module, node, 3)


class SimplifiedLayerNormalization(torch.nn.Module):
    """RMS normalization over the axes from ``axis`` on: ``x / sqrt(mean(x²) + eps) * scale``;
    returns (Y, inv_std_var) when the graph uses the statistic."""

    def __init__(self, axis: int, epsilon: float, with_stats: bool) -> None:
        super().__init__()
        self.axis, self.epsilon, self.with_stats = axis, epsilon, with_stats

    def forward(self, x: torch.Tensor, scale: torch.Tensor):
        dims = list(range(self.axis % x.dim(), x.dim()))
        work = x.float() if x.dtype in (torch.float16, torch.bfloat16) else x
        inv = torch.rsqrt((work * work).mean(dim=dims, keepdim=True) + self.epsilon)
        y = (work * inv).to(x.dtype) * scale
        return (y, inv) if self.with_stats else y


@register("SimplifiedLayerNormalization", range(1, onnx.defs.onnx_opset_version() + 1))
def convert_simplified_layer_norm(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:  # noqa: ARG001
    """SimplifiedLayerNormalization (onnxruntime's default-domain schema, any opset)."""
    module = SimplifiedLayerNormalization(int(node.attributes.get("axis", -1)), float(node.attributes.get("epsilon", 1e-5)),
                                          _statistics_used(node))
    return optional_result(module, node, 2)


class SkipLayerNormalization(torch.nn.Module):
    """com.microsoft Skip(Simplified)LayerNormalization: normalize ``s = input + skip + bias`` over the
    last axis, scale by gamma (and shift by beta); outputs (Y, mean, inv_std_var, s), as many as the
    node has. ``simplified``: RMS normalization (no mean, no beta)."""

    def __init__(self, epsilon: float, simplified: bool, n_outputs: int) -> None:
        super().__init__()
        self.epsilon, self.simplified, self.n_outputs = epsilon, simplified, n_outputs

    def forward(self, x: torch.Tensor, skip: torch.Tensor, gamma: torch.Tensor, beta: torch.Tensor | None = None,
                bias: torch.Tensor | None = None):
        s = x + skip
        if bias is not None:
            s = s + bias
        if self.simplified:
            mean = torch.zeros_like(s[..., :1])
            inv = torch.rsqrt((s * s).mean(dim=-1, keepdim=True) + self.epsilon)
            y = s * inv * gamma
        else:
            mean = s.mean(dim=-1, keepdim=True)
            inv = torch.rsqrt(((s - mean) ** 2).mean(dim=-1, keepdim=True) + self.epsilon)
            y = (s - mean) * inv * gamma
            if beta is not None:
                y = y + beta
        outputs = (y, mean, inv, s)[: self.n_outputs]
        return outputs[0] if self.n_outputs == 1 else outputs


@register("SkipLayerNormalization", (1,), domain=MS_DOMAIN)
def convert_skip_layer_norm(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:  # noqa: ARG001
    """com.microsoft SkipLayerNormalization-1: inputs (input, skip, gamma, beta?, bias?)."""
    module = SkipLayerNormalization(float(node.attributes.get("epsilon", 1e-12)), False, len(node.output_values))
    return optional_result(module, node, 5)


class _NoBeta(torch.nn.Module):
    """Feeds SkipSimplifiedLayerNormalization's inputs (input, skip, gamma, bias?) to the shared module."""

    def __init__(self, inner: SkipLayerNormalization) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x, skip, gamma, bias=None):
        return self.inner(x, skip, gamma, None, bias)


@register("SkipSimplifiedLayerNormalization", (1,), domain=MS_DOMAIN)
def convert_skip_simplified_layer_norm(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:  # noqa: ARG001
    """com.microsoft SkipSimplifiedLayerNormalization-1: inputs (input, skip, gamma, bias?)."""
    inner = SkipLayerNormalization(float(node.attributes.get("epsilon", 1e-12)), True, len(node.output_values))
    return optional_result(_NoBeta(inner), node, 4)


class EmbedLayerNormalization(torch.nn.Module):
    """com.microsoft EmbedLayerNormalization: ``LayerNorm(word[ids] + position[pos] + segment[seg])``
    with ``pos`` from ``position_ids`` or 0..S-1; outputs (Y, mask_index, embedding_sum) as many as the
    node has, ``mask_index`` counting each row's ones in ``mask`` (zeros without a mask)."""

    def __init__(self, epsilon: float, n_outputs: int) -> None:
        super().__init__()
        self.epsilon, self.n_outputs = epsilon, n_outputs

    def forward(self, input_ids, segment_ids, word_embedding, position_embedding, segment_embedding, gamma, beta,
                mask=None, position_ids=None):
        batch, seq = input_ids.shape
        if position_ids is None:
            position_ids = torch.arange(seq, device=input_ids.device).expand(batch, seq)
        total = word_embedding[input_ids.long()] + position_embedding[position_ids.long()].expand(batch, seq, -1)
        if segment_ids is not None and segment_embedding is not None:
            total = total + segment_embedding[segment_ids.long()]
        y = F.layer_norm(total, total.shape[-1:], gamma, beta, self.epsilon)
        if self.n_outputs == 1:
            return y
        if mask is None:
            mask_index = torch.zeros(batch, dtype=torch.int32, device=input_ids.device)
        else:
            mask_index = (mask == 1).sum(dim=1).to(torch.int32)
        return (y, mask_index, total)[: self.n_outputs]


@register("EmbedLayerNormalization", (1,), domain=MS_DOMAIN)
def convert_embed_layer_norm(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:  # noqa: ARG001
    """com.microsoft EmbedLayerNormalization-1 (the embedding lookups stay differentiable in the tables)."""
    module = EmbedLayerNormalization(float(node.attributes.get("epsilon", 1e-12)), len(node.output_values))
    return optional_result(module, node, 9)


# -- attention -----------------------------------------------------------------------------------
def _key_mask(mask: torch.Tensor | None, batch: int, q_len: int, total: int, past: int, device: torch.device) -> torch.Tensor | None:
    """Which keys each query may see, (B, 1|N, S, T) boolean, from an onnxruntime mask_index /
    key_padding_mask: lengths (B), end and start positions (2B), raw masks (B, T), (B, S, T) or
    (B, 1, M, M) with 1 for kept."""
    if mask is None:
        return None
    j = torch.arange(total, device=device)
    if mask.dim() == 1:
        if mask.shape[0] == batch:
            allowed = j[None, :] < mask[:, None].long()
        elif mask.shape[0] == 2 * batch:
            end, start = mask[:batch, None].long(), mask[batch:, None].long()
            allowed = (j[None, :] < end) & (j[None, :] >= start)
        else:
            raise NotImplementedError(f"a 1-D mask index of {mask.shape[0]} values for batch {batch} (3B+2 packed format)")
        return allowed[:, None, None, :]
    if mask.dim() == 2:
        return (mask > 0)[:, None, None, :]
    if mask.dim() == 3:
        return (mask > 0)[:, None, :, :]
    return (mask[:, :, past:past + q_len, :total] > 0)


def _attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float | None, allowed: torch.Tensor | None,
            causal: bool, attention_bias: torch.Tensor | None, mask_filter_value: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, N, S, hv) attention and its (B, N, S, T) probabilities, onnxruntime's masking."""
    q_len, total = q.shape[-2], k.shape[-2]
    factor = scale if scale is not None else 1.0 / math.sqrt(q.shape[-1])
    scores = torch.matmul(q, k.transpose(-1, -2)) * factor
    if causal:
        past = total - q_len
        order = torch.arange(total, device=q.device)[None, :] <= torch.arange(q_len, device=q.device)[:, None] + past
        allowed = order if allowed is None else allowed & order
    if allowed is not None:
        scores = torch.where(allowed, scores, torch.full_like(scores, mask_filter_value))
    if attention_bias is not None:
        scores = scores + attention_bias
    probs = torch.softmax(scores, dim=-1)
    return torch.matmul(probs, v), probs


def _merge_heads(x: torch.Tensor) -> torch.Tensor:
    b, n, s, h = x.shape
    return x.transpose(1, 2).reshape(b, s, n * h)


def _split_heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    b, s, hidden = x.shape
    return x.reshape(b, s, heads, hidden // heads).transpose(1, 2)


class ContribAttention(torch.nn.Module):
    """com.microsoft Attention: merged Q/K/V projection of ``input``, multi-head attention with an
    optional mask index, past state, causal order and attention bias; (output, present) as many as
    the node has."""

    def __init__(self, heads: int, qkv_sizes: list[int] | None, scale: float | None, causal: bool, mask_filter_value: float,
                 n_outputs: int) -> None:
        super().__init__()
        self.heads, self.qkv_sizes, self.scale, self.causal = heads, qkv_sizes, scale, causal
        self.mask_filter_value, self.n_outputs = mask_filter_value, n_outputs

    def forward(self, x, weights, bias=None, mask_index=None, past=None, attention_bias=None):
        qkv = torch.matmul(x, weights)
        if bias is not None:
            qkv = qkv + bias
        sizes = self.qkv_sizes or [qkv.shape[-1] // 3] * 3
        q, k, v = (_split_heads(t, self.heads) for t in torch.split(qkv, sizes, dim=-1))
        past_len = 0
        if past is not None:
            past_len = past.shape[-2]
            k, v = torch.cat([past[0], k], dim=-2), torch.cat([past[1], v], dim=-2)
        allowed = _key_mask(mask_index, x.shape[0], x.shape[1], k.shape[-2], past_len, x.device)
        out, _ = _attend(q, k, v, self.scale, allowed, self.causal, attention_bias, self.mask_filter_value)
        y = _merge_heads(out)
        return y if self.n_outputs == 1 else (y, torch.stack([k, v]))


def _attention_attrs(node: OnnxNode) -> tuple[int, float | None, bool, float]:
    attrs = node.attributes
    scale = attrs.get("scale")
    return (int(attrs["num_heads"]), None if scale is None or float(scale) == 0.0 else float(scale),
            bool(attrs.get("unidirectional", 0)), float(attrs.get("mask_filter_value", -10000.0)))


@register("Attention", (1,), domain=MS_DOMAIN)
def convert_contrib_attention(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:  # noqa: ARG001
    """com.microsoft Attention-1 (no rotary, no shared past/present buffer)."""
    attrs = node.attributes
    if int(attrs.get("do_rotary", 0)) or int(attrs.get("past_present_share_buffer", 0)):
        raise NotImplementedError("com.microsoft Attention with do_rotary or past_present_share_buffer")
    if len(node.input_values) > 6 and node.input_values[6]:
        raise NotImplementedError("com.microsoft Attention with past_sequence_length")
    heads, scale, causal, fill = _attention_attrs(node)
    sizes = attrs.get("qkv_hidden_sizes")
    module = ContribAttention(heads, None if not sizes else [int(s) for s in sizes], scale, causal, fill, len(node.output_values))
    return optional_result(module, node, 6)


class MultiHeadAttention(torch.nn.Module):
    """com.microsoft MultiHeadAttention: separate (or packed) Q, K, V with the projection bias, key
    padding mask, attention bias and past key/value; (output, present_key, present_value, qk) as
    many as the node has."""

    def __init__(self, heads: int, scale: float | None, causal: bool, mask_filter_value: float, n_outputs: int) -> None:
        super().__init__()
        self.heads, self.scale, self.causal, self.mask_filter_value, self.n_outputs = heads, scale, causal, mask_filter_value, n_outputs

    def forward(self, query, key=None, value=None, bias=None, key_padding_mask=None, attention_bias=None, past_key=None,
                past_value=None):
        n = self.heads
        if query.dim() == 5:  # packed QKV (B, S, N, 3, h)
            q, k, v = (query[:, :, :, i].transpose(1, 2) for i in range(3))
        else:
            hq = query.shape[-1]
            if bias is not None:
                query = query + bias[:hq]
            q = _split_heads(query, n)
            if key is not None and key.dim() == 5:  # packed KV (B, L, N, 2, h)
                k, v = key[:, :, :, 0].transpose(1, 2), key[:, :, :, 1].transpose(1, 2)
            else:
                if key.dim() == 3:
                    k = _split_heads(key if bias is None else key + bias[hq:2 * hq], n)
                else:
                    k = key
                if value.dim() == 3:
                    v = _split_heads(value if bias is None else value + bias[2 * hq:], n)
                else:
                    v = value
        past_len = 0
        if past_key is not None:
            past_len = past_key.shape[-2]
            k, v = torch.cat([past_key, k], dim=-2), torch.cat([past_value, v], dim=-2)
        allowed = _key_mask(key_padding_mask, q.shape[0], q.shape[2], k.shape[-2], past_len, q.device)
        out, probs = _attend(q, k, v, self.scale, allowed, self.causal, attention_bias, self.mask_filter_value)
        y = _merge_heads(out)
        return y if self.n_outputs == 1 else (y, k, v, probs)[: self.n_outputs]


@register("MultiHeadAttention", (1,), domain=MS_DOMAIN)
def convert_multi_head_attention(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:  # noqa: ARG001
    """com.microsoft MultiHeadAttention-1 (no shared past buffer, no beam cache indirection)."""
    if len(node.input_values) > 8 and any(node.input_values[8:]):
        raise NotImplementedError("com.microsoft MultiHeadAttention with past_sequence_length or cache_indirection")
    heads, scale, causal, fill = _attention_attrs(node)
    return optional_result(MultiHeadAttention(heads, scale, causal, fill, len(node.output_values)), node, 8)


class ContribRotaryEmbedding(torch.nn.Module):
    """com.microsoft RotaryEmbedding: ``position_ids`` is (B, S), or one offset for positions
    offset..offset+S-1; caches (max_seq, rotary_dim/2); input (B, S, hidden) or (B, N, S, h)."""

    def __init__(self, num_heads: int, rotary_dim: int, interleaved: bool) -> None:
        super().__init__()
        self.num_heads, self.rotary_dim, self.interleaved = num_heads, rotary_dim, interleaved

    def forward(self, x: torch.Tensor, position_ids: torch.Tensor, cos_cache: torch.Tensor, sin_cache: torch.Tensor) -> torch.Tensor:
        batch, seq = x.shape[0], x.shape[-2] if x.dim() == 4 else x.shape[1]
        if position_ids.numel() == 1:
            position_ids = position_ids.reshape(1, 1).long() + torch.arange(seq, device=x.device)[None, :]
        position_ids = position_ids.long().expand(batch, seq)
        rotary_dim = self.rotary_dim or 2 * cos_cache.shape[-1]
        heads = self.num_heads
        if x.dim() == 3 and not heads:
            heads = x.shape[-1] // (2 * cos_cache.shape[-1])
        module = OnnxRotaryEmbedding(heads or None, rotary_dim, self.interleaved)
        return module(x, cos_cache, sin_cache, position_ids)


@register("RotaryEmbedding", (1,), domain=MS_DOMAIN)
def convert_contrib_rotary_embedding(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:  # noqa: ARG001
    """com.microsoft RotaryEmbedding-1 (not packed batching)."""
    attrs = node.attributes
    if int(attrs.get("is_packed_batching", 0)):
        raise NotImplementedError("com.microsoft RotaryEmbedding with is_packed_batching")
    module = ContribRotaryEmbedding(int(attrs.get("num_heads", 0)), int(attrs.get("rotary_embedding_dim", 0)),
                                    bool(int(attrs.get("interleaved", 0))))
    return optional_result(module, node, 4)
