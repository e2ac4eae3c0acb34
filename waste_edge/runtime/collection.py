"""The collection folder (ARCHITECTURE.md, contract "collection folder"): collected frames, their sidecars, `labels.csv`.

`--collect DIR` writes `<stem>.jpg` + `<stem>.json` pairs (`write_frame`: the image, then the sidecar with
time, camera, probabilities, model sha256); a person labels them, on the service's Review page or by hand,
in `DIR/labels.csv` (`file,label`); `waste-edge adapt --data DIR` reads both. This module is the one reader
and writer of that folder (the collector thread of `runtime/collector.py` decides WHICH frames to save and
calls `write_frame`), so the collector, the page, the API, the CLI and a text editor all agree on it.

labels.csv is often written by hand (a spreadsheet export, Notepad on Windows), so the reader is tolerant
and never crashes on content: a UTF-8 BOM, CRLF line ends, spaces around fields, a missing header,
`#` comments, blank lines, lower-case or display-name labels (`b`, `biodegradable`) are all accepted;
anything it cannot use (an unknown label, a file that is not in the folder, a path that leaves the folder,
a duplicate row) is reported in `LabelsFile.problems` with its line number and skipped, never dropped
silently. The writer is atomic (temporary file + rename), so a crash or a concurrent reader never sees half
a file, and serialised within the process by a lock, so the service's request threads cannot lose an update.
"""

from __future__ import annotations

import csv
import io
import json
import re
import threading
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from waste_edge._io import atomic_write_bytes, atomic_write_text, list_images, read_regular, write_json
from waste_edge.errors import InputFileError, WasteEdgeError

LABELS_FILE = "labels.csv"
HEADER = ("file", "label")
SKIP = "skip"  # "seen, not usable": the Review view's skip button; kept in the file, never trained on
SIDECAR_SUFFIX = ".json"
SIDECAR_FORMAT = "waste-edge/collected-frame"
SIDECAR_VERSION = 1
MAX_LABELS_BYTES = 64 * 1024 * 1024  # a million labelled frames is ~50 MB of file,label rows
MAX_SIDECAR_BYTES = 1024 * 1024  # a sidecar is a few hundred bytes

_write_lock = threading.Lock()


class CollectionError(WasteEdgeError):
    """A collection folder or labels.csv that cannot be used at all (missing, unreadable, not a CSV)."""


@dataclass
class LabelsFile:
    """The labels of one collection folder: `labels` maps a file (relative to the folder, `/`-separated) to a
    class name or `SKIP`; `problems` lists the rows that were not used, with the reason."""

    path: Path
    labels: dict[str, str] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    rejected: list[list[str]] = field(default_factory=list)  # rows not used, as written (a rewrite keeps them)

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for label in self.labels.values():
            out[label] = out.get(label, 0) + 1
        return out

    def usable(self) -> dict[str, str]:
        """The rows to train on: every label except `SKIP`."""
        return {f: lab for f, lab in self.labels.items() if lab != SKIP}


def labels_path(folder: str | Path) -> Path:
    return Path(folder) / LABELS_FILE


def _label_lookup(classes: Sequence[str] | None, display_names: Sequence[str] | None) -> dict[str, str] | None:
    """Case-insensitive spellings -> class name (class names, display names, and `skip`)."""
    if classes is None:
        return None
    table = {c.casefold(): c for c in classes}
    for c, d in zip(classes, display_names or ()):
        table.setdefault(d.casefold(), c)
    table[SKIP] = SKIP
    return table


def _clean_file(name: str) -> str | None:
    """The path as stored (relative, `/`-separated), or None when it is absolute or leaves the folder."""
    p = name.replace("\\", "/").strip()
    while p.startswith("./"):
        p = p[2:]
    parts = [x for x in p.split("/") if x not in ("", ".")]
    if not parts or p.startswith("/") or (len(p) > 1 and p[1] == ":") or ".." in parts:
        return None
    return "/".join(parts)


def read_labels(
    folder: str | Path,
    classes: Sequence[str] | None = None,
    display_names: Sequence[str] | None = None,
    *,
    check_files: bool = True,
) -> LabelsFile:
    """Read `folder/labels.csv` (an absent file is an empty LabelsFile, not an error).

    With `classes`, labels are matched case-insensitively to class names or display names and others are
    reported as unknown; without, any non-empty label is kept as written. `check_files` reports rows whose
    file is not in the folder. A later row for the same file overrides an earlier one (reported).
    """
    root = Path(folder)
    path = labels_path(root)
    result = LabelsFile(path)
    if not path.exists():
        return result
    try:
        data = read_regular(path, max_bytes=MAX_LABELS_BYTES)  # a FIFO or /dev/zero here must not hang adapt or the service
    except InputFileError as e:
        raise CollectionError(str(e)) from None
    except OSError as e:
        raise CollectionError(f"{path}: cannot read ({e.strerror or e})") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        try:
            text = data.decode("cp1252")  # a spreadsheet's "CSV" on Windows
            result.problems.append(f"{path.name}: not UTF-8; read as Windows-1252")
        except UnicodeDecodeError as e:
            raise CollectionError(f"{path}: not a text file ({e})") from None
    lookup = _label_lookup(classes, display_names)
    first = True
    for lineno, row in enumerate(csv.reader(io.StringIO(text, newline="")), start=1):
        cells = [c.strip() for c in row]
        if not any(cells) or cells[0].startswith("#"):
            continue
        if first:
            first = False
            if [c.casefold() for c in cells[:2]] == list(HEADER):
                continue
        if len(cells) < 2 or not cells[1]:
            result.problems.append(f"line {lineno}: expected file,label, got {','.join(row)!r}")
            result.rejected.append(row)
            continue
        name, raw = _clean_file(cells[0]), cells[1]
        if name is None:
            result.problems.append(f"line {lineno}: {cells[0]!r} is not a path inside the folder")
            result.rejected.append(row)
            continue
        label = raw if lookup is None else lookup.get(raw.casefold())
        if label is None:
            result.problems.append(f"line {lineno}: unknown label {raw!r} for {name} (expected one of {', '.join([*classes, SKIP])})")  # type: ignore[list-item]
            result.rejected.append(row)
            continue
        if check_files and not (root / name).is_file():
            result.problems.append(f"line {lineno}: {name} is not in {root}")
            result.rejected.append(row)
            continue
        if name in result.labels and result.labels[name] != label:
            result.problems.append(f"line {lineno}: {name} labelled again ({result.labels[name]} -> {label}); the later row wins")
        result.labels.pop(name, None)  # keep the file's latest position in the order
        result.labels[name] = label
    return result


def _render(labels: Mapping[str, str], rejected: Sequence[Sequence[str]] = ()) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(HEADER)
    w.writerows(labels.items())
    w.writerows(rejected)
    return buf.getvalue()


def write_labels(folder: str | Path, labels: Mapping[str, str]) -> Path:
    """Replace `folder/labels.csv` atomically with `labels` (file -> label), in the given order."""
    clean: dict[str, str] = {}
    for name, label in labels.items():
        f = _clean_file(str(name))
        if f is None:
            raise CollectionError(f"{name!r} is not a path inside the collection folder")
        if not str(label).strip() or "\n" in str(label):
            raise CollectionError(f"empty or multi-line label for {f}")
        clean[f] = str(label).strip()
    with _write_lock:
        return atomic_write_text(labels_path(folder), _render(clean))


def set_labels(
    folder: str | Path,
    updates: Mapping[str, str | None],
    classes: Sequence[str] | None = None,
    display_names: Sequence[str] | None = None,
) -> LabelsFile:
    """Add, change (`label`) or remove (`None`) the labels of some files, keeping every other row as it is.

    What the Review page's API calls per click. Labels are validated against `classes` (plus `skip`) and
    files must exist in the folder: a bad update raises `CollectionError` and changes nothing. Rows of a
    hand-written file that the reader cannot use stay in the file as written (after the usable rows) and
    are reported in the returned `problems`: a click on the page never destroys what a person typed.
    """
    root = Path(folder)
    lookup = _label_lookup(classes, display_names)
    checked: dict[str, str | None] = {}
    for name, label in updates.items():
        f = _clean_file(str(name))
        if f is None or not (root / f).is_file():
            raise CollectionError(f"{name!r} is not a file of the collection folder {root}")
        if label is not None:
            norm = str(label).strip() if lookup is None else lookup.get(str(label).strip().casefold())
            if not norm:
                raise CollectionError(f"unknown label {label!r} for {f} (expected one of {', '.join([*(classes or []), SKIP])})")
            label = norm
        checked[f] = label
    with _write_lock:
        current = read_labels(root, classes, display_names)
        for f, label in checked.items():
            if label is None:
                current.labels.pop(f, None)
            else:
                current.labels[f] = label
        # A deliberate new label supersedes an unusable hand-written row for the same file.
        current.rejected = [r for r in current.rejected if not r or _clean_file(r[0]) not in checked]
        atomic_write_text(labels_path(root), _render(current.labels, current.rejected))
    return current


# -- frames and sidecars ---------------------------------------------------------------------------------

_SLUG = re.compile(r"[^A-Za-z0-9._-]+")


def camera_slug(name: str) -> str:
    """A file-name-safe short form of a camera name (`rtsp://host/stream` -> `host_stream`, `/data/v.mp4` -> `v.mp4`)."""
    tail = name.split("://", 1)[1].split("@")[-1] if "://" in name else Path(name).name or name
    return _SLUG.sub("_", tail).strip("._-")[-40:] or "camera"


@dataclass(frozen=True)
class FrameRecord:
    """What the sidecar of a collected frame says (besides its format, version and file name)."""

    time: datetime  # UTC, when the frame was classified
    camera: str
    frame: int | None  # the source's frame number
    model_sha256: str
    model: str  # the model's file name
    probabilities: Mapping[str, float]  # the model's raw output, rounded to 1e-6
    prediction: str | None  # the class with the highest probability
    confidence: float  # the decision confidence (after smoothing) that was below the threshold
    threshold: float  # --collect-below
    width: int
    height: int
    dhash: int  # 64-bit difference hash (near-duplicate detection across restarts)
    extra: Mapping[str, Any] = field(default_factory=dict)


def sidecar_doc(record: FrameRecord, file: str) -> dict[str, Any]:
    return {
        "format": SIDECAR_FORMAT,
        "version": SIDECAR_VERSION,
        "file": file,
        "time": record.time.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "camera": record.camera,
        "frame": record.frame,
        "model_sha256": record.model_sha256,
        "model": record.model,
        "probabilities": dict(record.probabilities),
        "prediction": record.prediction,
        "confidence": round(record.confidence, 6),
        "threshold": record.threshold,
        "width": record.width,
        "height": record.height,
        "dhash": f"{record.dhash:016x}",
        **record.extra,
    }


def write_frame(folder: str | Path, jpeg: bytes, record: FrameRecord, seq: int) -> tuple[Path, int]:
    """Save one collected frame: `<time>-<seq>-<camera>.jpg`, then its sidecar (last: it promises the image).

    Names sort in save order (time first, then `seq`, this run's counter) and never replace a file: a name in
    use gets `-1`, `-2`, ... Returns the image's path and the bytes written (image + sidecar)."""
    root = Path(folder)
    when = record.time
    stem = f"{when:%Y%m%d-%H%M%S}-{when.microsecond // 1000:03d}-{seq % 10000:04d}-{camera_slug(record.camera)}"
    image = root / f"{stem}.jpg"
    n = 1
    while image.exists():
        image = root / f"{stem}-{n}.jpg"
        n += 1
    # The sidecar first: readers list frames by their image, so a listed frame always has its sidecar (the Review
    # page read a frame between the two writes and showed it without its guess).
    side = write_json(image.with_suffix(SIDECAR_SUFFIX), sidecar_doc(record, image.name))
    atomic_write_bytes(image, jpeg)
    return image, len(jpeg) + side.stat().st_size


def read_dhash(sidecar: Mapping[str, Any] | None) -> int | None:
    """The near-duplicate hash a sidecar recorded, None when absent or malformed."""
    value = sidecar.get("dhash") if sidecar else None
    if not isinstance(value, str):
        return None
    try:
        return int(value, 16)
    except ValueError:
        return None



@dataclass
class CollectedFrame:
    """One image of a collection folder and its sidecar (None for images put there by hand)."""

    file: str  # relative to the folder, `/`-separated (the key of labels.csv)
    path: Path
    sidecar: dict[str, Any] | None


def read_sidecar(image: Path) -> dict[str, Any] | None:
    """The JSON sidecar of a collected image (`x.jpg` -> `x.json`), None when absent or unreadable."""
    side = image.with_suffix(SIDECAR_SUFFIX)
    try:
        doc = json.loads(read_regular(side, max_bytes=MAX_SIDECAR_BYTES).decode("utf-8"))
    except (OSError, ValueError, RecursionError):
        return None
    return doc if isinstance(doc, dict) else None


def list_frames(folder: str | Path, *, sidecars: bool = True) -> list[CollectedFrame]:
    """Images of the folder (recursively, hidden files skipped), oldest first by name (collected names sort by time)."""
    root = Path(folder)
    if not root.is_dir():
        raise CollectionError(f"{root}: no such collection folder")
    return [
        CollectedFrame(p.relative_to(root).as_posix(), p, read_sidecar(p) if sidecars else None)
        for p in list_images(root)
    ]


def unlabelled(folder: str | Path, labels: LabelsFile | None = None) -> list[CollectedFrame]:
    """Frames without a row in labels.csv (the Review view's queue), oldest first."""
    done = (labels or read_labels(folder, check_files=False)).labels
    return [f for f in list_frames(folder) if f.file not in done]


def iter_labelled(folder: str | Path, labels: LabelsFile) -> Iterable[tuple[Path, str]]:
    """(image path, class) for every usable label, in the file's order."""
    root = Path(folder)
    for name, label in labels.usable().items():
        yield root / name, label
