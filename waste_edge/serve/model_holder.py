"""The one model of the service, behind a holder that can swap it atomically between inference calls.

Every inference (a camera batch, a classify request) takes the current model with `use()`, which counts
it as in use; `swap()` loads the new model first (outside the lock, so frames keep flowing while it
loads), probes it (`runtime.model_check`: finite probabilities summing to 1, one per class of its metadata)
and checks that it answers with the same classes, then replaces the reference in one step. The old
model is closed once its last in-flight call returns, so a swap drops no frame and frees the old session.
`info()` (path, sha256, description) is what `/api/v1/status` reports; `problems()` is what /healthz adds when
the served model failed a classify request (NaN at run time) and has not answered since.
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
from waste_edge.runtime.model_check import probe_classifier
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


@dataclass(frozen=True)
class ModelFailure:
    sha256: str
    error: str
    count: int


def load_model(path: str | Path | None, backend: str = "auto", threads: int | None = None) -> LoadedModel:
    """Load and probe a model (`ModelCheckError` when it does not answer like a classifier; nothing stays open)."""
    clf = Classifier(path, backend, threads=threads)
    try:
        probe_classifier(clf)
        sha = file_sha256(clf.path)
    except BaseException:
        clf.close()
        raise
    return LoadedModel(clf, clf.path, sha, time.time(), clf.describe())


class ModelHolder:
    def __init__(self, model: LoadedModel, *, backend: str = "auto", threads: int | None = None) -> None:
        self._model = model
        self._users: dict[int, int] = {id(model): 0}
        self._retired: dict[int, LoadedModel] = {}
        self._lock = threading.Lock()
        self.backend = backend
        self.threads = threads
        self.swaps = 0
        self._failure: ModelFailure | None = None  # failed classify calls of the current model since its last answer

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

    def note_failure(self, sha256: str, error: str) -> None:
        """A classify call of model `sha256` failed (NaN answer, runtime error): unhealthy until one succeeds."""
        with self._lock:
            if sha256 != self._model.sha256:
                return  # a retired model's late failure says nothing about the one serving now
            count = self._failure.count + 1 if self._failure and self._failure.sha256 == sha256 else 1
            self._failure = ModelFailure(sha256, error, count)

    def note_success(self, sha256: str) -> None:
        if self._failure is not None and self._failure.sha256 == sha256:
            with self._lock:
                self._failure = None

    def problems(self) -> list[str]:
        failure = self._failure
        if failure is None or failure.sha256 != self._model.sha256:
            return []
        return [f"model {self._model.path.name} failed {failure.count} classify request(s) since its last answer: {failure.error}"]

    def swap(self, path: str | Path) -> LoadedModel:
        """Load `path` and make it the model of every later inference call; returns it.

        Raises `WasteEdgeError` (and keeps the current model) when the file does not load, fails the probe, or
        its classes differ from the current model's: the cameras' smoothing state and the page assume the same
        classes. Only the service's own code names `path` (a file of its models folder, never a client's path)."""
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
