"""The one model of the service, behind a holder that can swap it atomically between inference calls.

Every inference (a camera batch, a classify request) takes the current model with `use()`, which counts
it as in use; `swap()` loads the new model first (outside the lock, so frames keep flowing while it
loads), checks that it answers with the same classes, then replaces the reference in one step. The old
model is closed once its last in-flight call returns, so a swap drops no frame and frees the old session.
`info()` (path, sha256, description) is what `/api/v1/status` reports.
"""

from __future__ import annotations

import contextlib
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from waste_edge._io import file_sha256
from waste_edge.errors import WasteEdgeError
from waste_edge.runtime.classifier import Classifier
from waste_edge.serve.snapshots import ModelInfo


@dataclass(frozen=True)
class LoadedModel:
    classifier: Classifier
    path: Path
    sha256: str
    loaded_at: float
    description: str = field(default="")

    def info(self) -> ModelInfo:
        meta = self.classifier.metadata
        return ModelInfo(str(self.path), self.path.name, self.sha256, round(self.loaded_at, 3), tuple(self.classifier.classes),
                         tuple(self.classifier.display_names), meta.encoder, meta.variant, self.classifier.backend,
                         self.classifier.provider, self.description)


def load_model(path: str | Path | None, backend: str = "auto", threads: int | None = None) -> LoadedModel:
    clf = Classifier(path, backend, threads=threads)
    return LoadedModel(clf, clf.path, file_sha256(clf.path), time.time(), clf.describe())


class ModelHolder:
    def __init__(self, model: LoadedModel, *, backend: str = "auto", threads: int | None = None) -> None:
        self._model = model
        self._users: dict[int, int] = {id(model): 0}
        self._retired: dict[int, LoadedModel] = {}
        self._lock = threading.Lock()
        self.backend = backend
        self.threads = threads
        self.swaps = 0

    @property
    def current(self) -> LoadedModel:
        """The model new calls get (for reading its info; inference goes through `use()`)."""
        return self._model

    @contextlib.contextmanager
    def use(self) -> Iterator[LoadedModel]:
        with self._lock:
            model = self._model
            self._users[id(model)] = self._users.get(id(model), 0) + 1
        try:
            yield model
        finally:
            with self._lock:
                key = id(model)
                self._users[key] -= 1
                retired = self._retired.pop(key, None) if self._users[key] == 0 else None
                if retired is not None:
                    del self._users[key]
            if retired is not None:
                retired.classifier.close()

    def swap(self, path: str | Path) -> LoadedModel:
        """Load `path` and make it the model of every later inference call; returns it.

        Raises `WasteEdgeError` (and keeps the current model) when the file does not load or its classes
        differ from the current model's: the cameras' smoothing state and the page assume the same classes."""
        new = load_model(path, self.backend, self.threads)
        if new.classifier.classes != self._model.classifier.classes:
            new.classifier.close()
            raise WasteEdgeError(f"{new.path.name}: classes {new.classifier.classes} differ from the served model's {self._model.classifier.classes}")
        with self._lock:
            old = self._model
            self._model = new
            self._users[id(new)] = 0
            self.swaps += 1
            idle = self._users[id(old)] == 0
            if idle:
                del self._users[id(old)]
            else:
                self._retired[id(old)] = old
        if idle:
            old.classifier.close()
        return new

    def close(self) -> None:
        with self._lock:
            models = [self._model, *self._retired.values()]
            self._retired.clear()
        for m in models:
            m.classifier.close()
