"""The groups of ONNX op types LRP treats alike, each named once (as Zennit's ``types.py`` does for
torch module classes). Rules are chosen by ONNX op type, so every LRP module reads its groups here.
"""

from __future__ import annotations

__all__ = [
    "CONV_OPS", "DENSE_OPS", "LINEAR_OPS", "FOLDABLE_OPS", "ACTIVATIONS", "SCALING_OPS", "MOVE_OPS",
    "PROPORTIONAL_OPS", "ELEMENTWISE", "NON_RELU_ACTIVATIONS", "PRODUCTS", "BIAS_OPS", "PARAM_NAMES",
    "NO_RELEVANCE",
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
#: ops that move, copy or pick values (shape ops, max pooling: winner takes all)
MOVE_OPS = (
    "Identity", "Dropout", "Flatten", "Reshape", "Transpose", "Squeeze", "Unsqueeze", "Concat", "Split",
    "Slice", "Gather", "Pad", "DepthToSpace", "SpaceToDepth", "Expand", "Tile", "Cast",
    "MaxPool", "GlobalMaxPool", "ReduceMax",
)
#: ops that distribute relevance in proportion to their inputs' contributions (sums, means, resizing)
PROPORTIONAL_OPS = ("Add", "Sub", "Sum", "AveragePool", "GlobalAveragePool", "ReduceMean", "ReduceSum", "Resize", "Upsample")
#: ops whose Pass rule is the identity backward (the other Pass ops keep their own gradient)
ELEMENTWISE = frozenset(ACTIVATIONS + SCALING_OPS + ("Identity", "Dropout", "Cast"))

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
