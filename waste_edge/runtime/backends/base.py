"""The runner template every backend follows (Polygraphy's `BaseRunner`): `activate()`, `infer(feed)`, `deactivate()`.

The base does the bookkeeping once, so a backend only writes what differs: `activate_impl` (load the model,
allocate sessions / device buffers), `infer_impl` (run one batch), `deactivate_impl` (release), and what the
loaded model declares (`input_info`, `output_names`, `custom_metadata`). `infer` checks the feed against the
declared inputs before a backend sees it, so a wrong dtype or rank is one clear `FeedError` naming the input,
not a crash inside ONNX Runtime or a TensorRT shape error.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from waste_edge.errors import WasteEdgeError


class BackendError(WasteEdgeError):
    """The requested backend cannot run here, or the model file cannot be loaded by it."""


class FeedError(BackendError, ValueError):
    """A feed that does not match the model's declared inputs (missing name, dtype, rank or fixed dimension)."""


@dataclass(frozen=True)
class TensorInfo:
    """One declared input: name, numpy dtype and shape (None where a dimension is dynamic)."""

    name: str
    dtype: np.dtype
    shape: tuple[int | None, ...]

    def check(self, array: Any) -> None:
        """`FeedError` unless `array` is a numpy array this input accepts."""
        if not isinstance(array, np.ndarray):
            raise FeedError(f"input {self.name!r} must be a numpy array, got {type(array).__name__}")
        if array.dtype != self.dtype:
            raise FeedError(f"input {self.name!r} has dtype {array.dtype}, the model declares {self.dtype}")
        if array.ndim != len(self.shape):
            raise FeedError(f"input {self.name!r} has shape {list(array.shape)}, the model declares rank {len(self.shape)} {list(self.shape)}")
        for got, want in zip(array.shape, self.shape):
            if want is not None and got != want:
                raise FeedError(f"input {self.name!r} has shape {list(array.shape)}, the model declares {list(self.shape)}")


class Runner(ABC):
    """A loaded model that maps a feed dict of numpy arrays to a dict of output arrays; a context manager."""

    backend: str = ""  # the backend name of the selection table (cpu, cuda, tensorrt)

    def __init__(self, name: str) -> None:
        self.name = name  # for messages: usually the model file's name
        self.provider = ""  # what really runs it (ONNX Runtime's chosen provider, or the native engine)
        self.is_active = False

    # -- the template ---------------------------------------------------------------------------------------

    def activate(self) -> None:
        """Load the model and allocate what inference needs; a no-op when already active."""
        if self.is_active:
            return
        self.activate_impl()
        self.is_active = True

    def deactivate(self) -> None:
        """Release what `activate` allocated; the runner can be activated again. A no-op when inactive."""
        if not self.is_active:
            return
        try:
            self.deactivate_impl()
        finally:
            self.is_active = False

    def infer(self, feed: Mapping[str, np.ndarray], outputs: Sequence[str] | None = None, *, check_inputs: bool = True) -> dict[str, np.ndarray]:
        """Run one batch; the requested outputs (default: all) by name. The feed is checked unless told not to."""
        if not self.is_active:
            raise BackendError(f"{self.name}: the {self.backend or 'model'} runner is not active: call activate() first")
        if check_inputs:
            self.check_feed(feed)
        return self.infer_impl(feed, outputs)

    def check_feed(self, feed: Mapping[str, np.ndarray]) -> None:
        declared = self.input_info()
        missing = [n for n in declared if n not in feed]
        extra = [n for n in feed if n not in declared]
        if missing or extra:
            raise FeedError(
                f"{self.name}: the feed names {sorted(feed)}, the model declares {list(declared)}"
                + (f" (missing {missing})" if missing else "") + (f" (unknown {extra})" if extra else "")
            )
        for name, info in declared.items():
            info.check(feed[name])

    def __enter__(self) -> "Runner":
        self.activate()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.deactivate()

    # -- what a backend implements -------------------------------------------------------------------------

    @abstractmethod
    def activate_impl(self) -> None:
        ...

    @abstractmethod
    def deactivate_impl(self) -> None:
        ...

    @abstractmethod
    def infer_impl(self, feed: Mapping[str, np.ndarray], outputs: Sequence[str] | None) -> dict[str, np.ndarray]:
        ...

    @abstractmethod
    def input_info(self) -> dict[str, TensorInfo]:
        """The declared inputs, in the model's order (valid while active)."""

    @abstractmethod
    def output_names(self) -> list[str]:
        ...

    @abstractmethod
    def custom_metadata(self) -> dict[str, str]:
        """The model's waste-edge metadata as the flat string map `ModelMetadata.from_props` reads."""
