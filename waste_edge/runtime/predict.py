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
import io
import json
import sys
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Callable, ClassVar, Iterator, NamedTuple, Sequence

import cv2
import numpy as np
from tqdm import tqdm

from waste_edge._io import special_kind, write_whole
from waste_edge._options import common
from waste_edge._outputs import check_output, csv_cell, is_broken_pipe
from waste_edge.data.decode import DecodeError, load_rgb, load_rgb_array
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
        if path.exists() and not path.is_dir():  # a FIFO or a device (/dev/urandom): a row with the reason, never read
            items.append(InputItem(path, "error", f"not a regular file ({special_kind(path.stat().st_mode)})"))
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
    """CSV or JSONL rows, flushed after every batch; CSV to stdout when `out` is None or '-'.

    Nothing written can look whole when it is not: each batch is encoded first, then written and flushed
    as one block; when the write fails (disk full, quota) the file is cut back to the end of the last whole
    row and the run stops with a one-line error. Paths that are not valid UTF-8 round-trip: a CSV cell holds
    the file name's original bytes (surrogateescape), a JSONL string holds them as \\udcXX escapes, which
    `json.loads` + `os.fsencode` turn back into the same bytes. CSV text cells that a spreadsheet would run
    as a formula (= + - @, tab, CR first) are prefixed with ' as OWASP recommends (CSV only)."""

    def __init__(self, out: str | Path | None, classes: Sequence[str]) -> None:
        self.classes = list(classes)
        self.columns = ["path", "frame", "label", "confidence", *[f"p_{c}" for c in self.classes], "error"]
        self.to_stdout = out is None or str(out) == "-"
        self.name = "stdout" if self.to_stdout else str(out)
        self.jsonl = not self.to_stdout and Path(str(out)).suffix.lower() == ".jsonl"
        self.rows_written = 0
        self._good = 0  # bytes of whole rows in the file
        if not self.to_stdout and Path(str(out)).suffix.lower() not in OUTPUT_SUFFIXES:
            raise WasteEdgeError(f"{out}: output must end in .csv or .jsonl")
        if self.to_stdout:
            sys.stdout.flush()
            self._fh: IO[bytes] = sys.stdout.buffer
        else:
            path = Path(str(out))
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                self._fh = open(path, "wb", buffering=0)  # unbuffered: what failed to write is never flushed later
            except OSError as e:
                raise WasteEdgeError(f"{path}: cannot write: {e.strerror or e}") from None
        if not self.jsonl:
            self._block([dict(zip(self.columns, self.columns))], header=True)

    def _encode(self, rows: Sequence[dict[str, Any]], header: bool = False) -> bytes:
        if self.jsonl:
            text = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
            return text.encode("utf-8", "backslashreplace")  # a lone surrogate becomes the JSON escape \\udcXX
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=self.columns, restval="", extrasaction="raise", lineterminator="\r\n")
        w.writerows({k: csv_cell(v) for k, v in row.items()} for row in rows)
        return buf.getvalue().encode("utf-8", "surrogateescape")

    def _block(self, rows: Sequence[dict[str, Any]], header: bool = False) -> None:
        data = self._encode(rows, header)
        try:
            self._good = write_whole(self._fh, data, self._good)  # a failed write leaves only whole rows
        except OSError as e:
            if is_broken_pipe(e) or self.to_stdout:
                raise
            raise WasteEdgeError(f"{self.name}: cannot write: {e.strerror or e}; it holds the {self.rows_written} whole rows written before") from None
        if not header:
            self.rows_written += len(rows)

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
        if rows:
            self._block(rows)

    def close(self) -> None:
        if not self.to_stdout:
            try:
                self._fh.close()
            except OSError:
                pass


def _decode(path: Path, shrink: Callable[[Any], np.ndarray] | None = None, max_pixels: int | None = None) -> np.ndarray | str:
    """The RGB image, made model-sized by `shrink` (`Classifier.model_sized`, which takes the decoded PIL image
    itself) in the decoding thread: a batch never holds full-size photos."""
    try:
        if shrink is not None:
            return shrink(load_rgb(path, max_pixels=max_pixels))
        return load_rgb_array(path, max_pixels=max_pixels)
    except DecodeError as e:
        return str(e)
    except Exception as e:  # a decoder bug on a hostile file must cost one row, not the run
        return f"cannot decode: {type(e).__name__}: {e}"


class Outcome(NamedTuple):
    """One row's content before formatting: probabilities, or the reason there are none."""

    path: Path
    frame: int | None  # video frame number; None for images and input errors
    result: np.ndarray | str  # float32 [K] probabilities, or the error text


@dataclass(frozen=True)
class WorkUnit:
    """One step of a predict job: up to `batch_size` consecutive images classified as one batch, one video, or
    one input that is an error by itself (missing file, empty folder). The plan is the same for the single-process
    path and for `waste_edge.scale` (one Ray task per unit), so both classify exactly the same batches."""

    kind: str  # images | video | error
    items: tuple[InputItem, ...]


def plan_units(items: Sequence[InputItem], batch_size: int) -> list[WorkUnit]:
    """Consecutive images in chunks of `batch_size`; each video and each input error a unit of its own."""
    units: list[WorkUnit] = []
    run: list[InputItem] = []

    def close_run() -> None:
        units.extend(WorkUnit("images", tuple(run[i : i + batch_size])) for i in range(0, len(run), batch_size))
        run.clear()

    for item in items:
        if item.kind == "image":
            run.append(item)
            continue
        close_run()
        units.append(WorkUnit(item.kind, (item,)))
    close_run()
    return units


def decoded_units(units: Sequence[WorkUnit], pool: ThreadPoolExecutor, shrink: Callable[[Any], np.ndarray] | None = None,
                  max_pixels: int | None = None) -> Iterator[tuple[WorkUnit, list[np.ndarray | str] | None]]:
    """Each unit with its decoded images (None for videos and errors), the next image unit decoding in `pool`
    while the caller classifies this one. `shrink` (`Classifier.model_sized`) runs on each image as it is
    decoded, so what waits for the batch is what the model takes, not the photo; `max_pixels` bounds decoding."""
    def submit(unit: WorkUnit) -> list[Future] | None:
        return [pool.submit(_decode, it.path, shrink, max_pixels) for it in unit.items] if unit.kind == "images" else None

    pending = submit(units[0]) if units else None
    for k, unit in enumerate(units):
        ahead = submit(units[k + 1]) if k + 1 < len(units) else None
        yield unit, None if pending is None else [f.result() for f in pending]
        pending = ahead


def classify_unit(classifier: Classifier, unit: WorkUnit, decoded: list[np.ndarray | str] | None, batch_size: int) -> Iterator[list[Outcome]]:
    """The outcomes of one unit, batch by batch (a long video yields as it goes, so rows reach the disk early)."""
    if unit.kind == "error":
        item = unit.items[0]
        yield [Outcome(item.path, None, item.error)]
    elif unit.kind == "video":
        yield from _classify_video(classifier, unit.items[0].path, batch_size)
    else:
        yield _classify_images(classifier, unit.items, decoded or [])


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


def _not_regular(path: Path) -> str | None:
    """Why a video path must not be handed to OpenCV (whose open blocks on a FIFO), None for a regular file."""
    try:
        kind = special_kind(path.stat().st_mode)
    except OSError as e:
        return f"cannot open video: {e.strerror or e}"
    return f"not a regular file ({kind})" if kind is not None else None


def _video_frame_count(path: Path) -> int:
    if _not_regular(path):
        return 1
    cap = cv2.VideoCapture(str(path))
    try:
        return max(0, int(cap.get(cv2.CAP_PROP_FRAME_COUNT))) if cap.isOpened() else 0
    finally:
        cap.release()


def expected_rows(unit: WorkUnit) -> int:
    """Rows a unit is expected to give (a video's frame count as its container reports it): progress bars."""
    return _video_frame_count(unit.items[0].path) if unit.kind == "video" else len(unit.items)


class PredictTally:
    """Writes outcomes through the `RowWriter` and keeps the summary and the progress bar: one place for both
    the single-process and the Ray path, so the two count and format rows the same way."""

    def __init__(self, writer: RowWriter, summary: PredictSummary, bar: tqdm) -> None:
        self.writer, self.summary, self.bar = writer, summary, bar

    def unit_started(self, unit: WorkUnit) -> None:
        if unit.kind == "images":
            self.summary.images += len(unit.items)
        elif unit.kind == "video":
            self.summary.videos += 1

    def emit(self, unit: WorkUnit, outcomes: Sequence[Outcome]) -> None:
        w, s = self.writer, self.summary
        rows = [w.error_row(o.path, o.result, o.frame) if isinstance(o.result, str) else w.prediction_row(o.path, o.result, o.frame) for o in outcomes]
        w.write(rows)
        frames = sum(1 for o in outcomes if o.frame is not None)
        s.video_frames += frames
        for row in rows:
            s.rows += 1
            if "error" in row:
                s.errors += 1
            else:
                s.predictions += 1
                s.labels[row["label"]] = s.labels.get(row["label"], 0) + 1
        if unit.kind == "video":
            self.bar.update(frames)
        else:
            self.bar.update(len(outcomes))


def open_predict_output(out: str | Path | None, classes: Sequence[str], total: int, progress: bool) -> tuple[RowWriter, tqdm]:
    """The row writer and the progress bar of a predict job (single-process or Ray)."""
    writer = RowWriter(out, classes)
    return writer, tqdm(total=total, unit="img", desc="predict", disable=not progress, file=sys.stderr, dynamic_ncols=True)


@dataclass(frozen=True)
class PredictOptions:
    """Classify image files, folders (recursively), globs and videos (frame by frame). One row per image or
    video frame: path, frame, label (class name, e.g. B), confidence, p_<class>; an unreadable file becomes a
    row with an error, never a crash. Rows are flushed batch by batch, so a killed run keeps its work.

    `predict`'s own settings (besides the model group and the sources)."""

    EPILOG: ClassVar[str] = (
        "examples:\n"
        "  waste-edge predict photos/ clip.mp4 --model lite0-int8.onnx --out predictions.csv\n"
        "  waste-edge predict photos/ --out predictions.csv --ray                     # Ray Data, local or joined cluster\n"
        "  waste-edge predict /nfs/photos --out p.csv --ray 10.0.0.5:6379 --ray-workers 64")

    out: str | None = common("--out", None, metavar="FILE.csv|FILE.jsonl", help="output table (default: CSV on stdout)")
    batch_size: int = common("--batch-size", 16, help="images per inference batch (default: %(default)s)")
    workers: int = common("--workers", 2, help="image decoding threads (default: %(default)s)")
    quiet: bool = common("--quiet", False, help="no progress bar")
    max_pixels: int = common("--max-pixels", 40_000_000, help="largest image in pixels, read from its header before decoding: larger JPEGs "
                                                              "decode at 1/2, 1/4 or 1/8 scale, other larger files become error rows (default: %(default)s)")


def run_predict(
    classifier: Classifier,
    sources: Sequence[str | Path],
    out: str | Path | None = None,
    *,
    batch_size: int = 16,
    workers: int = 2,
    progress: bool = True,
    max_pixels: int | None = None,
) -> PredictSummary:
    """Classify every image and video frame under `sources`, writing one row each to `out` (.csv / .jsonl / stdout).

    Each image and frame is made model-sized (`Classifier.model_sized`) before it is batched, so memory depends
    on the batch size and the model, not on the photos' resolution; `max_pixels` bounds what one file may
    decode to (default `data.decode.MAX_DECODE_PIXELS`; larger JPEGs decode reduced, others are error rows)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    check_output(out, sources, option="out")  # never over an input, never into a folder (waste_edge/_outputs.py)
    units = plan_units(expand_inputs(sources), batch_size)
    t0 = time.perf_counter()
    writer, bar = open_predict_output(out, classifier.classes, sum(expected_rows(u) for u in units), progress)
    summary = PredictSummary(out=writer.name)
    tally = PredictTally(writer, summary, bar)
    try:
        with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="decode") as pool:
            for unit, decoded in decoded_units(units, pool, _shrinker(classifier), max_pixels):
                tally.unit_started(unit)
                for outcomes in classify_unit(classifier, unit, decoded, batch_size):
                    tally.emit(unit, outcomes)
    finally:
        bar.close()
        writer.close()
        summary.elapsed_s = time.perf_counter() - t0
    return summary


def _shrinker(classifier: Any) -> Callable[[Any], np.ndarray] | None:
    """`Classifier.model_sized`; None for a stand-in that only has `classes` and `predict_proba` (full frames)."""
    return getattr(classifier, "model_sized", None)


# Pixels one inference call may take. Model-sized frames are ~150 KB, so this never splits a batch of them; it
# bounds the calls of a model whose preprocessing `Classifier.model_sized` cannot apply (full-size frames).
MAX_BATCH_BYTES = 64 * 1024 * 1024


def batch_rows(frame_bytes: int, batch_size: int) -> int:
    """Frames of `frame_bytes` per inference call: `batch_size`, fewer when they would pass `MAX_BATCH_BYTES`."""
    return max(1, min(batch_size, MAX_BATCH_BYTES // max(1, frame_bytes)))


def _classify_images(classifier: Classifier, chunk: Sequence[InputItem], decoded: list[np.ndarray | str]) -> list[Outcome]:
    ok = [k for k, d in enumerate(decoded) if not isinstance(d, str)]
    results: dict[int, np.ndarray | str] = {k: d for k, d in enumerate(decoded) if isinstance(d, str)}
    start = 0
    while start < len(ok):  # consecutive images in calls of at most MAX_BATCH_BYTES
        n = batch_rows(max(decoded[k].nbytes for k in ok[start:]), len(ok))  # type: ignore[union-attr]
        part = ok[start : start + n]
        for k, res in zip(part, _safe_proba(classifier, [decoded[k] for k in part], "RGB")):  # type: ignore[misc]
            results[k] = res
        start += n
    return [Outcome(item.path, None, results[k]) for k, item in enumerate(chunk)]


def _classify_video(classifier: Classifier, path: Path, batch_size: int) -> Iterator[list[Outcome]]:
    if (why := _not_regular(path)) is not None:
        yield [Outcome(path, None, why)]
        return
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        cap.release()
        yield [Outcome(path, None, "cannot open video (unsupported format or corrupt file)")]
        return
    frames_read = 0
    try:
        batch: np.ndarray | None = None
        indices: list[int] = []
        n = 0
        read_buf: np.ndarray | None = None  # one full-size frame at a time; the batch holds model-sized ones
        shrink = _shrinker(classifier)
        while True:
            ok, read_buf = cap.read(read_buf) if read_buf is not None else cap.read()
            if not ok or read_buf is None:
                break
            frame = shrink(read_buf) if shrink is not None else read_buf
            if batch is None or frame.shape != batch.shape[1:]:
                if n:  # size changed mid-stream: classify what we have first
                    yield _video_outcomes(classifier, path, batch[:n], indices)  # type: ignore[index]
                    n, indices = 0, []
                batch = np.empty((batch_rows(frame.nbytes, batch_size), *frame.shape), dtype=np.uint8)
            batch[n] = frame
            indices.append(frames_read)
            frames_read += 1
            n += 1
            if n == batch.shape[0]:
                yield _video_outcomes(classifier, path, batch, indices)
                n, indices = 0, []
        if n and batch is not None:
            yield _video_outcomes(classifier, path, batch[:n], indices)
    finally:
        cap.release()
    if frames_read == 0:
        yield [Outcome(path, None, "no frames could be decoded from this video")]


def _video_outcomes(classifier: Classifier, path: Path, batch: np.ndarray, indices: list[int]) -> list[Outcome]:
    return [Outcome(path, f, r) for f, r in zip(indices, _safe_proba(classifier, batch, "BGR"))]
