"""`predict`: classify images, folders (recursive) and videos into a CSV or JSONL table.

A batch job over thousands of user files meets every kind of bad file, and gets killed half-way. So:
every input becomes rows (an unreadable file is a row with `error`, never a crash and never a missing
row), rows are written and flushed batch by batch (a killed run keeps what it finished), and images are
decoded by `waste_edge.data.decode.load_rgb_array` (RGB, EXIF-aware), the same decoder training and
evaluation use, so the labels match `waste-edge eval` on the same files. Decoding of the next batch
runs in worker threads while the current batch is classified.

Columns: `path`, `frame` (video frame number; empty for images), `label` (the class name from the model,
e.g. `B`), `confidence`, `p_<class>` per class, `error` (empty when the row has a prediction). JSONL rows
carry the same keys, `frame` only for videos and `error` only for failures.
"""

from __future__ import annotations

import csv
import json
import sys
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Iterator, Sequence

import cv2
import numpy as np
from tqdm import tqdm

from waste_edge.data.decode import DecodeError, load_rgb_array
from waste_edge.errors import WasteEdgeError
from waste_edge.runtime.classifier import Classifier
from waste_edge.runtime.sources import is_video_path, media_files

OUTPUT_SUFFIXES = (".csv", ".jsonl")


@dataclass(frozen=True)
class InputItem:
    path: Path
    kind: str  # image | video | error
    error: str = ""


@dataclass
class PredictSummary:
    out: str
    rows: int = 0
    predictions: int = 0
    errors: int = 0
    images: int = 0
    videos: int = 0
    video_frames: int = 0
    elapsed_s: float = 0.0
    labels: dict[str, int] = field(default_factory=dict)

    def summary(self) -> str:
        labels = ", ".join(f"{k} {v}" for k, v in sorted(self.labels.items())) or "none"
        rate = self.predictions / self.elapsed_s if self.elapsed_s > 0 else 0.0
        return (
            f"{self.rows} rows ({self.predictions} predictions, {self.errors} errors) from {self.images} images and "
            f"{self.videos} videos ({self.video_frames} frames) in {self.elapsed_s:.1f} s ({rate:.1f}/s) -> {self.out}\n"
            f"labels: {labels}"
        )


def expand_inputs(sources: Sequence[str | Path]) -> list[InputItem]:
    """Every file to classify, in a stable order: folders recursively, globs expanded, missing inputs as errors."""
    items: list[InputItem] = []
    seen: set[Path] = set()

    def add(path: Path) -> None:
        if path in seen:
            return
        seen.add(path)
        items.append(InputItem(path, "video" if is_video_path(path) else "image"))

    for src in sources:
        path = Path(str(src)).expanduser()
        if path.is_file():
            add(path)  # an explicitly named file is tried whatever its suffix; a non-image becomes an error row
            continue
        files = media_files(src, videos=True)
        if files is None:
            items.append(InputItem(path, "error", "file not found"))
        elif not files:
            what = "folder contains no images or videos" if path.is_dir() else "no image or video files match this pattern"
            items.append(InputItem(path, "error", what))
        for f in files or ():
            add(f)
    return items


class RowWriter:
    """CSV or JSONL rows, flushed after every batch; CSV to stdout when `out` is None or '-'."""

    def __init__(self, out: str | Path | None, classes: Sequence[str]) -> None:
        self.classes = list(classes)
        self.columns = ["path", "frame", "label", "confidence", *[f"p_{c}" for c in self.classes], "error"]
        self.to_stdout = out is None or str(out) == "-"
        self.name = "stdout" if self.to_stdout else str(out)
        self.jsonl = not self.to_stdout and Path(str(out)).suffix.lower() == ".jsonl"
        if not self.to_stdout and Path(str(out)).suffix.lower() not in OUTPUT_SUFFIXES:
            raise WasteEdgeError(f"{out}: output must end in .csv or .jsonl")
        if self.to_stdout:
            self._fh: IO[str] = sys.stdout
        else:
            path = Path(str(out))
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                self._fh = open(path, "w", encoding="utf-8", newline="")
            except OSError as e:
                raise WasteEdgeError(f"{path}: cannot write: {e.strerror or e}") from None
        if not self.jsonl:
            self._csv = csv.DictWriter(self._fh, fieldnames=self.columns, restval="", extrasaction="raise")
            self._csv.writeheader()
            self._fh.flush()

    def prediction_row(self, path: Path, probs: np.ndarray, frame: int | None = None) -> dict[str, Any]:
        i = int(probs.argmax())
        row: dict[str, Any] = {"path": str(path)}
        if frame is not None:
            row["frame"] = frame
        row["label"] = self.classes[i]
        row["confidence"] = round(float(probs[i]), 6)
        for c, p in zip(self.classes, probs):
            row[f"p_{c}"] = round(float(p), 6)
        return row

    @staticmethod
    def error_row(path: Path, error: str, frame: int | None = None) -> dict[str, Any]:
        row: dict[str, Any] = {"path": str(path)}
        if frame is not None:
            row["frame"] = frame
        row["error"] = error
        return row

    def write(self, rows: Sequence[dict[str, Any]]) -> None:
        if self.jsonl:
            for row in rows:
                self._fh.write(json.dumps(row, ensure_ascii=False) + "\n")
        else:
            self._csv.writerows(rows)
        self._fh.flush()

    def close(self) -> None:
        if not self.to_stdout:
            self._fh.close()


def _decode(path: Path) -> np.ndarray | str:
    try:
        return load_rgb_array(path)
    except DecodeError as e:
        return str(e)
    except Exception as e:  # a decoder bug on a hostile file must cost one row, not the run
        return f"cannot decode: {type(e).__name__}: {e}"


def _decoded_chunks(items: Sequence[InputItem], batch_size: int, pool: ThreadPoolExecutor) -> Iterator[tuple[Sequence[InputItem], list[np.ndarray | str]]]:
    """Chunks of decoded images, the next chunk decoding in `pool` while the caller classifies this one."""
    chunks = [items[i : i + batch_size] for i in range(0, len(items), batch_size)]
    pending: list[Future] = [pool.submit(_decode, it.path) for it in chunks[0]] if chunks else []
    for k, chunk in enumerate(chunks):
        ahead = [pool.submit(_decode, it.path) for it in chunks[k + 1]] if k + 1 < len(chunks) else []
        yield chunk, [f.result() for f in pending]
        pending = ahead


def _safe_proba(classifier: Classifier, frames: list[np.ndarray] | np.ndarray, channel_order: str) -> list[np.ndarray | str]:
    """Probabilities per frame; if the batch fails, frame by frame, so one bad frame costs one row."""
    try:
        return list(classifier.predict_proba(frames, channel_order))
    except Exception:
        pass
    out: list[np.ndarray | str] = []
    for f in frames:
        try:
            out.append(classifier.predict_proba(f, channel_order)[0])
        except Exception as e:
            msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            out.append(f"inference failed: {msg}")
    return out


def _video_frame_count(path: Path) -> int:
    cap = cv2.VideoCapture(str(path))
    try:
        return max(0, int(cap.get(cv2.CAP_PROP_FRAME_COUNT))) if cap.isOpened() else 0
    finally:
        cap.release()


def run_predict(
    classifier: Classifier,
    sources: Sequence[str | Path],
    out: str | Path | None = None,
    *,
    batch_size: int = 16,
    workers: int = 2,
    progress: bool = True,
) -> PredictSummary:
    """Classify every image and video frame under `sources`, writing one row each to `out` (.csv / .jsonl / stdout)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    items = expand_inputs(sources)
    writer = RowWriter(out, classifier.classes)
    summary = PredictSummary(out=writer.name)
    t0 = time.perf_counter()
    total = sum(1 for it in items if it.kind != "video") + sum(_video_frame_count(it.path) for it in items if it.kind == "video")
    bar = tqdm(total=total, unit="img", desc="predict", disable=not progress, file=sys.stderr, dynamic_ncols=True)

    def emit(rows: list[dict[str, Any]]) -> None:
        writer.write(rows)
        for row in rows:
            summary.rows += 1
            if "error" in row:
                summary.errors += 1
            else:
                summary.predictions += 1
                summary.labels[row["label"]] = summary.labels.get(row["label"], 0) + 1

    try:
        with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="decode") as pool:
            i = 0
            while i < len(items):
                item = items[i]
                if item.kind == "error":
                    emit([writer.error_row(item.path, item.error)])
                    bar.update(1)
                    i += 1
                elif item.kind == "video":
                    summary.videos += 1
                    _predict_video(classifier, item.path, writer, emit, bar, batch_size, summary)
                    i += 1
                else:
                    j = i
                    while j < len(items) and items[j].kind == "image":
                        j += 1
                    for chunk, decoded in _decoded_chunks(items[i:j], batch_size, pool):
                        _predict_images(classifier, chunk, decoded, writer, emit)
                        summary.images += len(chunk)
                        bar.update(len(chunk))
                    i = j
    finally:
        bar.close()
        writer.close()
        summary.elapsed_s = time.perf_counter() - t0
    return summary


def _predict_images(classifier: Classifier, chunk: Sequence[InputItem], decoded: list[np.ndarray | str], writer: RowWriter, emit: Any) -> None:
    ok = [k for k, d in enumerate(decoded) if not isinstance(d, str)]
    results: dict[int, np.ndarray | str] = {k: d for k, d in enumerate(decoded) if isinstance(d, str)}
    if ok:
        for k, res in zip(ok, _safe_proba(classifier, [decoded[k] for k in ok], "RGB")):  # type: ignore[misc]
            results[k] = res
    rows = []
    for k, item in enumerate(chunk):
        res = results[k]
        rows.append(writer.error_row(item.path, res) if isinstance(res, str) else writer.prediction_row(item.path, res))
    emit(rows)


def _predict_video(classifier: Classifier, path: Path, writer: RowWriter, emit: Any, bar: tqdm, batch_size: int, summary: PredictSummary) -> None:
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        cap.release()
        emit([writer.error_row(path, "cannot open video (unsupported format or corrupt file)")])
        return
    frames_read = 0
    try:
        batch: np.ndarray | None = None
        indices: list[int] = []
        n = 0
        while True:
            slot = batch[n] if batch is not None and n < batch.shape[0] else None
            ok, frame = cap.read(slot) if slot is not None else cap.read()
            if not ok or frame is None:
                break
            if batch is None or frame.shape != batch.shape[1:]:
                if n:  # size changed mid-stream: classify what we have first
                    _emit_video_batch(classifier, path, batch[:n], indices, writer, emit)  # type: ignore[index]
                    bar.update(n)
                    n, indices = 0, []
                batch = np.empty((batch_size, *frame.shape), dtype=np.uint8)
            if not np.shares_memory(frame, batch[n]):
                batch[n] = frame
            indices.append(frames_read)
            frames_read += 1
            n += 1
            if n == batch_size:
                _emit_video_batch(classifier, path, batch, indices, writer, emit)
                bar.update(n)
                n, indices = 0, []
        if n and batch is not None:
            _emit_video_batch(classifier, path, batch[:n], indices, writer, emit)
            bar.update(n)
    finally:
        cap.release()
    summary.video_frames += frames_read
    if frames_read == 0:
        emit([writer.error_row(path, "no frames could be decoded from this video")])


def _emit_video_batch(classifier: Classifier, path: Path, batch: np.ndarray, indices: list[int], writer: RowWriter, emit: Any) -> None:
    results = _safe_proba(classifier, batch, "BGR")
    emit([writer.error_row(path, r, f) if isinstance(r, str) else writer.prediction_row(path, r, f) for f, r in zip(indices, results)])
