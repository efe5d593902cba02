"""Serving bundles with Triton Inference Server: a model repository of bundles, the server, DeepStream."""
