"""Signal ops: the window functions (BlackmanWindow / HammingWindow / HannWindow), STFT and DFT.

Shape-like inputs (sizes, frame lengths) are read at run time, so the modules work whether they
come from initializers or from graph inputs. STFT is a DFT written as a real matmul and DFT runs
on torch.fft, so gradients are exact.
"""

from __future__ import annotations

import math

import torch
from onnx2torch.onnx_graph import OnnxGraph
from onnx2torch.onnx_node import OnnxNode
from onnx2torch.utils.common import OperationConverterResult

from onnxxai.convert._util import constant_input, optional_result, result
from onnxxai.convert.registry import register, since
from onnxxai.proto.dtypes import TORCH_NATIVE


# --------------------------------------------------------------------------------------------------
# Window functions (opset 17)

#: cosine-sum coefficients a_k of w[n] = sum_k (-1)^k a_k cos(2 pi k n / N)
_WINDOWS = {"HannWindow": (0.5, 0.5), "HammingWindow": (25.0 / 46.0, 21.0 / 46.0), "BlackmanWindow": (0.42, 0.5, 0.08)}


class CosineWindow(torch.nn.Module):
    """Hann, Hamming or Blackman window of ``size`` points (periodic: denominator N, else N - 1),
    computed in float64 and cast to ``output_datatype``."""

    def __init__(self, coefficients: tuple[float, ...], periodic: bool, dtype: torch.dtype) -> None:
        super().__init__()
        self.coefficients, self.periodic, self.dtype = coefficients, periodic, dtype

    def forward(self, size: torch.Tensor) -> torch.Tensor:
        n = int(size.reshape(-1)[0])
        denominator = n if self.periodic else n - 1
        phase = torch.arange(n, dtype=torch.float64, device=size.device) * (2 * math.pi / denominator)
        window = torch.zeros_like(phase)
        for k, a in enumerate(self.coefficients):
            window = window + (-1) ** k * a * torch.cos(k * phase)
        return window.to(self.dtype)


@register("BlackmanWindow", since(1))
@register("HammingWindow", since(1))
@register("HannWindow", since(1))
def convert_window(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:  # noqa: ARG001
    """BlackmanWindow / HammingWindow / HannWindow (opset 17): periodic, output_datatype."""
    to = int(node.attributes.get("output_datatype", 1))
    if to not in TORCH_NATIVE:
        raise NotImplementedError(f"{node.operation_type} with output_datatype={to} is not supported")
    periodic = bool(int(node.attributes.get("periodic", 1)))
    return result(CosineWindow(_WINDOWS[node.operation_type], periodic, TORCH_NATIVE[to]), node)


# --------------------------------------------------------------------------------------------------
# STFT (opset 17)


class STFT(torch.nn.Module):
    """Short-time Fourier transform of ``signal`` (batch, length, 1 real | 2 complex) into
    (batch, frames, bins, 2): frames of ``frame_length`` every ``frame_step`` samples, times the
    window, then a DFT written as a real matmul (differentiable in signal and window)."""

    def __init__(self, onesided: bool) -> None:
        super().__init__()
        self.onesided = onesided

    def forward(self, signal: torch.Tensor, frame_step: torch.Tensor, window: torch.Tensor | None = None,
                frame_length: torch.Tensor | None = None) -> torch.Tensor:
        step = int(frame_step.reshape(-1)[0])
        if frame_length is not None:
            length = int(frame_length.reshape(-1)[0])
        elif window is not None:
            length = window.shape[0]
        else:
            length = signal.shape[1]
        if signal.shape[-1] not in (1, 2):
            raise ValueError(f"STFT signal's last axis must be 1 (real) or 2 (complex), got shape {tuple(signal.shape)}")
        frames = signal.unfold(1, length, step)  # (batch, frames, 1|2, length)
        if window is not None:
            frames = frames * window.to(signal.dtype)
        bins = length // 2 + 1 if self.onesided else length
        k = torch.arange(bins, dtype=torch.float64, device=signal.device)[:, None]
        n = torch.arange(length, dtype=torch.float64, device=signal.device)[None, :]
        angle = 2 * math.pi * ((k * n) % length) / length
        cos, sin = torch.cos(angle).to(signal.dtype), torch.sin(angle).to(signal.dtype)
        re_in = frames[:, :, 0]
        real = re_in @ cos.T
        imag = -(re_in @ sin.T)
        if signal.shape[-1] == 2:
            im_in = frames[:, :, 1]
            real = real + im_in @ sin.T
            imag = imag + im_in @ cos.T
        return torch.stack([real, imag], dim=-1)


@register("STFT", since(1))
def convert_stft(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:  # noqa: ARG001
    """STFT (opset 17): onesided, optional window and frame_length."""
    return optional_result(STFT(bool(int(node.attributes.get("onesided", 1)))), node, 4)


# --------------------------------------------------------------------------------------------------
# DFT (opsets 17, 20)


class DFT(torch.nn.Module):
    """ONNX DFT on a signal whose last dimension holds [real] or [real, imaginary].

    Forward or inverse (scaled by 1/n), full or one-sided (rfft: first n//2+1 frequencies; irfft:
    a real signal from one-sided frequencies). ``dft_length`` pads or truncates the signal. The axis
    comes from the attribute (DFT-17) or the ``axis`` input (DFT-20). Differentiable in the signal."""

    def __init__(self, inverse: bool, onesided: bool, axis: int | None = None) -> None:
        super().__init__()
        self.inverse, self.onesided, self.axis = inverse, onesided, axis

    def forward(self, x: torch.Tensor, dft_length: torch.Tensor | None = None, axis: torch.Tensor | None = None) -> torch.Tensor:
        dim = (self.axis if self.axis is not None else int(axis)) % x.dim()
        if dim == x.dim() - 1:
            raise ValueError("DFT's axis must not be the last (real/imaginary) dimension")
        work = x.float() if x.dtype in (torch.float16, torch.bfloat16) else x
        if work.shape[-1] == 2:
            signal = torch.complex(work[..., 0], work[..., 1])
        else:
            signal = work[..., 0]
        if dft_length is not None:
            n = int(dft_length)
        elif self.inverse and self.onesided:
            n = 2 * (x.shape[dim] - 1)
        else:
            n = x.shape[dim]
        if self.inverse and self.onesided:
            if not signal.is_complex():
                signal = torch.complex(signal, torch.zeros_like(signal))
            return torch.fft.irfft(signal, n=n, dim=dim).unsqueeze(-1).to(x.dtype)
        out = torch.fft.ifft(signal, n=n, dim=dim) if self.inverse else torch.fft.fft(signal, n=n, dim=dim)
        if self.onesided:
            out = out.narrow(dim, 0, n // 2 + 1)
        return torch.view_as_real(out).to(x.dtype)


def _dft(opset: int):
    def convert_dft(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
        """DFT-17 (axis attribute, default 1) and DFT-20 (axis input, default -2)."""
        inverse, onesided = bool(node.attributes.get("inverse", 0)), bool(node.attributes.get("onesided", 0))
        if opset < 20:
            axis = int(node.attributes.get("axis", 1))
        else:
            given = node.input_values[2] if len(node.input_values) > 2 and node.input_values[2] else None
            constant = constant_input(node, graph, 2)
            axis = -2 if given is None else (int(constant) if constant is not None else None)
        return result(DFT(inverse, onesided, axis), node)

    return convert_dft


register("DFT", (17,))(_dft(17))
register("DFT", (20,))(_dft(20))
