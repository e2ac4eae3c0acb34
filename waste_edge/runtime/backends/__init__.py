"""Inference backends (Polygraphy's shape): a base `Runner`, one subpackage module per backend, the ONE ONNX
Runtime session loader (`onnxrt.py`), the TensorRT engine runner and its sidecar, and backend selection."""
