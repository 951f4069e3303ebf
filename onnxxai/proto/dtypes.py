"""ONNX element types and the torch / numpy types that hold them: the one table every stage reads.

torch has a dtype of its own for the classic types, bfloat16, uint16/32/64 and the four float8
types of opset 19. The sub-byte integers int4/uint4/int2/uint2 have none: onnxxai carries them in
int8/uint8 tensors holding the same values. float4e2m1 and float8e8m0 have none either: they are
carried in float32 tensors holding exactly the representable values.
"""

from __future__ import annotations

import numpy as np
import torch
from onnx import TensorProto

__all__ = [
    "TORCH_DTYPES", "TORCH_NATIVE", "SUB_BYTE", "FLOAT32_CARRIED", "TORCH_FLOAT8", "FLOAT_TYPES",
    "NUMPY_FLOAT_TYPES", "NARROW_WIDENED", "NARROW_NUMPY_NAMES",
]

#: ONNX element type -> torch dtype that is the type itself (no container).
TORCH_NATIVE: dict[int, torch.dtype] = {
    TensorProto.FLOAT: torch.float32, TensorProto.DOUBLE: torch.float64, TensorProto.FLOAT16: torch.float16,
    TensorProto.BFLOAT16: torch.bfloat16,
    TensorProto.UINT8: torch.uint8, TensorProto.INT8: torch.int8, TensorProto.UINT16: torch.uint16,
    TensorProto.INT16: torch.int16, TensorProto.UINT32: torch.uint32, TensorProto.INT32: torch.int32,
    TensorProto.UINT64: torch.uint64, TensorProto.INT64: torch.int64, TensorProto.BOOL: torch.bool,
    TensorProto.COMPLEX64: torch.complex64, TensorProto.COMPLEX128: torch.complex128,
    TensorProto.FLOAT8E4M3FN: torch.float8_e4m3fn, TensorProto.FLOAT8E4M3FNUZ: torch.float8_e4m3fnuz,
    TensorProto.FLOAT8E5M2: torch.float8_e5m2, TensorProto.FLOAT8E5M2FNUZ: torch.float8_e5m2fnuz,
}
#: Sub-byte integer types: (bits, signed).
SUB_BYTE: dict[int, tuple[int, bool]] = {
    TensorProto.INT4: (4, True), TensorProto.UINT4: (4, False), TensorProto.INT2: (2, True), TensorProto.UINT2: (2, False),
}
#: ONNX element type -> torch dtype holding it exactly (sub-byte integers: an int8/uint8 container).
TORCH_DTYPES: dict[int, torch.dtype] = {
    **TORCH_NATIVE,
    **{t: (torch.int8 if signed else torch.uint8) for t, (_, signed) in SUB_BYTE.items()},
}
#: Float types carried in float32 containers (values exactly representable in the type).
FLOAT32_CARRIED: tuple[int, ...] = (TensorProto.FLOAT4E2M1, TensorProto.FLOAT8E8M0)
#: torch's float8 dtypes (the ONNX float8 types of opset 19).
TORCH_FLOAT8: tuple[torch.dtype, ...] = (torch.float8_e4m3fn, torch.float8_e4m3fnuz, torch.float8_e5m2, torch.float8_e5m2fnuz)

#: Float element types numpy holds natively (float16/32/64).
NUMPY_FLOAT_TYPES: frozenset[int] = frozenset({TensorProto.FLOAT, TensorProto.DOUBLE, TensorProto.FLOAT16})
#: Float element types a gradient flows through in a converted graph.
FLOAT_TYPES: frozenset[int] = NUMPY_FLOAT_TYPES | {TensorProto.BFLOAT16}

#: Element types numpy holds only through ml_dtypes, which torch.from_numpy (and so onnx2torch's
#: initializer loading) refuses -> the numpy type that holds their values exactly.
NARROW_WIDENED: dict[int, type] = {
    TensorProto.BFLOAT16: np.float32, TensorProto.FLOAT8E4M3FN: np.float32,
    TensorProto.FLOAT8E4M3FNUZ: np.float32, TensorProto.FLOAT8E5M2: np.float32,
    TensorProto.FLOAT8E5M2FNUZ: np.float32, TensorProto.INT4: np.int8, TensorProto.UINT4: np.uint8,
    TensorProto.FLOAT4E2M1: np.float32, TensorProto.FLOAT8E8M0: np.float32,
}
#: numpy (ml_dtypes) dtype names of those types.
NARROW_NUMPY_NAMES: frozenset[str] = frozenset({
    "bfloat16", "float8_e4m3fn", "float8_e4m3fnuz", "float8_e5m2", "float8_e5m2fnuz", "int4", "uint4",
    "float4_e2m1fn", "float8_e8m0fnu",
})
