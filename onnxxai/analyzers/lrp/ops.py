"""The groups of ONNX op types LRP treats alike, each named once (as Zennit's ``types.py`` does for
torch module classes). Rules are chosen by ONNX op type, so every LRP module reads its groups here.
"""

from __future__ import annotations

__all__ = [
    "CONV_OPS", "DENSE_OPS", "LINEAR_OPS", "FOLDABLE_OPS", "ACTIVATIONS", "SCALING_OPS", "MOVE_OPS",
    "PROPORTIONAL_OPS", "ELEMENTWISE", "NON_RELU_ACTIVATIONS", "PRODUCTS", "BIAS_OPS", "PARAM_NAMES",
    "NO_RELEVANCE", "QUANTIZATION_OPS", "QUANTIZED_ROLES", "DYNAMIC_QUANTIZED", "FUSED_ROLES", "NCHWC_MOVES",
]

#: convolutional layers (the composites' "conv" rule)
CONV_OPS = ("Conv", "ConvTranspose")
#: dense layers (the composites' "dense" rule)
DENSE_OPS = ("Gemm", "MatMul")
#: every linear layer (first-layer rules such as Flat)
LINEAR_OPS = CONV_OPS + DENSE_OPS
#: layers a following BatchNormalization is folded into by canonization
FOLDABLE_OPS = frozenset({"Conv", "ConvTranspose", "Gemm"})

#: element-wise activations; relevance passes through them unchanged
ACTIVATIONS = (
    "Relu", "LeakyRelu", "PRelu", "Elu", "Selu", "Celu", "Sigmoid", "HardSigmoid", "HardSwish", "Tanh",
    "Softplus", "Softsign", "Gelu", "Mish", "ThresholdedRelu", "Clip", "Erf",
)
#: element-wise affine maps by constants (an unfolded BatchNormalization, Mul/Div by a constant, Neg)
SCALING_OPS = ("BatchNormalization", "Mul", "Div", "Neg")
#: com.microsoft.nchwc ops that only move values between NCHW and the blocked NCHWc order (a permutation,
#: plus the block's zero padding added or dropped): relevance moves as their gradient moves it
NCHWC_MOVES = ("ReorderInput", "ReorderOutput")
#: ops that move, copy or pick values (shape ops, max pooling: winner takes all)
MOVE_OPS = (
    "Identity", "Dropout", "Flatten", "Reshape", "Transpose", "Squeeze", "Unsqueeze", "Concat", "Split",
    "Slice", "Gather", "Pad", "DepthToSpace", "SpaceToDepth", "Expand", "Tile", "Cast",
    "MaxPool", "GlobalMaxPool", "ReduceMax",
) + NCHWC_MOVES
#: ops that distribute relevance in proportion to their inputs' contributions (sums, means, resizing)
PROPORTIONAL_OPS = ("Add", "Sub", "Sum", "AveragePool", "GlobalAveragePool", "ReduceMean", "ReduceSum", "Resize", "Upsample")
#: quantization and dequantization: for relevance an identity (relevance is conserved across a requantization)
QUANTIZATION_OPS = ("QuantizeLinear", "DequantizeLinear")
#: ops whose Pass rule is the identity backward (the other Pass ops keep their own gradient)
ELEMENTWISE = frozenset(ACTIVATIONS + SCALING_OPS + QUANTIZATION_OPS + ("Identity", "Dropout", "Cast"))

#: quantized integer ops (what onnxxai.proto.qdq fuses QDQ groups into, and QOperator files hold) -> the
#: float op each is for relevance: the op on dequantized inputs with dequantized weights and bias
#: (:mod:`onnxxai.analyzers.lrp.quantized`), given the rules of that op type
QUANTIZED_ROLES = {
    "QLinearConv": "Conv", "QLinearMatMul": "MatMul", "QGemm": "Gemm", "QLinearAdd": "Add", "QLinearMul": "Mul",
    "QLinearAveragePool": "AveragePool", "QLinearGlobalAveragePool": "GlobalAveragePool", "QLinearConcat": "Concat",
    "QLinearLeakyRelu": "LeakyRelu", "QLinearSigmoid": "Sigmoid", "QLinearSoftmax": "Softmax",
}
#: onnxruntime's fused layers, by (domain, op type; normalization writes com.microsoft as com_microsoft) -> the
#: float op each is for relevance: its linear part, then its fused activation passing relevance as the float
#: file's Relu node does (:mod:`onnxxai.analyzers.lrp.fused`)
FUSED_ROLES = {
    (domain, op): role
    for op, role, domains in (("FusedConv", "Conv", ("com.microsoft", "com_microsoft")),
                              ("FusedGemm", "Gemm", ("com.microsoft", "com_microsoft")),
                              ("Conv", "Conv", ("com.microsoft.nchwc", "com_microsoft_nchwc")))
    for domain in domains
}
#: integer ops of dynamic quantization (the activation's scale is computed from the activation at run
#: time, so the op has no fixed dequantized linear layer) and integer ops without an output scale
DYNAMIC_QUANTIZED = frozenset({
    "DynamicQuantizeLinear", "MatMulInteger", "ConvInteger", "DynamicQuantizeLSTM", "DynamicQuantizeMatMul",
    "MatMulIntegerToFloat", "QAttention", "DynamicQuantizeConv",
})

#: activations the model check reports (Clip counts as ReLU-like only with min 0, i.e. ReLU6)
NON_RELU_ACTIVATIONS = frozenset({
    "Sigmoid", "HardSigmoid", "Tanh", "Softplus", "Softsign", "Elu", "Selu", "Celu", "Gelu", "Mish",
    "HardSwish", "Erf", "ThresholdedRelu", "Softmax", "LogSoftmax", "Hardmax", "Exp", "Log", "Sqrt",
    "Abs", "Reciprocal", "Pow", "Sin", "Cos", "Clip",
})
#: ops that multiply their inputs: the model check refuses them when two inputs carry relevance
PRODUCTS = frozenset({"Mul", "Div", "MatMul", "Gemm", "Conv", "ConvTranspose", "Pow", "Einsum"})

#: ops whose constant operand is a bias (rules' parameter modifiers see it as "bias", not "weight")
BIAS_OPS = frozenset({"Add", "Sub", "Sum"})
#: the parameter name of each constant operand (by input position) of the layers that have both
PARAM_NAMES = {op: {1: "weight", 2: "bias"} for op in ("Conv", "ConvTranspose", "Gemm")}

#: ops whose outputs are integers or booleans computed from their input: no relevance flows through
NO_RELEVANCE = frozenset({
    "Shape", "Size", "ArgMax", "ArgMin", "NonZero", "Equal", "Greater", "GreaterOrEqual", "Less",
    "LessOrEqual", "Not", "And", "Or", "Xor", "IsNaN", "IsInf", "Sign", "Floor", "Ceil", "Round",
})
