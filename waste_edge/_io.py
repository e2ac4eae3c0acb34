"""Standard-library helpers every layer may use (ARCHITECTURE.md: the bottom floor of the import graph).

One helper per job, so that a fix (a torn file on a full disk, a cache folder that ignores
`WASTE_EDGE_CACHE`) lands once and holds everywhere:

- atomic writes: a file is either its old content or its whole new content, never half of each; the
  temporary file lives in the target's folder (same file system, so `os.replace` is atomic) and is
  removed when the write fails;
- content hashes (`hashlib.file_digest`), the cache folder, library versions, a quick TCP probe;
- image listing in one order for every caller;
- opening an input file only when it is a regular file (`open_regular`): a manifest row or a label that
  names /dev/urandom, a FIFO or a socket would otherwise read forever or block before the first byte.

Nothing here imports numpy, onnxruntime, PIL or torch: the runtime, data, train and export layers all
import this module, and the edge install must stay small.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import socket
import stat
import tempfile
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import IO, Any, Callable, Iterable

from waste_edge.errors import InputFileError

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm"})
# Video containers a source (camera, predict) opens as a video; the output guard treats them as inputs too.
VIDEO_SUFFIXES = frozenset({".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv", ".3gp", ".ts", ".mts", ".m2ts", ".ogv"})
CACHE_ENV = "WASTE_EDGE_CACHE"


# Progress lines of long jobs go to a `Log` (the CLI passes `print`); `quiet` drops them.
Log = Callable[[str], None]


def quiet(_message: str) -> None:
    """A `Log` that says nothing."""


# -- atomic writes ---------------------------------------------------------------------------------------


def _read_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _read_umask()  # read once at import: os.umask is process-wide, so never toggle it while threads write


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write `data` to `path` through a temporary sibling and `os.replace`; the parent folder is created."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; an output is as readable as any file the user writes
        os.replace(tmp, target)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return target


def atomic_write_text(path: str | Path, text: str, encoding: str = "utf-8") -> Path:
    return atomic_write_bytes(path, text.encode(encoding))


def write_json(path: str | Path, doc: Any, *, indent: int | None = 2, **options: Any) -> Path:
    """`doc` as JSON (UTF-8, trailing newline), written atomically. Argument order: where, then what.

    `options` go to `json.dumps` (e.g. `allow_nan=False`, `default=str`)."""
    return atomic_write_text(path, json.dumps(doc, indent=indent, ensure_ascii=False, **options) + "\n")


# Persisted keys spelt one way (US, as head.json's sha256-covered `normalization`); readers still accept files
# written with the old spelling, e.g. the embedded default model's metadata.
LEGACY_KEYS = {"normalisation": "normalization"}


def modern_keys(doc: dict[str, Any]) -> dict[str, Any]:
    """A copy of `doc` with old key spellings renamed (top level only; a key already spelt both ways keeps the new)."""
    return {LEGACY_KEYS.get(k, k): v for k, v in doc.items() if not (k in LEGACY_KEYS and LEGACY_KEYS[k] in doc)}


# -- hashes, caches, versions, network -------------------------------------------------------------------


def file_sha256(path: str | Path, *, max_bytes: int | None = None) -> str:
    """Hex sha256 of a file's bytes, streamed (a 350 MB model never sits in memory twice); regular files only
    (`open_regular`), at most `max_bytes` when given."""
    return file_digest(path, hashlib.sha256, max_bytes=max_bytes)


def file_digest(path: str | Path, make: Callable[[], Any], *, max_bytes: int | None = None) -> str:
    """Hex digest (`make()`: a hashlib object) of a regular file's bytes, read in 1 MiB blocks, never more
    than `max_bytes` + 1 (a file still growing past its limit is refused, not hashed forever)."""
    h = make()
    with open_regular(path, max_bytes=max_bytes) as fh:
        read = 0
        while block := fh.read(1 << 20):
            read += len(block)
            if max_bytes is not None and read > max_bytes:
                raise InputFileError(f"{path}: grew past {max_bytes} bytes while being read")
            h.update(block)
    return h.hexdigest()


# -- input files -----------------------------------------------------------------------------------------

_SPECIAL = ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
            (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))


def special_kind(mode: int) -> str | None:
    """What a non-regular file is ("a FIFO", "a character device", ...), None for a regular file."""
    if stat.S_ISREG(mode):
        return None
    return next((what for test, what in _SPECIAL if test(mode)), "not a regular file")


def open_regular(path: str | Path, *, max_bytes: int | None = None) -> IO[bytes]:
    """Open an input for reading, binary, only if it is a regular file of at most `max_bytes` bytes.

    `stat` before `open`: a FIFO would block the open itself, a device (/dev/urandom, /dev/zero) never ends and
    its open may have effects (a tape rewinds, a watchdog starts). The open is non-blocking and its `fstat` is
    checked again, so a FIFO swapped in between cannot block either. Raises `InputFileError` (an OSError and a
    WasteEdgeError) with a one-line reason; a missing file raises FileNotFoundError as `open` does."""
    st = os.stat(path)
    kind = special_kind(st.st_mode)
    if kind is not None:
        raise InputFileError(f"{path}: not a regular file ({kind})")
    if max_bytes is not None and st.st_size > max_bytes:
        raise InputFileError(f"{path}: {st.st_size} bytes, more than the limit of {max_bytes} bytes for this kind of file")
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    try:
        kind = special_kind(os.fstat(fd).st_mode)
        if kind is not None:
            raise InputFileError(f"{path}: not a regular file ({kind})")
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_regular(path: str | Path, *, max_bytes: int) -> bytes:
    """The whole content of a regular file of at most `max_bytes` bytes (`open_regular`; a file that grew
    past the limit since its `stat` is refused too)."""
    with open_regular(path, max_bytes=max_bytes) as fh:
        data = fh.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise InputFileError(f"{path}: grew past {max_bytes} bytes while being read")
    return data


def cache_dir(*parts: str) -> Path:
    """`$WASTE_EDGE_CACHE/<parts>` or `~/.cache/waste-edge/<parts>`; not created here (callers create on write)."""
    base = os.environ.get(CACHE_ENV) or os.path.join(os.path.expanduser("~"), ".cache", "waste-edge")
    return Path(base).joinpath(*parts)


def library_versions(names: Iterable[str] = ()) -> dict[str, str]:
    """waste-edge, Python and the installed versions of the distributions in `names` (missing ones left out)."""
    from waste_edge import __version__

    out = {"waste_edge": __version__, "python": platform.python_version()}
    for dist in names:
        try:
            out[dist] = importlib_metadata.version(dist)
        except importlib_metadata.PackageNotFoundError:
            pass
    return out


def tcp_unreachable(host: str, port: int = 443, timeout: float = 3.0) -> str | None:
    """None when a TCP connection to host:port opens within `timeout`, else the one-line reason it did not.

    Used before hub / Kaggle / weight downloads so an offline machine fails in seconds, not after a minute
    of client retries."""
    try:
        with socket.create_connection((host, int(port)), timeout=timeout):
            return None
    except OSError as e:
        return f"{type(e).__name__}: {e}"


# -- image listing ---------------------------------------------------------------------------------------


def is_image_path(path: str | Path) -> bool:
    return Path(path).suffix.lower() in IMAGE_SUFFIXES


def list_files(root: str | Path, suffixes: Iterable[str] | None = None) -> list[Path]:
    """Files under `root` (recursively; hidden files and folders such as `.DS_Store` or `._x.jpg` skipped),
    sorted, so every caller walks a folder in the same order; only those ending in `suffixes` when given.
    Entries that are not regular files (a FIFO or a dangling link named x.jpg) are listed too: the reader
    refuses them with a reason (`open_regular`), so none is dropped without a word."""
    base = Path(root)
    wanted = None if suffixes is None else frozenset(s.lower() for s in suffixes)
    return sorted(
        p for p in base.rglob("*")
        if not p.is_dir() and (wanted is None or p.suffix.lower() in wanted)
        and not any(part.startswith(".") for part in p.relative_to(base).parts)
    )


def list_images(root: str | Path) -> list[Path]:
    """Image files under `root`, as `list_files` walks them."""
    return list_files(root, IMAGE_SUFFIXES)


# -- JSON a user hands us --------------------------------------------------------------------------------

MAX_JSON_BYTES = 64 * 1024 * 1024  # a card, head or sidecar is kilobytes; a bigger file is not one of ours


class JsonFileError(ValueError):
    """A JSON file that cannot be read as JSON (not UTF-8, malformed, nested too deeply, too big, a folder)."""


def read_json(path: str | Path, *, max_bytes: int = MAX_JSON_BYTES) -> Any:
    """The parsed JSON in `path`, or `JsonFileError` with a one-line reason naming the file.

    Every file a user can hand over (card.json, head.json, an engine sidecar, a model card) goes through here,
    so a JSON bomb (deep nesting: RecursionError), a binary file or a giant file fails the same way everywhere.
    A missing file still raises FileNotFoundError, for callers that say what it should have been."""
    p = Path(path)
    try:
        with open_regular(p) as fh:
            data = fh.read(max_bytes + 1)
    except FileNotFoundError:
        raise
    except InputFileError as e:
        raise JsonFileError(str(e)) from None
    except OSError as e:
        raise JsonFileError(f"{p}: cannot read: {e.strerror or e}") from None
    if len(data) > max_bytes:
        raise JsonFileError(f"{p}: larger than {max_bytes // (1024 * 1024)} MiB, not a waste-edge JSON file")
    try:
        return json.loads(data.decode("utf-8"))
    except UnicodeDecodeError:
        raise JsonFileError(f"{p}: not UTF-8 text, not JSON") from None
    except json.JSONDecodeError as e:
        raise JsonFileError(f"{p}: not valid JSON ({e})") from None
    except RecursionError:
        raise JsonFileError(f"{p}: JSON nested too deeply") from None


def write_whole(fh, data: bytes, good: int) -> int:
    """Write `data` (whole records) to the unbuffered binary file `fh` whose first `good` bytes are whole
    records; return the new count. On a failed write (disk full, quota) the file is cut back to `good` bytes and
    the position set there before the OSError propagates, so no partial record can look like a whole one to a
    CSV / JSONL reader, and a later write (a sink that recovers) continues right after the last whole record."""
    try:
        view = memoryview(data)
        while view:  # a raw write may take only part of the block
            n = fh.write(view)
            view = view[n if n is not None else 0:]
        fh.flush()
    except OSError:
        try:
            os.ftruncate(fh.fileno(), good)
            os.lseek(fh.fileno(), good, os.SEEK_SET)  # else the next write leaves a hole of NUL bytes
        except (OSError, ValueError):
            pass
        raise
    return good + len(data)
