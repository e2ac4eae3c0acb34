"""waste-edge: tell biodegradable from non-biodegradable waste in camera frames, on the edge."""

__version__ = "0.1.0"

# PEP 562 lazy exports: `import waste_edge` stays instant and imports neither numpy nor onnxruntime.
_LAZY = {
    "Classifier": "waste_edge.runtime.classifier",
    "open_source": "waste_edge.runtime.sources",
}
__all__ = ["Classifier", "open_source", "__version__"]


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'waste_edge' has no attribute {name!r}")
