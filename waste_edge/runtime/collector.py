"""Collect the frames the model is unsure about, for a person to label and `adapt` to learn from.

`Collector.offer()` runs on the camera loop's thread, once per classified frame, and must never make it wait:
it only compares the decision confidence with the threshold, applies the rate limit and the caps, copies
the frame and hands it to a bounded queue without blocking (a full queue drops the frame and counts it).
A background writer thread does the rest: a 64-bit difference hash (dHash) of a 9x8 grey thumbnail, a
comparison with the hashes of the most recent saves (a near duplicate is skipped: a bin camera sees the same
uncertain object for many seconds), the JPEG encoding, and `runtime.collection.write_frame`, which writes the
image and its sidecar as the collection folder's contract says (ARCHITECTURE.md). `CollectFrames` is the sink
through which a frame loop (`runtime/pipeline.py`) offers its frames.

The caps hold for the folder, not for one run: the frames and bytes already in it count, so restarting the
camera never grows a collection past `max_frames` or `max_mb`. dHash needs only OpenCV (the runtime may not
import imagehash); its cost lies on the writer thread, which on a 640x480 frame spends ~1 ms on hashing and
~5 ms on the JPEG.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, ClassVar, Sequence

import cv2
import numpy as np

from waste_edge._io import file_sha256, list_images
from waste_edge._options import float_in, int_in, option, probability
from waste_edge._outputs import apart_folder
from waste_edge.errors import WasteEdgeError
from waste_edge.runtime.collection import SIDECAR_SUFFIX, FrameRecord, read_dhash, read_sidecar, write_frame
from waste_edge.runtime.observations import FrameResult
from waste_edge.runtime.pipeline import Sink

log = logging.getLogger(__name__)


class CollectError(WasteEdgeError):
    """Collection cannot start (folder not writable, bad settings)."""


COLLECT_HELP = ("Save frames whose decision confidence is below --collect-below as JPEG + JSON sidecar into DIR,\n"
                "from a background thread (the loop never waits; near duplicates of recent saves are skipped).\n"
                "Label them in DIR/labels.csv (file,label), then run `waste-edge adapt --data DIR`.")


@dataclass
class CollectConfig:
    """Collection of uncertain frames (the collection option group of `camera` and `serve`)."""

    GROUP: ClassVar[tuple[str, str | None]] = ("collection of uncertain frames", COLLECT_HELP)

    folder: Path = option(None, "--collect", type=apart_folder, metavar="DIR", help="collection folder (created if missing)")
    below: float = option(0.8, "--collect-below", type=probability, metavar="P",
                          help="save frames with confidence below P (default: %(default)s)")
    max_frames: int = option(1000, "--collect-max", type=int_in(1, 1_000_000), metavar="N",
                             help="at most N frames in the folder, earlier runs included (default: %(default)s)")
    max_mb: float = option(500.0, "--collect-max-mb", type=float_in(0.0, 1_000_000.0, open_lo=True), metavar="MB",
                           help="at most MB of disk in the folder (default: %(default)s)")
    every_s: float = option(1.0, "--collect-every", type=float_in(0.0, 86_400.0), metavar="S",
                            help="at most one saved frame per S seconds (default: %(default)s)")
    dedup_bits: int = option(6, "--collect-dedup", type=int_in(-1, 64), metavar="BITS",
                             help="skip frames within BITS of a recent save's 64-bit dHash; -1 keeps all (default: %(default)s)")
    dedup_recent: int = 64  # how many recent saves a new frame is compared with
    queue_size: int = 8  # frames waiting for the writer; a full queue drops (never blocks)
    jpeg_quality: int = 92

    def validate(self) -> None:
        if self.folder is None:
            raise CollectError("collection needs a folder (--collect DIR)")
        if not 0.0 < self.below <= 1.0:
            raise CollectError(f"--collect-below must be in (0, 1], got {self.below}")
        if self.max_frames < 1 or self.max_mb <= 0:
            raise CollectError("--collect-max and --collect-max-mb must be positive")
        if self.every_s < 0:
            raise CollectError(f"--collect-every must be >= 0 seconds, got {self.every_s}")
        if not -1 <= self.dedup_bits <= 64:
            raise CollectError(f"the near-duplicate radius must be -1 (off) to 64 bits, got {self.dedup_bits}")
        if self.queue_size < 1 or not 1 <= self.jpeg_quality <= 100:
            raise CollectError("queue size must be >= 1 and JPEG quality 1-100")


@dataclass
class CollectStats:
    uncertain: int = 0  # frames below the threshold (offered for collection)
    rate_limited: int = 0  # uncertain frames inside the --collect-every window
    dropped: int = 0  # frames the full queue could not take (the loop never waits)
    near_duplicates: int = 0  # skipped: too close to a recent save
    capped: int = 0  # not saved because the folder reached --collect-max / --collect-max-mb
    write_errors: int = 0
    saved: int = 0
    bytes_written: int = 0
    folder_frames: int = 0  # images in the folder now, earlier runs included
    folder_bytes: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def format(self) -> str:
        return (
            f"collected {self.saved} frames ({self.bytes_written / 1e6:.1f} MB) of {self.uncertain} uncertain; "
            f"skipped: near duplicates {self.near_duplicates}, rate limit {self.rate_limited}, caps {self.capped}, "
            f"queue full {self.dropped}, write errors {self.write_errors}; folder now {self.folder_frames} frames, "
            f"{self.folder_bytes / 1e6:.1f} MB"
        )


def adapt_hint(folder: str | Path, model: str | None) -> str:
    """What to do with a collection folder next (printed when a collecting loop ends)."""
    flag = f" --model {model}" if model else ""
    stem = Path(model).stem if model else "default"
    return f"label them in {Path(folder) / 'labels.csv'} (file,label), then: waste-edge adapt{flag} --data {folder} --out {stem}-adapted.onnx"


# -- near-duplicate hash -----------------------------------------------------------------------------------


# Grey levels a thumbnail gradient must exceed to set its bit. Plain dHash takes the sign of every gradient,
# and in flat areas (an empty bin, a wall) the sign of a near-zero gradient is decided by sensor noise: the
# same scene then differs by many bits. With the dead zone flat areas hash to 0 in every frame.
DHASH_DEAD_ZONE = 2


def dhash64(frame: np.ndarray, channel_order: str = "BGR") -> int:
    """64-bit difference hash: which horizontal gradients of a 9x8 area-averaged grey thumbnail rise.

    Area averaging makes it blind to sensor noise and JPEG artefacts and sensitive to what moved in the
    picture: the same scene a second later differs by a few bits, a different object by many more.
    """
    if frame.ndim == 3:
        code = cv2.COLOR_BGR2GRAY if channel_order == "BGR" else cv2.COLOR_RGB2GRAY
        frame = cv2.cvtColor(frame, code)
    small = cv2.resize(frame, (9, 8), interpolation=cv2.INTER_AREA).astype(np.int16)
    bits = (small[:, 1:] - small[:, :-1] > DHASH_DEAD_ZONE).ravel()
    return int.from_bytes(np.packbits(bits).tobytes(), "big")


def hamming(a: int, b: int) -> int:
    return (a ^ b).bit_count()


# -- the collector -------------------------------------------------------------------------------------------

@dataclass
class _Item:
    frame: np.ndarray
    probs: np.ndarray
    confidence: float
    wall: float
    index: int | None
    channel_order: str
    model_sha256: str
    model_name: str
    extra: dict[str, Any] = field(default_factory=dict)


class Collector:
    """Saves uncertain frames of one camera into a collection folder from a background thread.

    Owned by whoever runs the loop (the `camera` verb, or the service): open it, call `offer()` per frame,
    `close()` at the end (or use it as a context manager), which lets the writer finish what is queued.
    `set_model()` changes the model sha256 recorded for later frames (the service's hot swap).
    """

    def __init__(
        self,
        config: CollectConfig,
        *,
        classes: Sequence[str],
        model_sha256: str,
        model_name: str = "",
        camera: str = "camera",
    ) -> None:
        config.validate()
        self.config = config
        self.folder = Path(config.folder)
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            probe = self.folder / ".waste-edge-write-test"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as e:
            raise CollectError(f"--collect {self.folder}: cannot write there ({e.strerror or e})") from None
        self.classes = list(classes)
        self.camera = camera
        self._model = (model_sha256, model_name)
        self.stats = CollectStats()
        self._recent: deque[int] = deque(maxlen=max(1, config.dedup_recent))
        self._scan_folder()
        self._capped = self._over_caps()
        self._last_offer = -float("inf")
        self._queue: queue.Queue[_Item | None] = queue.Queue(maxsize=config.queue_size)
        self._warned_cap = False
        self._thread = threading.Thread(target=self._writer, name="waste-edge collector", daemon=True)
        self._thread.start()

    # -- loop side (must stay cheap) -------------------------------------------------------------------

    def offer(
        self,
        frame: np.ndarray,
        probs: np.ndarray,
        confidence: float,
        *,
        index: int | None = None,
        channel_order: str = "BGR",
        extra: dict[str, Any] | None = None,
    ) -> bool:
        """Queue `frame` for saving if its decision `confidence` is below the threshold; never blocks.

        Returns whether it was queued. The frame is copied, so the caller may draw on it afterwards.
        """
        if confidence >= self.config.below:
            return False
        self.stats.uncertain += 1
        if self._capped:
            self.stats.capped += 1
            return False
        now = time.monotonic()
        if now - self._last_offer < self.config.every_s:
            self.stats.rate_limited += 1
            return False
        sha, name = self._model
        item = _Item(np.array(frame, copy=True), np.array(probs, dtype=np.float64, copy=True), float(confidence),
                     time.time(), index, channel_order, sha, name, dict(extra or {}))
        try:
            self._queue.put_nowait(item)
        except queue.Full:
            self.stats.dropped += 1
            return False
        self._last_offer = now
        return True

    @classmethod
    def for_model(cls, config: CollectConfig, model_path: str | Path, classes: Sequence[str], camera: str) -> "Collector":
        """A collector whose sidecars name `model_path` (its sha256 and file name), the usual way to open one."""
        return cls(config, classes=classes, model_sha256=file_sha256(model_path), model_name=Path(model_path).name, camera=camera)

    @property
    def model_sha256(self) -> str:
        """The model sha256 the sidecars of the next frames will name."""
        return self._model[0]

    def set_model(self, sha256: str, name: str = "") -> None:
        self._model = (sha256, name)

    # -- writer side -------------------------------------------------------------------------------------

    def _scan_folder(self) -> None:
        """Count what the folder already holds and remember the latest saves' hashes (dedup across restarts)."""
        images = list_images(self.folder)
        total = 0
        for p in images:
            for f in (p, p.with_suffix(SIDECAR_SUFFIX)):
                try:
                    total += f.stat().st_size
                except OSError:
                    pass
        self.stats.folder_frames, self.stats.folder_bytes = len(images), total
        for p in images[-self._recent.maxlen:]:  # collected names sort by time
            h = read_dhash(read_sidecar(p))
            if h is not None:
                self._recent.append(h)

    def _over_caps(self) -> bool:
        s, c = self.stats, self.config
        return s.folder_frames >= c.max_frames or s.folder_bytes >= c.max_mb * 1e6

    def _writer(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            try:
                self._save(item)
            except Exception as e:  # a full disk or a bad frame must not kill collection, nor the loop
                self.stats.write_errors += 1
                if self.stats.write_errors <= 3:
                    log.warning("collect: cannot save a frame to %s: %s", self.folder, e)

    def _save(self, item: _Item) -> None:
        h = dhash64(item.frame, item.channel_order)
        if self.config.dedup_bits >= 0 and any(hamming(h, r) <= self.config.dedup_bits for r in self._recent):
            self.stats.near_duplicates += 1
            return
        if self._over_caps():
            self._capped = True
            self.stats.capped += 1
            if not self._warned_cap:
                self._warned_cap = True
                log.warning("collect: %s is full (%d frames, %.1f MB); no more frames are saved", self.folder,
                            self.stats.folder_frames, self.stats.folder_bytes / 1e6)
            return
        frame = item.frame if item.channel_order == "BGR" else cv2.cvtColor(item.frame, cv2.COLOR_RGB2BGR)
        ok, jpeg = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, self.config.jpeg_quality])
        if not ok:
            raise CollectError("JPEG encoding failed")
        probs = {c: round(float(p), 6) for c, p in zip(self.classes, item.probs)}
        best = int(np.argmax(item.probs))
        record = FrameRecord(
            time=datetime.fromtimestamp(item.wall, timezone.utc), camera=self.camera, frame=item.index, model_sha256=item.model_sha256,
            model=item.model_name, probabilities=probs, prediction=self.classes[best] if best < len(self.classes) else None,
            confidence=item.confidence, threshold=self.config.below, width=int(frame.shape[1]), height=int(frame.shape[0]), dhash=h,
            extra=item.extra,
        )
        _, size = write_frame(self.folder, jpeg.tobytes(), record, self.stats.saved)
        self._recent.append(h)
        self.stats.saved += 1
        self.stats.bytes_written += size
        self.stats.folder_frames += 1
        self.stats.folder_bytes += size

    # -- lifetime ----------------------------------------------------------------------------------------

    def close(self, timeout: float = 10.0) -> CollectStats:
        """Let the writer save what is queued, then stop it; returns the final counts."""
        if self._thread.is_alive():
            try:
                self._queue.put(None, timeout=timeout)
            except queue.Full:
                log.warning("collect: writer did not drain its queue within %.0f s", timeout)
            self._thread.join(timeout)
        return self.stats

    def __enter__(self) -> "Collector":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class CollectFrames(Sink):
    """Offers every classified frame of a loop to a `Collector` (raw pixels, before any overlay).

    When the frame was classified by another model than the collector last recorded (the service's hot swap),
    later sidecars name the new one (`model_name()` gives its file name)."""

    name = "collect"
    reads_pixels = True

    def __init__(self, collector: Collector, model_name: Callable[[], str] | None = None) -> None:
        self.collector = collector
        self.model_name = model_name

    def on_frame(self, result: FrameResult) -> None:
        c = self.collector
        if result.model_sha256 is not None and result.model_sha256 != c.model_sha256:
            c.set_model(result.model_sha256, self.model_name() if self.model_name is not None else "")
        c.offer(result.image.raw, result.probs, result.decision.confidence, index=result.info.index,
                channel_order=result.image.channel_order)
