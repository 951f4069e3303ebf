"""ONNX Attention (opset 23-25): scaled dot-product attention with masks, causality, KV cache,
grouped/multi-query heads and softcap."""

from __future__ import annotations

import math

import torch
from onnx2torch.node_converters.registry import add_converter
from onnx2torch.onnx_graph import OnnxGraph
from onnx2torch.onnx_node import OnnxNode
from onnx2torch.utils.common import OperationConverterResult

from onnxxai.converters._util import result


class OnnxAttention(torch.nn.Module):
    """Attention as the ONNX spec draws it; returns as many outputs as the node has."""

    def __init__(self, q_heads: int | None, kv_heads: int | None, scale: float | None, softcap: float,
                 is_causal: bool, qk_mode: int, n_outputs: int) -> None:
        super().__init__()
        self.q_heads, self.kv_heads, self.scale, self.softcap = q_heads, kv_heads, scale, softcap
        self.is_causal, self.qk_mode, self.n_outputs = is_causal, qk_mode, n_outputs

    @staticmethod
    def _heads(x: torch.Tensor, heads: int | None) -> torch.Tensor:
        if x.dim() == 4:
            return x
        b, s, hidden = x.shape
        return x.reshape(b, s, heads, hidden // heads).transpose(1, 2)

    def forward(self, q, k, v, attn_mask=None, past_key=None, past_value=None):
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
        work = torch.float32 if q.dtype in (torch.float16, torch.bfloat16) else q.dtype
        root = math.sqrt(scale)
        scores = (q.to(work) * root) @ (k.to(work) * root).transpose(-1, -2)
        stages = [scores]
        if self.softcap > 0:
            scores = self.softcap * torch.tanh(scores / self.softcap)
        stages.append(scores)
        bias = torch.zeros((), dtype=work, device=q.device)
        if attn_mask is not None:
            if attn_mask.dtype == torch.bool:
                bias = torch.where(attn_mask, 0.0, float("-inf")).to(work)
            else:
                bias = attn_mask.to(work)
            if bias.shape[-1] < scores.shape[-1]:  # a mask over the new keys only: pad with -inf
                bias = torch.nn.functional.pad(bias, (0, scores.shape[-1] - bias.shape[-1]), value=float("-inf"))
        if self.is_causal:
            sq, skv = scores.shape[-2], scores.shape[-1]
            i = torch.arange(sq, device=q.device)[:, None]
            j = torch.arange(skv, device=q.device)[None, :]
            bias = bias + torch.where(j <= i + past, 0.0, float("-inf")).to(work)
        scores = scores + bias
        stages.append(scores)
        probs = torch.softmax(scores, dim=-1)
        probs = torch.nan_to_num(probs, nan=0.0)  # fully masked rows give zeros, as the spec says
        stages.append(probs)
        y = (probs @ v.to(work)).to(q.dtype)
        if three_d:
            y = y.transpose(1, 2).reshape(y.shape[0], y.shape[2], -1)
        outputs = (y, present_k, present_v, stages[self.qk_mode].to(q.dtype))
        return outputs[0] if self.n_outputs == 1 else outputs[: self.n_outputs]


def convert_attention(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:  # noqa: ARG001
    """Attention-23/24/25; refuses ``nonpad_kv_seqlen`` (24) and sliding windows (25)."""
    attrs = node.attributes
    if len(node.input_values) > 6 and node.input_values[6]:
        raise NotImplementedError("Attention with nonpad_kv_seqlen is not supported")
    if int(attrs.get("left_window_size", -1)) != -1 or int(attrs.get("right_window_size", -1)) != -1:
        raise NotImplementedError("Attention with a sliding window is not supported")
    scale = attrs.get("scale")
    module = OnnxAttention(
        attrs.get("q_num_heads"), attrs.get("kv_num_heads"), None if scale is None else float(scale),
        float(attrs.get("softcap", 0.0)), bool(int(attrs.get("is_causal", 0))), int(attrs.get("qk_matmul_output_mode", 0)),
        len(node.output_values),
    )
    return result(module, node, 6)


for _v in (23, 24, 25):
    add_converter(operation_type="Attention", version=_v)(convert_attention)
