"""waste-edge: tell biodegradable from non-biodegradable waste in camera frames, on the edge."""

__version__ = "0.1.0"
