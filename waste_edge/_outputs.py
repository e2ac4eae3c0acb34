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
Library entry points (predict's row writer, the camera's sinks) call `check_output` themselves.
Standard library only.
"""

from __future__ import annotations

import glob
import os
from pathlib import Path
from typing import Any, Iterable, Iterator

from waste_edge._io import IMAGE_SUFFIXES, VIDEO_SUFFIXES
from waste_edge.errors import WasteEdgeError

# What a folder input is read for: images and videos (predict, camera, data check, parity, calibration).
READ_SUFFIXES = IMAGE_SUFFIXES | VIDEO_SUFFIXES
# What a run directory is read for (card.json, head.json, metrics.json, a Keras model, weights): an output of
# another verb there would replace part of the run. Exported models (.onnx, .engine) may be written there.
RUN_SUFFIXES = frozenset({".json", ".keras", ".h5", ".safetensors", ".npz", ".txt", ".png", ".pt", ".pth"})

_ConcretePath = type(Path())


class OutputFile(_ConcretePath):  # type: ignore[misc, valid-type]
    """A file a verb writes ("-": stdout where the option allows it)."""


class OutputFolder(_ConcretePath):  # type: ignore[misc, valid-type]
    """A folder a verb writes into (a run directory, a report folder)."""


class InputPath(_ConcretePath):  # type: ignore[misc, valid-type]
    """A file or folder a verb reads."""


class InputRun(InputPath):
    """A run directory a verb reads: no output may land there under a name the run is read for (RUN_SUFFIXES)."""


class InputSpec(str):
    """Something a verb reads that may be a path, a glob, a `NAME=PATH` camera, a URL or a camera index."""


def output_file(text: str) -> OutputFile:
    return OutputFile(text)


def output_folder(text: str) -> OutputFolder:
    return OutputFolder(text)


def input_path(text: str) -> InputPath:
    return InputPath(text)


def input_run(text: str) -> InputRun:
    return InputRun(text)


def input_spec(text: str) -> InputSpec:
    return InputSpec(text)


for _f, _name in ((output_file, "file"), (output_folder, "folder"), (input_path, "path"), (input_run, "run directory"), (input_spec, "source")):
    _f.__name__ = _name  # what argparse calls the type in its messages


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
                 option: str = "output", picked_up: frozenset[str] = READ_SUFFIXES) -> Path | None:
    """Refuse `out` when it would overwrite or feed an input (see the module docstring); return it as a Path.

    `None` and "-" (stdout) pass. `folder` says the output is a folder (a run directory, a report folder)."""
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
    return path


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


def guard_cli_outputs(args: Any) -> None:
    """`check_output` for every output of a parsed command line against every input, both found by type."""
    ns = vars(args)
    inputs = [(name, v) for name, value in ns.items() for v in _marked(value, (InputPath, InputSpec))]
    checked: list[tuple[str, Path]] = []
    for name, value in ns.items():
        for out in _marked(value, (OutputFile, OutputFolder)):
            folder = isinstance(out, OutputFolder)
            option = "--" + name.replace("_", "-")
            path = check_output(out, [], folder=folder, option=option)
            for _, source in inputs:
                check_output(out, [source], folder=folder, option=option,
                             picked_up=RUN_SUFFIXES if isinstance(source, InputRun) else READ_SUFFIXES)
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
