"""Learn at the bin, in the service: the Review queue of collected frames, labels, and adapt + hot swap.

The collection folder is the one `--collect DIR` fills (ARCHITECTURE.md, contract "collection folder"); labels go to its
`labels.csv` through `runtime.collection.set_labels`, so a file written by hand and the page's clicks mix.
`adapt_and_swap` refits the served model's head on those labels (`waste_edge.adapt`, handed in as
`ServeConfig.adapter` since serve imports only the runtime; scikit-learn + onnx, never torch) into a NEW file of
the service's models folder, named by the service (`catalogue.ModelCatalogue.adapted_path`; a request cannot name
it), then hands it to `ModelHolder.swap`: the cameras keep classifying with the old model until the new one has
loaded, so no frame is dropped. Frame names from requests reach the folder only through `names.member_file`.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

from waste_edge._io import IMAGE_SUFFIXES
from waste_edge.errors import WasteEdgeError
from waste_edge.runtime.collection import list_frames, read_labels, set_labels
from waste_edge.runtime.rehearsal import rehearsal_path
from waste_edge.serve.names import BadNameError, member_file

if TYPE_CHECKING:
    from waste_edge.serve.catalogue import ModelCatalogue
    from waste_edge.serve.service import Service


class ReviewError(WasteEdgeError):
    """A review or adapt request the service cannot do (no --collect, bad label)."""


class AdaptRunning(ReviewError):
    """An adaptation is already running (HTTP 409: try again when it has finished)."""


def collection_folder(svc: "Service") -> Path:
    if svc.config.collect is None:
        raise ReviewError("this service does not collect frames: start it with --collect DIR")
    return Path(svc.config.collect.folder)


def review_queue(svc: "Service") -> dict[str, Any]:
    """Every collected frame with its model guess (from the sidecar) and its label so far, oldest first."""
    folder = collection_folder(svc)
    labels = read_labels(folder, svc.classes, svc.display_names, check_files=False)
    frames = []
    for f in list_frames(folder) if folder.is_dir() else []:
        side = f.sidecar or {}
        frames.append({"file": f.file, "label": labels.labels.get(f.file), "guess": side.get("prediction"),
                       "confidence": side.get("confidence"), "camera": side.get("camera"), "time": side.get("time")})
    return {"folder": str(folder), "classes": svc.classes, "display_names": svc.display_names, "counts": labels.counts(),
            "problems": labels.problems, "frames": frames}


def frame_path(svc: "Service", file: str) -> Path:
    """The image of one collected frame: an image file inside the folder, reached without symbolic links."""
    path = member_file(collection_folder(svc), file, "frame")
    if path.suffix.lower() not in IMAGE_SUFFIXES:
        raise BadNameError(f"frame {file!r} is not an image of the collection")
    return path


def label_frames(svc: "Service", updates: Mapping[str, str | None]) -> dict[str, Any]:
    """Set (class name, display name or `skip`) or clear (None) labels; answers the new counts."""
    from waste_edge.runtime.collection import CollectionError

    folder = collection_folder(svc)
    for name in updates:
        frame_path(svc, name)  # BadNameError: not a frame of this folder
    try:
        labels = set_labels(folder, updates, svc.classes, svc.display_names)
    except CollectionError as e:
        raise ReviewError(str(e)) from None
    return {"counts": labels.counts(), "problems": labels.problems}


def adapt_and_swap(svc: "Service", catalogue: "ModelCatalogue") -> dict[str, Any]:
    """Refit the served model's head on the folder's labels into a new file of the models folder, then swap it in; blocking."""
    folder = collection_folder(svc)
    adapt = svc.config.adapter
    if adapt is None:
        raise ReviewError("adapting is not available in this service (the [adapt] extra: scikit-learn, onnx)")
    if not svc.adapt_lock.acquire(blocking=False):
        raise AdaptRunning("an adaptation is already running")
    try:
        base = svc.holder.current
        target = catalogue.adapted_path(base.path)
        result = adapt(base.path, folder, target, threads=svc.config.model.threads)
        try:
            new = svc.holder.swap(result.out)
        except BaseException:  # the new model failed its probe: it does not stay in the folder to be picked later
            for made in (Path(result.out), rehearsal_path(result.out)):
                made.unlink(missing_ok=True)
            raise
        catalogue.prune(new.sha256)
        return {"model": new.info().to_dict(), "base_sha256": result.base_sha256, "labelled": result.n_labelled,
                "problems": result.problems, "seconds": result.seconds, "summary": result.summary()}
    finally:
        svc.adapt_lock.release()
