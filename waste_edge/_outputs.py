"""The one output-path guard: no verb may write over what it reads, into a folder, or onto its other outputs.

A tool that overwrites its own input loses data silently (`camera --device clip.mp4 --save clip.mp4`,
`data split m.csv --out m.csv`, `--jsonl` onto an image of the source folder). `check_output` refuses,
before anything is opened:

- an output that IS an input: the same file by `os.stat` identity (st_dev, st_ino), so a symlink or a
  hard link to an input is caught as well as the same spelling;
- a file output inside an input folder (or matched by an input glob) when the verb would pick it up as an
  input (an image or video suffix): the next run would classify its own output;
- a file output that is an existing folder, a folder output that is an existing file;
- two outputs of one run that are the same file.

Inputs and outputs are marked where they are declared, by their type: a command-line option that writes
parses to an `OutputFile` or `OutputFolder`, one that reads to an `InputPath`, `InputRun` or `InputSpec`
(the argparse types `output_file`, `output_folder`, `input_path`, `input_run`, `input_spec`). `guard_cli_outputs`
finds them in any parsed command line by that type, whatever the option is called, so a new output option
cannot escape the guard (tests/test_cli_options.py refuses a path option declared with a plain type).

What a verb reads is more than the paths it was given, and the finer marker types say so:

- `InputModel` (`input_model`): a model, and the files read with it (its rehearsal set, its card, an engine's
  JSON); a verb that takes a model and was given none reads the embedded default model (`DEFAULT_MODEL`);
- `InputCollection` (`input_collection`): a collection folder, whose frames, JSON sidecars and labels.csv are read;
- `InputRun`: a run directory, read by file name (RUN_SUFFIXES), not walked;
- `ApartFolder` (`apart_folder`): a folder the run keeps writing into and later reads back (`--collect DIR`);
  it must not overlap any source at all (`check_apart`): a looping folder source would classify its own
  collected frames;
- `OutputModel` (`output_model`): a model file written with a rehearsal set beside it (`adapt --out`).

Library entry points (predict's row writer, the camera's sinks, `adapt`) call `check_output` themselves.
Standard library only.
"""

from __future__ import annotations

import glob
import os
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, TypeVar

from waste_edge._io import IMAGE_SUFFIXES, VIDEO_SUFFIXES
from waste_edge.errors import WasteEdgeError

# What a folder input is read for: images and videos (predict, camera, data check, parity, calibration).
READ_SUFFIXES = IMAGE_SUFFIXES | VIDEO_SUFFIXES
# What a run directory is read for (card.json, head.json, metrics.json, a Keras model, weights): an output of
# another verb there would replace part of the run. Exported models (.onnx, .engine) may be written there.
RUN_SUFFIXES = frozenset({".json", ".keras", ".h5", ".safetensors", ".npz", ".txt", ".png", ".pt", ".pth"})

# What `adapt` reads from a collection folder (ARCHITECTURE.md contract 4): the frames, their JSON sidecars, labels.csv.
COLLECTION_SUFFIXES = IMAGE_SUFFIXES | frozenset({".json", ".csv"})
# Files beside a model that are read with it (runtime/rehearsal.py, runtime/model_path.py, engine_sidecar.py;
# tests/faults/test_inputs.py checks the names agree): `m.onnx` -> m.rehearsal.npz, m.json; `m.engine` -> m.engine.json.
REHEARSAL_SUFFIX = ".rehearsal.npz"
# The embedded default model (runtime/model_path.py), read when --model is left out.
DEFAULT_MODEL = Path(__file__).resolve().parent / "models" / "default.onnx"

_ConcretePath = type(Path())
T = TypeVar("T")


class OutputFile(_ConcretePath):  # type: ignore[misc, valid-type]
    """A file a verb writes ("-": stdout where the option allows it)."""


class OutputFolder(_ConcretePath):  # type: ignore[misc, valid-type]
    """A folder a verb writes into (a run directory, a report folder)."""


class InputPath(_ConcretePath):  # type: ignore[misc, valid-type]
    """A file or folder a verb reads."""


class InputRun(InputPath):
    """A run directory a verb reads: no output may land there under a name the run is read for (RUN_SUFFIXES)."""


class InputModel(InputPath):
    """A model a verb reads, with the files read beside it (`model_sidecars`)."""


class InputCollection(InputPath):
    """A collection folder a verb reads: its frames, their JSON sidecars and labels.csv (COLLECTION_SUFFIXES)."""


class InputSpec(str):
    """Something a verb reads that may be a path, a glob, a `NAME=PATH` camera, a URL or a camera index."""


class ApartFolder(OutputFolder):
    """A folder the run writes into and reads back later (`--collect`): kept apart from every source (`check_apart`)."""


class OutputModel(OutputFile):
    """A model file a verb writes together with the files beside it (`implied_outputs`: its rehearsal set)."""


def _marker(kind: type[T], name: str, absent: Path | None = None) -> Callable[[str], T]:
    """The argparse type that marks an option's value as `kind`; `name` is what argparse calls it in messages;
    `absent`: what the option reads when it is left out (the guard adds it; `_options.Option.add_to` registers it)."""

    def parse(text: str) -> T:
        return kind(text)

    parse.__name__ = name
    parse.absent = absent  # type: ignore[attr-defined]
    return parse


output_file = _marker(OutputFile, "file")
output_folder = _marker(OutputFolder, "folder")
apart_folder = _marker(ApartFolder, "folder")
output_model = _marker(OutputModel, "model file")
input_path = _marker(InputPath, "path")
input_run = _marker(InputRun, "run directory")
input_spec = _marker(InputSpec, "source")
input_model = _marker(InputModel, "model", absent=DEFAULT_MODEL)
input_collection = _marker(InputCollection, "collection folder")


class OutputPathError(WasteEdgeError):
    """An output path that would overwrite an input or cannot be written as asked."""


def _stat(path: Path) -> os.stat_result | None:
    try:
        return os.stat(path)
    except (OSError, ValueError):
        return None


def _expand(spec: str | os.PathLike) -> Iterator[Path]:
    """The existing paths an input names: itself, the files of a glob, the path of a `NAME=SOURCE` camera."""
    text = os.fspath(spec)
    if isinstance(text, bytes):
        text = os.fsdecode(text)
    if "=" in text and not os.path.exists(text):
        name, _, rest = text.partition("=")
        if name and os.path.sep not in name:
            text = rest
    if glob.has_magic(text) and not os.path.exists(text):
        yield from (Path(p) for p in glob.iglob(os.path.expanduser(text), recursive=True))
        return
    yield Path(os.path.expanduser(text))


def _inside(child: Path, folder: Path) -> bool:
    try:
        Path(os.path.realpath(child)).relative_to(os.path.realpath(folder))
        return True
    except ValueError:
        return False


def check_output(out: str | os.PathLike | None, inputs: Iterable[Any] = (), *, folder: bool = False,
                 option: str = "output", picked_up: frozenset[str] = READ_SUFFIXES, walked: bool = True) -> Path | None:
    """Refuse `out` when it would overwrite or feed an input (see the module docstring); return it as a Path.

    `None` and "-" (stdout) pass. `folder` says the output is a folder (a run directory, a report folder).
    `picked_up`: the suffixes read from an input folder; `walked`: input folders are read recursively, so an
    output folder inside one (its plots, frames, videos) would be read too (a run directory is not walked)."""
    if out is None or os.fspath(out) in ("-", b"-"):
        return None
    path = Path(os.fsdecode(os.fspath(out))).expanduser()
    st = _stat(path)
    if st is not None:
        is_dir = os.path.isdir(path)
        if folder and not is_dir:
            raise OutputPathError(f"{option} {path}: is an existing file, expected a folder to write into")
        if not folder and is_dir:
            raise OutputPathError(f"{option} {path}: is a folder; give a file name")
    elif os.path.islink(path) and not folder:
        pass  # a dangling symlink: writing creates its target, nothing is lost
    for item in _flatten(inputs):
        for src in _expand(item):
            sst = _stat(src)
            if sst is None:
                continue
            if st is not None and (st.st_dev, st.st_ino) == (sst.st_dev, sst.st_ino):
                if os.path.isdir(src):
                    raise OutputPathError(f"{option} {path}: is an input folder ({src}); choose another folder")
                raise OutputPathError(f"{option} {path}: is an input ({src}); writing it would destroy it: choose another path")
            if os.path.isdir(src):
                if not folder and path.suffix.lower() in picked_up and _inside(path, src):
                    raise OutputPathError(f"{option} {path}: lies inside the input folder {src} and would be read as an input; write it elsewhere")
                if folder and walked and _inside(path, src):
                    raise OutputPathError(f"{option} {path}: lies inside the input folder {src}, which is read with its sub-folders; "
                                          "write it elsewhere")
    return path


def model_sidecars(model: str | os.PathLike) -> list[Path]:
    """The files read with a model: its rehearsal set, its card, an engine's sidecar JSON (existing or not)."""
    p = Path(os.fsdecode(os.fspath(model))).expanduser()
    return [p.with_name(p.stem + REHEARSAL_SUFFIX), p.with_suffix(".json"), Path(str(p) + ".json")]


def implied_outputs(out: str | os.PathLike) -> list[Path]:
    """What `adapt --out` writes beside the model it was asked for (its rehearsal set)."""
    return model_sidecars(out)[:1]


def check_apart(folder: str | os.PathLike | None, inputs: Iterable[Any], *, option: str = "output folder") -> Path | None:
    """Refuse an output folder that is, contains, or lies inside an input (a file, a folder, a glob's folder).

    For folders a run writes into and reads back (`--collect`): a folder or looping source inside it, or it
    inside a source folder, would feed the run its own output (a collection grew from 2 to 419 frames)."""
    if folder is None:
        return None
    path = Path(os.fsdecode(os.fspath(folder))).expanduser()
    if path.exists() and not path.is_dir():
        raise OutputPathError(f"{option} {path}: is an existing file, expected a folder to write into")
    for item in _flatten(inputs):
        text = os.fsdecode(os.fspath(item))
        roots = [_glob_root(text)] if glob.has_magic(text) and not os.path.exists(text) else list(_expand(item))
        for src in roots:
            if os.path.exists(src) and (_inside(path, src) or _inside(src, path)):
                what = f"the source {text}" if os.fspath(src) == text else f"the source {text} ({src})"
                raise OutputPathError(f"{option} {path}: overlaps {what}; keep it apart from every source, neither holding "
                                      "one nor inside one (a source folder would read back what is written there)")
    return path


def _glob_root(pattern: str) -> Path:
    """The folder a glob searches: its leading parts without wildcards (`shots/**/*.jpg` -> shots)."""
    root: list[str] = []
    for part in Path(os.path.expanduser(pattern)).parts:
        if glob.has_magic(part):
            break
        root.append(part)
    return Path(*root) if root else Path(".")


def _flatten(values: Iterable[Any]) -> Iterator[Any]:
    for v in values:
        if v is None or isinstance(v, bool):
            continue
        if isinstance(v, (list, tuple)):
            yield from _flatten(v)
        elif isinstance(v, (str, bytes, os.PathLike)):
            yield v


def check_distinct(outputs: Iterable[tuple[str, Path]]) -> None:
    """Two outputs of one run must not be the same file (the second would overwrite the first)."""
    seen: dict[str, str] = {}
    for option, path in outputs:
        key = os.path.realpath(path)
        if key in seen:
            raise OutputPathError(f"{option} {path}: is also {seen[key]}; give each output its own path")
        seen[key] = f"{option}"


def _marked(value: Any, kinds: tuple[type, ...]) -> Iterator[Any]:
    if isinstance(value, kinds):
        yield value
    elif isinstance(value, (list, tuple)):
        for v in value:
            yield from _marked(v, kinds)


ABSENT = "_absent_"  # namespace key prefix: what an option reads when it is left out (set by `_options.Option.add_to`)


def _reads(source: Any) -> tuple[list[Any], frozenset[str], bool]:
    """(the paths an input reads, the suffixes read from them when they are folders, whether folders are walked)."""
    if isinstance(source, InputModel):
        return [source, *model_sidecars(source)], READ_SUFFIXES, True
    if isinstance(source, InputRun):
        return [source], RUN_SUFFIXES, False
    if isinstance(source, InputCollection):
        return [source], COLLECTION_SUFFIXES, True
    return [source], READ_SUFFIXES, True


def guard_cli_outputs(args: Any) -> None:
    """`check_output` for every output of a parsed command line against every input, both found by type."""
    ns = vars(args)
    inputs = [v for name, value in ns.items() if not name.startswith(ABSENT) for v in _marked(value, (InputPath, InputSpec))]
    inputs += [ns[key] for key in ns if key.startswith(ABSENT) and ns.get(key[len(ABSENT):]) in (None, [])]  # e.g. the default model
    sources = [v for v in inputs if isinstance(v, InputSpec)]
    checked: list[tuple[str, Path]] = []
    for name, value in ns.items():
        for out in _marked(value, (OutputFile, OutputFolder)):
            folder = isinstance(out, OutputFolder)
            option = "--" + name.replace("_", "-")
            path = check_output(out, [], folder=folder, option=option)
            for source in inputs:
                paths, reads, walked = _reads(source)
                check_output(out, paths, folder=folder, option=option, picked_up=reads, walked=walked)
                if isinstance(out, OutputModel):
                    for extra in implied_outputs(out):
                        check_output(extra, paths, option=f"{option} (writes {extra.name} beside it)", picked_up=frozenset())
            if isinstance(out, ApartFolder):
                check_apart(out, sources, option=option)
            if path is not None:
                checked.append((option, path))
    check_distinct(checked)


# -- cells and streams -----------------------------------------------------------------------------------

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(value: Any) -> Any:
    """A CSV cell a spreadsheet will not execute: text starting with = + - @ tab or CR gets a leading '
    (OWASP, CSV injection). Numbers pass unchanged; only text (class names, paths, errors) is touched."""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


def is_broken_pipe(e: BaseException) -> bool:
    """A reader that went away (`| head`): the writer should stop quietly, not report an error."""
    import errno

    return isinstance(e, BrokenPipeError) or (isinstance(e, OSError) and e.errno == errno.EPIPE)
