"""Plumbing every stage shares: reading files safely, normalization passes, ONNX walks, names,
dtype tables, tensor specs and probe inputs, tensor layout."""
