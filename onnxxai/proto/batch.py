"""The batch dimension of a file: fixed or dynamic, and relaxing a fixed one.

``torch.onnx.export`` without ``dynamic_axes`` (the most common export) writes a fixed batch of 1 on
every input and output. Many such graphs still compute per sample and run at any batch once the
declared dimension is made symbolic; others bake the batch into a Reshape constant and do not.
:func:`relax_batch` only rewrites the declaration; whether the rewritten graph really computes per
sample is for the caller to verify against per-sample runs of the original (see
:mod:`onnxxai.runtime`), never to assume.
"""

from __future__ import annotations

import onnx

__all__ = ["BATCH_PARAM", "fixed_batch", "relax_batch"]

#: The symbolic name given to a relaxed batch dimension.
BATCH_PARAM = "onnxxai_batch"


def _first_dims(values) -> list[onnx.TensorShapeProto.Dimension]:
    dims = []
    for value in values:
        tensor_type = value.type.tensor_type
        if tensor_type.HasField("shape") and len(tensor_type.shape.dim) > 0:
            dims.append(tensor_type.shape.dim[0])
    return dims


def fixed_batch(model: onnx.ModelProto) -> int | None:
    """The fixed first dimension shared by every true graph input that has a rank, or None when any
    input's first dimension is dynamic (or the inputs disagree, or there is no ranked input), and None
    when an output does not carry that axis first (a scalar, or a declared first dimension of another
    size: the first axis is then not a batch of samples, e.g. a Flatten over it or a full reduction)."""
    inits = {t.name for t in model.graph.initializer}
    dims = _first_dims(v for v in model.graph.input if v.name not in inits)
    if not dims or any(not d.HasField("dim_value") for d in dims):
        return None
    sizes = {int(d.dim_value) for d in dims}
    if len(sizes) != 1:
        return None
    batch = sizes.pop()
    if batch < 1:  # an empty first axis (dim 0) holds no samples: not a batch to run in chunks of
        return None
    for value in model.graph.output:
        tensor_type = value.type.tensor_type
        if not tensor_type.HasField("shape"):
            continue  # undeclared: the relaxation check decides
        shape = tensor_type.shape.dim
        if len(shape) == 0 or (shape[0].HasField("dim_value") and shape[0].dim_value != batch):
            return None
    return batch


def relax_batch(model: onnx.ModelProto) -> onnx.ModelProto | None:
    """A copy of ``model`` whose fixed batch dimension (see :func:`fixed_batch`) is symbolic on every
    true input and on every output whose first dimension has the same size; intermediate
    ``value_info`` shapes are dropped (they carry the old batch; onnxruntime re-infers them). None when
    the batch is not fixed. The caller's model is not modified."""
    batch = fixed_batch(model)
    if batch is None:
        return None
    relaxed = onnx.ModelProto()
    relaxed.CopyFrom(model)
    inits = {t.name for t in relaxed.graph.initializer}
    inputs = [v for v in relaxed.graph.input if v.name not in inits]
    for dim in _first_dims(inputs) + [d for d in _first_dims(relaxed.graph.output) if d.dim_value == batch]:
        dim.Clear()
        dim.dim_param = BATCH_PARAM
    del relaxed.graph.value_info[:]
    return relaxed
