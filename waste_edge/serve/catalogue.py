"""The models a client may ask the service to serve, and where the service writes the ones it makes.

The service's models folder (`serve --models-dir`, default `COLLECT/models` with `--collect`) is the only place
`POST /api/v1/adapt` writes to (names the service makes: `<base>-adapted-<UTC time>.onnx`, never overwriting) and
the only place `POST /api/v1/model` swaps from: by file name or by sha256 of a model listed there (the model the
service started with is listed too, so a swap can be undone), or by uploading a file, which is written there as
`upload-<sha256[:12]>.onnx` once it has passed the same checks as any model (loads, probe frame answers finite
probabilities summing to 1, same classes). A name is matched against the folder's listing (regular `.onnx` /
`.engine` files, no symbolic links, no hidden files); it is never joined onto a path. Of the models the service
made itself (those two name forms) the newest `--keep-models` stay; older ones are deleted unless serving, so
repeated adapt or upload requests cannot fill the disk.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import stat
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import BinaryIO, Iterator

from waste_edge._io import file_sha256
from waste_edge.errors import WasteEdgeError
from waste_edge.runtime.rehearsal import rehearsal_path

MODEL_SUFFIXES = (".onnx", ".engine")
COPY_CHUNK = 1024 * 1024
MADE = re.compile(r"^(upload-[0-9a-f]{12}|.+-adapted-\d{8}-\d{6}(-\d+)?)\.onnx$")  # names this module gives


def models_folder(models_dir: str | Path | None, collect_folder: str | Path | None) -> Path | None:
    """`--models-dir`, else `COLLECT/models` (where adapt has always written), else none (no swaps by name)."""
    if models_dir is not None:
        return Path(models_dir)
    return Path(collect_folder) / "models" if collect_folder is not None else None


class CatalogueError(WasteEdgeError):
    """No models folder, no such model, or an upload that cannot be stored."""

    def __init__(self, message: str, status: int = 404) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class ModelEntry:
    name: str
    path: Path
    sha256: str
    size: int
    origin: str  # "folder" (the models folder) or "startup" (the model the service started with)

    def to_dict(self, serving_sha256: str) -> dict[str, object]:
        return {"name": self.name, "sha256": self.sha256, "size": self.size, "origin": self.origin, "serving": self.sha256 == serving_sha256}


class ModelCatalogue:
    def __init__(self, folder: Path | None, startup: Path, keep: int = 10) -> None:
        self.folder = Path(folder) if folder is not None else None
        self.startup = Path(startup)
        self.keep = keep  # models made by the service kept in the folder
        self._sha: dict[tuple[str, int, int, int], str] = {}  # (name, inode, size, mtime_ns) -> sha256

    def _digest(self, path: Path, st: os.stat_result) -> str:
        key = (str(path), st.st_ino, st.st_size, st.st_mtime_ns)
        sha = self._sha.get(key)
        if sha is None:
            if len(self._sha) > 4096:
                self._sha.clear()
            sha = self._sha[key] = file_sha256(path)
        return sha

    def _folder_files(self) -> Iterator[tuple[Path, os.stat_result]]:
        if self.folder is None or not self.folder.is_dir():
            return
        with os.scandir(self.folder) as it:
            for e in it:
                if e.name.startswith(".") or not e.name.endswith(MODEL_SUFFIXES):
                    continue
                st = e.stat(follow_symlinks=False)
                if stat.S_ISREG(st.st_mode):
                    yield Path(e.path), st

    def entries(self) -> list[ModelEntry]:
        """Every model a client may name, the folder's first (by name), then the startup model."""
        out = [ModelEntry(p.name, p, self._digest(p, st), st.st_size, "folder") for p, st in sorted(self._folder_files())]
        try:
            st = os.stat(self.startup)
            if not any(e.path.resolve() == self.startup.resolve() for e in out):
                out.append(ModelEntry(self.startup.name, self.startup, self._digest(self.startup, st), st.st_size, "startup"))
        except OSError:
            pass
        return out

    def find(self, *, name: str | None = None, sha256: str | None = None) -> ModelEntry:
        entries = self.entries()
        match = [e for e in entries if (name is not None and e.name == name) or (sha256 is not None and e.sha256 == sha256.lower())]
        if not match:
            known = ", ".join(e.name for e in entries[:20]) or "none"
            asked = f"name {name!r}" if name is not None else f"sha256 {sha256}"
            raise CatalogueError(f"no model with {asked} in the models folder (models: {known}; GET /api/v1/models lists them)")
        return match[0]

    def require_folder(self) -> Path:
        if self.folder is None:
            raise CatalogueError("this service has no models folder: start serve with --models-dir DIR (or --collect DIR)", status=409)
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise CatalogueError(f"cannot create the models folder {self.folder}: {e.strerror or e}", status=507) from None
        return self.folder

    def adapted_path(self, base: Path) -> Path:
        """A new file name for an adapted model: `<base stem>-adapted-<UTC time>.onnx` (a counter if taken)."""
        folder = self.require_folder()
        stem = base.stem.split("-adapted-")[0] or "model"
        stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
        for i in range(1000):
            path = folder / f"{stem}-adapted-{stamp}{'' if i == 0 else f'-{i}'}.onnx"
            if not os.path.lexists(path):
                return path
        raise CatalogueError(f"{folder}: too many adapted models named {stem}-adapted-{stamp}*", status=409)

    def store_upload(self, src: BinaryIO, limit: int) -> tuple[Path, str, bool]:
        """Copy an uploaded model into the folder as `upload-<sha256[:12]>.onnx` (through a hidden temporary file).

        Returns (path, sha256, created): an upload identical to a listed model is that model (created False)."""
        folder = self.require_folder()
        tmp = folder / f".upload-{secrets.token_hex(8)}.part"
        try:
            digest, size = hashlib.sha256(), 0
            with open(tmp, "xb") as out:
                while chunk := src.read(COPY_CHUNK):
                    size += len(chunk)
                    if size > limit:
                        raise CatalogueError(f"model upload larger than the limit of {limit} bytes (--max-model-mb)", status=413)
                    digest.update(chunk)
                    out.write(chunk)
            if size == 0:
                raise CatalogueError("empty model upload", status=422)
            sha = digest.hexdigest()
            same = next((e for e in self.entries() if e.sha256 == sha), None)
            if same is not None:
                return same.path, sha, False
            final = folder / f"upload-{sha[:12]}.onnx"
            try:
                os.link(tmp, final)  # never over an existing file (os.replace would)
            except FileExistsError:
                raise CatalogueError(f"{final.name} exists in the models folder with other content; not overwritten", status=409) from None
            return final, sha, True
        except OSError as e:
            raise CatalogueError(f"cannot store the upload in {folder}: {e.strerror or e}", status=507) from None
        finally:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass

    def prune(self, serving_sha256: str) -> list[str]:
        """Delete all but the newest `keep` models the service made (and their rehearsal sets), never the serving
        or the startup model; returns the names deleted."""
        protect = {serving_sha256} | {e.sha256 for e in self.entries() if e.origin == "startup"}
        made = sorted(((st.st_mtime_ns, p, st) for p, st in self._folder_files() if MADE.match(p.name)), key=lambda t: t[0], reverse=True)
        removed = []
        for _, path, st in made[self.keep :]:
            if self._digest(path, st) in protect:
                continue
            for f in (path, rehearsal_path(path)):
                try:
                    f.unlink()
                except FileNotFoundError:
                    pass
            removed.append(path.name)
        return removed
