"""Parquet shards of a Ray job: written atomically as they complete, the unit of resumption.

A shard is either whole or absent (written to a temporary sibling, fsynced, renamed), so a run killed at
any moment leaves only complete shards behind, and a rerun of the same job skips them. A manifest names the
job (a fingerprint of its inputs, model and options): shards of another job are never mixed in.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from waste_edge._io import atomic_write_bytes, write_json
from waste_edge.scale.cluster import RayError

MANIFEST = "manifest.json"


def write_parquet(path: Path, table: Any) -> Path:
    """One Parquet file, atomically."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="zstd")
    return atomic_write_bytes(path, sink.getvalue().to_pybytes())


def read_parquet(path: Path) -> Any | None:
    """The table, or None for a file that is not a readable Parquet file (treated as not done)."""
    import pyarrow.parquet as pq

    try:
        return pq.read_table(path)
    except Exception:
        return None


class ShardStore:
    """`part-00000.parquet` ... in `folder`, for the job named `job`; `done()` lists the shards already written."""

    def __init__(self, folder: Path, job: str, n_shards: int, meta: dict[str, Any] | None = None) -> None:
        self.folder = Path(folder)
        self.job = job
        self.n_shards = n_shards
        manifest = self.folder / MANIFEST
        if manifest.is_file():
            try:
                found = json.loads(manifest.read_text(encoding="utf-8")).get("job")
            except (OSError, ValueError):
                found = None
            if found != job:
                raise RayError(
                    f"{self.folder} holds shards of another job (different inputs, model or options): "
                    "choose another --ray-shards folder, or delete this one"
                )
        elif self.folder.is_dir() and any(self.folder.glob("part-*.parquet")):
            raise RayError(f"{self.folder} holds Parquet shards but no {MANIFEST}: not a waste-edge shard folder")
        else:
            write_json(manifest, {"job": job, "shards": n_shards, **(meta or {})})

    def path(self, index: int) -> Path:
        return self.folder / f"part-{index:05d}.parquet"

    def done(self) -> set[int]:
        """Shards whose file is a readable Parquet file (a foreign or damaged file is redone and replaced)."""
        import pyarrow.parquet as pq

        out = set()
        for i in range(self.n_shards):
            p = self.path(i)
            if p.is_file():
                try:
                    pq.read_metadata(p)
                except Exception:
                    continue
                out.add(i)
        return out

    def write(self, index: int, table: Any) -> Path:
        return write_parquet(self.path(index), table)

    def read(self, index: int) -> Any:
        table = read_parquet(self.path(index))
        if table is None:
            raise RayError(f"{self.path(index)}: shard vanished or is unreadable; run the same command again to redo it")
        return table

    def remove(self) -> None:
        """After a successful merge: the shards are in the output now."""
        self.remove_folder(self.folder)

    @staticmethod
    def remove_folder(folder: Path) -> None:
        """Delete a shard folder: our own Parquet parts and manifest only, then the folder if that empties it."""
        folder = Path(folder)
        for f in [*folder.glob("part-*.parquet"), *folder.glob(".part-*.tmp"), folder / MANIFEST]:
            try:
                f.unlink()
            except OSError:
                pass
        try:
            folder.rmdir()
        except OSError:
            pass
