"""`Classifier`: a fused model (ARCHITECTURE.md, contract 2) behind one call, `predict(frames)`, on the best backend here.

Everything that does not change between frames (metadata, class names, output names, the input contract,
whether channels must be flipped) is settled once at load time, so a frame costs a few attribute checks,
at most one channel flip into a reused buffer, and the inference itself. That is what lets the camera
loop stay within ~1 ms of pure inference time.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import cv2
import numpy as np

from PIL import Image

from waste_edge._options import option, threads as thread_count
from waste_edge._outputs import input_model
from waste_edge.data.geometry import PreprocessSpec, resize_crop
from waste_edge.errors import WasteEdgeError
from waste_edge.runtime.backends.base import BackendError, Runner
from waste_edge.runtime.backends.select import BACKEND_CHOICES, open_runner
from waste_edge.runtime.frames import FrameError, check_batch, check_channel_order, check_frame
from waste_edge.runtime.metadata import INPUT_NAME, OUTPUT_EMBEDDING, OUTPUT_PROBABILITIES, ModelMetadata
from waste_edge.runtime.model_path import resolve_model_path

MODEL_HELP = ("fused model: .onnx, or a TensorRT .engine with its .engine.json sidecar (written by `waste-edge export`); "
              "default: the embedded default model")
BACKEND_HELP = f"{', '.join(BACKEND_CHOICES)}; auto takes the best one available here, tensorrt > cuda > cpu (default: %(default)s)"


@dataclass(frozen=True)
class ModelOptions:
    """Which model runs where (the model option group of every verb that runs a fused model).

    `threads` is ONNX Runtime's intra-op thread count wherever the flag appears; PyTorch's is --torch-threads."""

    model: str | None = option(None, "--model", type=input_model, metavar="MODEL", help=MODEL_HELP)
    backend: str = option("auto", "--backend", choices=BACKEND_CHOICES, help=BACKEND_HELP)
    threads: int | None = option(None, "--threads", type=thread_count, metavar="N", help="ONNX Runtime intra-op threads (default: one per core)")


@dataclass(frozen=True)
class Prediction:
    """One frame's answer. `label` is the class name from the model (e.g. "B"); `index` its position."""

    label: str
    display_name: str
    confidence: float
    probabilities: dict[str, float] = field(hash=False)
    index: int


class ClassifierClosedError(WasteEdgeError, RuntimeError):
    """`predict` on a Classifier after `close()` (or after its `with` block)."""


class NonFiniteOutputError(BackendError):
    """The model answered NaN or infinite probabilities: an error for those frames, never a label
    (`argmax` of NaNs is 0, which would call every such frame the first class)."""


class Classifier:
    """Load a fused `.onnx` (or TensorRT `.engine`) model and classify HxWx3 uint8 frames.

    backend: "auto" (best available: tensorrt > cuda > cpu for ONNX), "cpu", "cuda" or "tensorrt".
    threads: ONNX Runtime intra-op threads (default: ORT's choice, one per physical core).
    Not meant for concurrent `predict` calls from several threads on one instance beyond what ORT allows;
    the reused conversion buffers are per thread, so that much is safe.
    """

    @classmethod
    def open(cls, options: ModelOptions) -> "Classifier":
        return cls(options.model, options.backend, threads=options.threads)

    def __init__(
        self,
        model_path: str | Path | None = None,
        backend: str = "auto",
        *,
        threads: int | None = None,
        session_config: Mapping[str, str] | None = None,
    ) -> None:
        self.path = resolve_model_path(model_path)
        self.runner: Runner = open_runner(self.path, backend, threads=threads, session_config=session_config)
        self.requested_backend = backend
        try:
            self.metadata = ModelMetadata.from_props(self.runner.custom_metadata())
            self._check_contract()
        except Exception:
            self.runner.deactivate()
            raise
        self.classes: list[str] = list(self.metadata.classes)
        self.display_names: list[str] = list(self.metadata.display_names)
        self.channel_order: str = self.metadata.channel_order
        self._outputs = [OUTPUT_PROBABILITIES]
        # Fetched only on request: an unused output of the graph costs nothing per frame (measured in benchmarks/adapt.py).
        self._outputs_emb = [OUTPUT_PROBABILITIES, OUTPUT_EMBEDDING]
        self._tls = threading.local()
        self._checked_width = False

    # -- load-time checks ------------------------------------------------------------------------------------

    def _check_contract(self) -> None:
        inputs = list(self.runner.input_info().values())
        image = inputs[0]
        shape = image.shape
        problems = []
        if len(inputs) != 1:
            problems.append(f"inputs are {[i.name for i in inputs]}, expected one")
        if image.name != INPUT_NAME:
            problems.append(f"input is named {image.name!r}, expected {INPUT_NAME!r}")
        if image.dtype != np.uint8:
            problems.append(f"input type is {image.dtype}, expected uint8")
        if len(shape) != 4 or shape[3] not in (None, 3):
            problems.append(f"input shape is {list(shape)}, expected [N, H, W, 3] (NHWC)")
        if OUTPUT_PROBABILITIES not in self.runner.output_names():
            problems.append(f"no {OUTPUT_PROBABILITIES!r} output")
        if problems:
            raise BackendError(f"{self.path.name} is not a waste-edge fused model: {'; '.join(problems)}")
        size = self.metadata.input_size
        if size is None and shape[1] is not None and shape[2] is not None:
            size = [shape[1], shape[2]]
        self.input_size: tuple[int, int] | None = (int(size[0]), int(size[1])) if size else None
        self.max_batch: int | None = shape[0]  # a graph exported with a fixed batch takes only that many
        self._shrink_spec = _shrinkable_spec(self.metadata.preprocess) if self.input_size is None else None

    # -- properties ------------------------------------------------------------------------------------------

    @property
    def has_embedding(self) -> bool:
        """Whether the model also outputs `embedding` (exported with `--with-embedding`)."""
        return OUTPUT_EMBEDDING in self.runner.output_names()

    @property
    def embedding_dim(self) -> int | None:
        return int(self.metadata.embedding["dim"]) if self.metadata.embedding else None

    @property
    def backend(self) -> str:
        return self.runner.backend

    @property
    def provider(self) -> str:
        return self.runner.provider

    def describe(self) -> str:
        size = f"{self.input_size[0]}x{self.input_size[1]}" if self.input_size else "any size"
        return (
            f"{self.path.name}: {self.metadata.encoder} {self.metadata.variant}, classes {', '.join(self.classes)}, "
            f"{self.channel_order} input ({size}), backend {self.backend} ({self.provider})"
        )

    def __repr__(self) -> str:
        return f"Classifier({str(self.path)!r}, backend={self.backend!r})"

    # -- frame preparation -----------------------------------------------------------------------------------

    def _buffer(self, key: str, shape: tuple[int, ...]) -> np.ndarray:
        """A per-thread scratch array reused while frames keep their size (no allocation per frame)."""
        bufs: dict[str, np.ndarray] | None = getattr(self._tls, "bufs", None)
        if bufs is None:
            bufs = self._tls.bufs = {}
        buf = bufs.get(key)
        if buf is None or buf.shape != shape:
            buf = bufs[key] = np.empty(shape, dtype=np.uint8)
        return buf

    def _to_input_size(self, frame: np.ndarray) -> np.ndarray:
        """A fixed-size model's frame: resized to its input (area when shrinking), unchanged when it fits."""
        if self.input_size is None or frame.shape[:2] == self.input_size:
            return frame
        h, w = self.input_size
        shrink = frame.shape[0] > h or frame.shape[1] > w
        return cv2.resize(frame, (w, h), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)

    def model_sized(self, frame: np.ndarray | Image.Image) -> np.ndarray:
        """`frame` (HxWx3 uint8, either channel order, or a decoded RGB PIL image) made no larger than what the
        model's preprocessing takes from it, with the same answer: batch jobs call it on each frame before
        batching, so their memory does not grow with the source's resolution (a 6000x4000 photo holds 72 MB;
        what the model sees, 150 KB). A PIL image is cropped as it is, without a full-size array copy.

        - fixed-size models: the resize `predict` does anyway (the same call, so the same pixels);
        - dynamic models whose `PreprocessSpec` is box_crop: the PIL reference crop and reduce, which the graph
          reproduces bit-exactly, so the graph's own geometry on the result is the identity;
        - shortest (CLIP, antialiased bicubic / bilinear): the PIL reference resize and crop; the graph is
          within one grey level of it (its documented tolerance), so the answer is the reference's;
        - anything else (an unknown spec, a frame already no larger than the model's input): unchanged."""
        spec = self._shrink_spec
        if isinstance(frame, Image.Image):
            if spec is not None and frame.width * frame.height > spec.size * spec.size:
                return np.asarray(resize_crop(frame, spec), dtype=np.uint8)
            frame = np.ascontiguousarray(np.asarray(frame, dtype=np.uint8))
        if self.input_size is not None:
            return self._to_input_size(frame)
        if spec is None or frame.ndim != 3 or frame.shape[0] * frame.shape[1] <= spec.size * spec.size:
            return frame
        return np.asarray(resize_crop(Image.fromarray(np.ascontiguousarray(frame)), spec), dtype=np.uint8)

    def _prepare(self, frame: np.ndarray, flip: bool, out: np.ndarray | None = None) -> np.ndarray:
        """Resize (fixed-size models only) and flip channels (only if the model wants the other order)."""
        frame = self._to_input_size(frame)
        if flip:
            dst = out if out is not None else self._buffer("flip", frame.shape)
            return cv2.cvtColor(frame, cv2.COLOR_BGR2RGB, dst=dst)  # the same swap serves RGB->BGR
        if out is not None:
            np.copyto(out, frame)
            return out
        return frame if frame.flags.c_contiguous else np.ascontiguousarray(frame)

    def _run(self, batch: np.ndarray, names: list[str]) -> list[np.ndarray]:
        got = self.runner.infer({INPUT_NAME: batch}, names)
        out = [got[n] for n in names]
        if not self._checked_width:
            probs = out[0]
            if probs.ndim != 2 or probs.shape[1] != len(self.classes):
                raise BackendError(f"{self.path.name}: probabilities have shape {probs.shape}, expected [N, {len(self.classes)}] (metadata lists {len(self.classes)} classes)")
            self._checked_width = True
        if not np.isfinite(out[0]).all():  # ~1 us for [N, K]; see runtime/model_check.py
            bad = int((~np.isfinite(out[0])).any(axis=1).sum())
            raise NonFiniteOutputError(f"{self.path.name} answered non-finite probabilities (NaN or inf) for {bad} of {len(out[0])} frame(s)")
        return out

    def _run_batch(self, batch: np.ndarray, names: list[str]) -> list[np.ndarray]:
        """Run an NxHxWx3 model-ready batch, split to the graph's fixed batch size if it has one."""
        n = batch.shape[0]
        fixed = self.max_batch
        if fixed is None or fixed == n:
            return self._run(batch, names)
        parts = []
        for start in range(0, n, fixed):
            chunk = batch[start : start + fixed]
            if chunk.shape[0] < fixed:  # pad the tail with copies of its last frame, drop their answers
                pad = np.repeat(chunk[-1:], fixed - chunk.shape[0], axis=0)
                parts.append([o[: chunk.shape[0]] for o in self._run(np.concatenate([chunk, pad]), names)])
            else:
                parts.append(self._run(chunk, names))
        return [np.concatenate(col) for col in zip(*parts)]

    # -- public API ------------------------------------------------------------------------------------------

    def predict_proba(self, frames: Any, channel_order: str = "BGR", *, with_embedding: bool = False) -> Any:
        """Per-class probabilities, float32 [N, K], for one frame (N=1), an NxHxWx3 array or a list of frames.

        `with_embedding=True` returns `(probabilities, embedding)`, the second float32 [N, D]: the features the
        head sees, from a model exported with `--with-embedding` (a `BackendError` otherwise).
        """
        if not self.runner.is_active:
            raise ClassifierClosedError(f"{self.path.name}: this Classifier is closed; create a new one (or use it inside its `with` block)")
        names = self._outputs
        if with_embedding:
            if not self.has_embedding:
                raise BackendError(f"{self.path.name} has no {OUTPUT_EMBEDDING!r} output: export it with `waste-edge export RUN --with-embedding`")
            names = self._outputs_emb
        flip = check_channel_order(channel_order) != self.channel_order
        if isinstance(frames, np.ndarray) and frames.ndim == 4:
            check_batch(frames)
            if not flip and (self.input_size is None or frames.shape[1:3] == self.input_size):
                out = self._run_batch(np.ascontiguousarray(frames), names)
                return (out[0], out[1]) if with_embedding else out[0]
            frames = list(frames)
        if isinstance(frames, (list, tuple)):
            out = self._predict_list(frames, flip, names)
        else:
            out = self._run_batch(self._prepare(check_frame(frames), flip)[None], names)
        return (out[0], out[1]) if with_embedding else out[0]

    def _predict_list(self, frames: Sequence[Any], flip: bool, names: list[str]) -> list[np.ndarray]:
        if not frames:
            raise FrameError("no frames given (empty list)")
        for i, f in enumerate(frames):
            try:
                check_frame(f)
            except FrameError as e:
                raise FrameError(f"frame {i}: {e}") from None
        # Frames of different sizes cannot share one NHWC tensor: run one batch per size, keep the order.
        groups: dict[tuple[int, ...], list[int]] = {}
        for i, f in enumerate(frames):
            shape = (*self.input_size, 3) if self.input_size is not None else f.shape
            groups.setdefault(tuple(shape), []).append(i)
        outs: list[np.ndarray] = []
        for shape, idx in groups.items():
            batch = np.empty((len(idx), *shape), dtype=np.uint8)
            for j, i in enumerate(idx):
                self._prepare(frames[i], flip, out=batch[j])
            res = self._run_batch(batch, names)
            if not outs:
                outs = [np.empty((len(frames), *r.shape[1:]), dtype=r.dtype) for r in res]
            for o, r in zip(outs, res):
                o[idx] = r
        return outs

    def result(self, probs: np.ndarray) -> Prediction:
        """Wrap one row of probabilities as a `Prediction`."""
        i = int(probs.argmax())
        return Prediction(
            label=self.classes[i],
            display_name=self.display_names[i],
            confidence=float(probs[i]),
            probabilities={c: float(p) for c, p in zip(self.classes, probs)},
            index=i,
        )

    def predict(self, frames: Any, channel_order: str = "BGR") -> Prediction | list[Prediction]:
        """Classify one HxWx3 uint8 frame (-> Prediction) or a batch / list of frames (-> list[Prediction]).

        `channel_order` is the order of the frames you pass (OpenCV gives BGR, PIL gives RGB); channels are
        flipped only when the model was exported for the other order. Bad frames raise `FrameError`
        (a ValueError) naming what is wrong.
        """
        probs = self.predict_proba(frames, channel_order)
        single = not isinstance(frames, (list, tuple)) and not (isinstance(frames, np.ndarray) and frames.ndim == 4)
        if single:
            return self.result(probs[0])
        return [self.result(row) for row in probs]

    def close(self) -> None:
        if self.runner.is_active:
            self.runner.deactivate()

    def __enter__(self) -> "Classifier":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _shrinkable_spec(preprocess: Mapping[str, Any]) -> PreprocessSpec | None:
    """The model's `PreprocessSpec` when `Classifier.model_sized` may apply it on PIL: box_crop (the graph is
    bit-exact with PIL), or shortest with an antialiased bicubic / bilinear resize (within one grey level). None
    for anything else (a test model's own preprocessing, a spec this version does not know)."""
    try:
        spec = PreprocessSpec.from_dict(preprocess)
    except (KeyError, TypeError, ValueError):
        return None
    if spec.size < 1 or (spec.resize_mode == "shortest" and not (spec.antialias and spec.interpolation in ("bicubic", "bilinear"))):
        return None
    return spec
