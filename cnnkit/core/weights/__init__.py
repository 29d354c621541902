"""Weights files: checkpoints, published files (fetched, hash-checked), their formats and class names."""
