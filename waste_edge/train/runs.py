"""One model of a run directory (ARCHITECTURE.md, contract 1), any kind: `open_run(path) -> LinearRun | KerasRun`.

The card's `kind` picks a class from `RUN_KINDS`; the class validates the card and its model files on load
(shapes, types, finite numbers, checksums, head width == encoder width, distinct classes: a one-line
`RunError` naming the file and the field otherwise) and answers what every verb asks of a run:

- `kind`, `classes`, `display_names`, `encoder_id`, `head_sha256`, `preprocess`: what export writes into the
  fused model's metadata and parity checks a model against;
- `reference(threads)`: the study's pipeline of this run (`train.reference.Reference`);
- `evaluate(data, ...)`: the report files of `waste-edge eval`.

A new kind (e.g. fine-tuned encoders) is a class here plus a row in `RUN_KINDS`, and a row in export's fuser
table. Heavy libraries (torch, sklearn, TensorFlow) are imported only by `reference()` / `evaluate()`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, ClassVar, Mapping

import numpy as np

from waste_edge._io import Log, file_sha256, quiet
from waste_edge.data.discovery import DatasetError, Sample, discover
from waste_edge.data.labels import display_names as default_display_names
from waste_edge.train.card import CardFields, RunError, make_card, read_card, write_card
from waste_edge.train.evaluate import EvalReport, write_report
from waste_edge.train.head import HeadError, LinearHead
from waste_edge.train.keras.archs import ARCH_NAMES, MODEL_FILE, get_arch
from waste_edge.train.preprocess import PreprocessSpec
from waste_edge.train.reference import Reference

class Run(ABC):
    """A validated run directory. Subclasses set `kind` and `files`, and validate their own fields in `_validate`."""

    kind: ClassVar[str]
    files: ClassVar[tuple[str, ...]]  # what the kind keeps besides card.json and the report files

    def __init__(self, path: Path, card: dict[str, Any]) -> None:
        self.path = Path(path)
        self.card = card
        f = CardFields(card, self.path / "card.json")
        self.classes: list[str] = f.names("classes")
        names = f.get("display_names", list, default=None)
        self.display_names: list[str] = f.names("display_names", distinct=False, at_least=len(self.classes)) if names else list(self.classes)
        if len(self.display_names) != len(self.classes):
            raise f.error("display_names", f"must have one name per class ({len(self.classes)}), got {len(self.display_names)}")
        self.encoder_id: str = f.get("encoder.id", str)
        try:
            self.preprocess = PreprocessSpec.from_dict(f.get("preprocess", dict))
        except (KeyError, TypeError, ValueError) as e:
            raise f.error("preprocess", f"is not a preprocessing spec ({type(e).__name__}: {e})") from None
        f.finite_numbers("metrics")
        self._validate(f)

    @abstractmethod
    def _validate(self, f: CardFields) -> None:
        ...

    @property
    @abstractmethod
    def head_sha256(self) -> str:
        """The sha256 of the model part a fused graph embeds (head.json's content, model.keras's bytes)."""

    @abstractmethod
    def reference(self, threads: int = 2) -> Reference:
        ...

    @property
    @abstractmethod
    def title(self) -> str:
        """What the run is, for report titles."""

    @abstractmethod
    def score(self, samples: list[Sample], *, batch_size: int, workers: int, threads: int | None, cache_dir: str | Path | None,
              progress: bool, log: Log, desc: str, runner: Any = None) -> tuple[list[str], np.ndarray, list[tuple[str, str]]]:
        """(labels, probabilities [N, K], unreadable (path, reason)) of the readable `samples`, the study's way.

        `runner` (a `train.embeddings.FeatureRunner`: a CUDA device, a Ray cluster) computes embeddings; kinds
        that have none refuse it rather than ignore it."""

    def evaluate(
        self, data: str | Path, *, split: str = "test", out: str | Path | None = None, batch_size: int = 32,
        workers: int = 2, threads: int | None = None, cache_dir: str | Path | None = None, progress: bool = True,
        log: Log = quiet, runner: Any = None,
    ) -> EvalReport:
        """Re-evaluate on any dataset split: metrics.json, report.txt and the two plots in `out` (default <run>/eval-<split>)."""
        ds = discover(data)
        samples = ds.require(split)
        unknown = sorted({s.label for s in samples} - set(self.classes))
        if unknown:
            raise DatasetError(f"labels {unknown} in {data} are not classes of this model {self.classes}")
        labels, proba, unreadable = self.score(samples, batch_size=batch_size, workers=workers, threads=threads,
                                               cache_dir=cache_dir, progress=progress, log=log, desc=split, runner=runner)
        return write_report(
            Path(out) if out is not None else self.path / f"eval-{split.lower()}", labels, proba, self.classes,
            unreadable=unreadable + list(ds.problems), title=f"{self.title} on {Path(data).name} ({split})",
            extra={"split": split, "kind": self.kind, "encoder": self.encoder_id, "run": str(self.path.resolve()), "data": str(Path(data).resolve())},
        )

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.path)!r})"


class LinearRun(Run):
    """A frozen encoder + the study's logistic head (card kind "linear", head.json)."""

    kind = "linear"
    files = ("head.json",)

    def _validate(self, f: CardFields) -> None:
        self.encoder_dim = f.positive_int("encoder.dim")
        self.encoder_weights_sha256 = f.sha256("encoder.weights.sha256", optional=True)
        f.sha256("head.sha256")
        try:
            self.head = LinearHead.load(self.path / "head.json")
        except HeadError as e:
            raise RunError(str(e)) from None
        if f.get("head.sha256", str) != self.head.sha256():
            raise RunError(f"{self.path}: head.json does not match the card's head sha256 (edited after training?)")
        if self.classes != self.head.classes:
            raise RunError(f"{self.path}: card classes {self.classes} differ from head classes {self.head.classes}")
        if self.head.dim != self.encoder_dim:
            raise RunError(f"{self.path}: head.json expects {self.head.dim}-d features but the card's encoder {self.encoder_id} gives {self.encoder_dim}")

    @classmethod
    def create(
        cls,
        run_dir: str | Path,
        encoder_card: Mapping[str, Any],
        head: LinearHead,
        display_names: list[str] | None = None,
        *,
        data: Mapping[str, Any] | None = None,
        metrics: Mapping[str, Any] | None = None,
        training: Mapping[str, Any] | None = None,
    ) -> "LinearRun":
        """Write head.json and card.json (for an encoder's `Encoder.card()`) and return the run, validated."""
        path = Path(run_dir)
        path.mkdir(parents=True, exist_ok=True)
        head.save(path / "head.json")
        card = make_card(
            cls.kind, encoder=encoder_card, preprocess=encoder_card["preprocess"], classes=head.classes,
            display_names=display_names or default_display_names(head.classes),
            head={"file": "head.json", "sha256": head.sha256(), "l2_normalize": head.l2_normalize, "hyperparameters": head.hyperparameters},
            data=data, metrics=metrics, training=training,
        )
        write_card(path, card)
        return cls(path, card)

    @property
    def head_sha256(self) -> str:
        return self.head.sha256()

    def encoder(self) -> Any:
        """The run's encoder (`train.encoders.Encoder`), its weights checked against the card's sha256.

        Weights referenced relative to the run directory resolve there (a run may ship its own encoder)."""
        from waste_edge.train.encoders import EncoderError, create_encoder

        enc = create_encoder(self.encoder_id, root=self.path)
        if enc.weights.get("sha256") != self.encoder_weights_sha256:
            raise EncoderError(f"{self.path}: the encoder weights found here differ from the run's (sha256 {self.encoder_weights_sha256})")
        if enc.dim != self.head.dim:
            raise RunError(f"{self.path}: head expects {self.head.dim}-d features but {enc.id} gives {enc.dim}")
        return enc

    @property
    def title(self) -> str:
        return f"{self.encoder_id} + logistic head"

    def reference(self, threads: int = 2) -> Reference:
        from waste_edge.train.reference import ReferencePipeline

        return ReferencePipeline(self, threads)

    def score(self, samples: list[Sample], *, batch_size: int, workers: int, threads: int | None, cache_dir: str | Path | None,
              progress: bool, log: Log, desc: str, runner: Any = None) -> tuple[list[str], np.ndarray, list[tuple[str, str]]]:
        from waste_edge.train.embeddings import extract_embeddings

        emb = extract_embeddings(self.encoder(), samples, batch_size=batch_size, workers=workers, threads=threads,
                                 cache_dir=cache_dir, progress=progress, desc=desc, log=log, runner=runner)
        return emb.labels, self.head.predict_proba(emb.features), emb.unreadable()


class KerasRun(Run):
    """One of the study's Keras baselines (card kind "keras", model.keras)."""

    kind = "keras"
    files = (MODEL_FILE,)

    def _validate(self, f: CardFields) -> None:
        self.arch: str = f.get("arch", str)
        if self.arch not in ARCH_NAMES:
            raise f.error("arch", f"must be one of {', '.join(ARCH_NAMES)}, got {self.arch!r}")
        self.imgsz = f.positive_int("imgsz")
        if self.imgsz < get_arch(self.arch).min_imgsz or self.imgsz != self.preprocess.size:
            raise f.error("imgsz", f"must be >= {get_arch(self.arch).min_imgsz} and equal preprocess.size, got {self.imgsz}")
        self.model_path = self.path / f.get("model.file", str)
        if not _inside_run(self.model_path, self.path):  # a card is user input: it may not point anywhere else
            raise f.error("model.file", f"must name a file inside the run directory, got {f.get('model.file', str)!r}")
        self.model_sha256: str = f.sha256("model.sha256")  # type: ignore[assignment]
        if not self.model_path.is_file():
            raise RunError(f"{self.path}: {self.model_path.name} is missing")
        if file_sha256(self.model_path) != self.model_sha256:
            raise RunError(f"{self.model_path} does not match the card's sha256 (replaced after training?)")

    @property
    def head_sha256(self) -> str:
        return self.model_sha256  # the whole Keras model is the "head" of a baseline

    @property
    def spec(self) -> PreprocessSpec:
        return self.preprocess

    def load_model(self, threads: int | None = 2) -> Any:
        """The saved Keras model (safe_mode: no arbitrary code from the file)."""
        from waste_edge.train.keras.archs import load_model

        return load_model(self.model_path, threads)

    @property
    def title(self) -> str:
        return f"keras {self.arch}"

    def reference(self, threads: int = 2) -> Reference:
        from waste_edge.train.keras.reference import KerasReference

        return KerasReference(self, threads)

    def score(self, samples: list[Sample], *, batch_size: int, workers: int, threads: int | None, cache_dir: str | Path | None,
              progress: bool, log: Log, desc: str, runner: Any = None) -> tuple[list[str], np.ndarray, list[tuple[str, str]]]:
        from waste_edge.train.keras.archs import predict_images

        if runner is not None:
            raise RunError(f"{self.path}: --ray, --torch-device and --amp apply to embedding extraction (linear runs); "
                           "a keras run evaluates with TensorFlow in this process")
        from waste_edge.train.keras.data import load_images

        model = self.load_model(threads or 2)
        images = load_images(samples, self.spec, workers=workers, progress=progress, desc=desc)
        if not len(images.samples):
            raise DatasetError(f"none of the {len(samples)} {desc} images could be decoded")
        return images.labels, predict_images(model, images.images, batch_size), images.unreadable()


# The kinds of run directory; a card's `kind` picks the class (cards without one are linear: the first format).
RUN_KINDS: dict[str, type[Run]] = {cls.kind: cls for cls in (LinearRun, KerasRun)}


def _inside_run(path: Path, run_dir: Path) -> bool:
    """`path` resolves (symlinks followed) to somewhere under `run_dir`."""
    try:
        path.resolve().relative_to(run_dir.resolve())
        return True
    except (ValueError, OSError, RuntimeError):  # RuntimeError: a symlink loop
        return False


def open_run(run_dir: str | Path) -> Run:
    """The validated run in `run_dir`, whatever its kind."""
    card = read_card(run_dir)
    kind = card.get("kind", LinearRun.kind)
    if kind not in RUN_KINDS:
        raise RunError(f"{Path(run_dir) / 'card.json'}: field 'kind' must be one of {', '.join(RUN_KINDS)}, got {kind!r}")
    return RUN_KINDS[kind](Path(run_dir), card)
