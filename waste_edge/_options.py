"""Command-line options declared once, on the dataclass fields they fill.

A library dataclass (`DecisionOptions`, `CollectConfig`, `SourceOptions`, `ModelOptions`, `ExportOptions`, ...)
declares each of its user-facing fields with `option(...)`: the flag, the help text, the argparse type. The CLI
then adds the whole group to every verb that takes it (`add_options`) and builds the dataclass back from the
parsed arguments (`options_from`), so a flag is written in one place with one meaning, its help is next to
the field it sets, and a new field is a new flag on every verb at once.

The argparse types here bound every number a user controls (issue 12: a --batch-size 100000 took 9.7 GB,
--threads 100000 hung, --smooth 1e9 allocated gigabytes); path types are the markers of `_outputs.py`, so the
output guard sees every input and output by its type, not its name. Standard library only.
"""

from __future__ import annotations

import argparse
import math
from dataclasses import MISSING, dataclass, field, fields
from typing import Any, Callable, Sequence

OPTION = "waste_edge.option"


# -- argparse types ------------------------------------------------------------------------------------------


def int_in(lo: int, hi: int) -> Callable[[str], int]:
    """An integer in [lo, hi]."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be an integer, got {text!r}") from None
        if not lo <= value <= hi:
            raise argparse.ArgumentTypeError(f"must be between {lo} and {hi}, got {text}")
        return value

    parse.__name__ = "integer"
    return parse


def float_in(lo: float, hi: float, *, open_lo: bool = False, open_hi: bool = False) -> Callable[[str], float]:
    """A finite number in [lo, hi] (open at either end on request); nan, inf and out-of-range values are refused."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None
        if not math.isfinite(value) or value > hi or value < lo or (open_lo and value == lo) or (open_hi and value == hi):
            raise argparse.ArgumentTypeError(f"must be a finite number {'>' if open_lo else '>='} {lo} and {'<' if open_hi else '<='} {hi}, got {text}")
        return value

    parse.__name__ = "number"
    return parse


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def probability(text: str) -> float:
    return float_in(0.0, 1.0)(text)


def fraction(text: str) -> float:
    """Strictly between 0 and 1."""
    return float_in(0.0, 1.0, open_lo=True, open_hi=True)(text)


MAX_BATCH = 1024
MAX_THREADS = 256
MAX_WORKERS = 64
MAX_PIXELS = 178_956_970  # data.decode.MAX_PIXELS_CEILING: the most pixels any --max-pixels may allow (Pillow's bomb limit)
batch_size = int_in(1, MAX_BATCH)
threads = int_in(1, MAX_THREADS)
workers = int_in(1, MAX_WORKERS)


# -- declaring options on dataclass fields -------------------------------------------------------------------


@dataclass(frozen=True)
class Option:
    """How one dataclass field appears on the command line."""

    flags: tuple[str, ...]
    help: str
    kwargs: dict[str, Any]  # type, metavar, choices, action, nargs ... as argparse takes them
    dest: str

    def add_to(self, parser: Any, field_default: Any, **override: Any) -> argparse.Action:
        kwargs = {"default": field_default, "help": self.help, **self.kwargs, **override}
        absent = getattr(kwargs.get("type"), "absent", None)  # what the option reads when left out (the default model)
        if absent is not None:
            from waste_edge._outputs import ABSENT

            parser.set_defaults(**{ABSENT + self.dest: kwargs["type"](str(absent))})  # for the output guard only
        return parser.add_argument(*self.flags, dest=self.dest, **kwargs)


def option(default: Any = MISSING, *flags: str, help: str, default_factory: Any = MISSING, dest: str | None = None, **kwargs: Any) -> Any:
    """A dataclass field that is also a command-line option: `option(0.0, "--threshold", help=..., type=probability)`.

    `help` may use `%(default)s`. The argparse destination is the first flag's name (`--smooth-mode` ->
    `smooth_mode`) unless `dest` is given (a negative flag such as `--no-show` filling `show`)."""
    if not flags:
        raise ValueError("option() needs at least one flag")
    kwargs.pop("default", None)
    spec = Option(tuple(flags), help, kwargs, dest or flags[0].lstrip("-").replace("-", "_"))
    if default_factory is not MISSING:
        return field(default_factory=default_factory, metadata={OPTION: spec})
    return field(default=default, metadata={OPTION: spec})


def like(cls: type, name: str, default: Any = MISSING, *, default_factory: Any = MISSING, help: str | None = None, **kwargs: Any) -> Any:
    """A field declared by the option of `cls.name` (same flag, same meaning), with this field's default and
    argparse settings: how a verb takes a flag another group declares (`bench --model`, repeatable)."""
    spec = cls.__dataclass_fields__[name].metadata[OPTION]
    return option(default, *spec.flags, help=help or spec.help, default_factory=default_factory, dest=spec.dest, **{**spec.kwargs, **kwargs})


def declared(cls: type) -> list[tuple[str, Option, Any]]:
    """(field name, Option, default) of every field of `cls` declared with `option()`."""
    out = []
    for f in fields(cls):
        spec = f.metadata.get(OPTION)
        if spec is None:
            continue
        default = f.default if f.default is not MISSING else (f.default_factory() if f.default_factory is not MISSING else None)  # type: ignore[misc]
        out.append((f.name, spec, default))
    return out


def add_options(
    parser: argparse.ArgumentParser,
    cls: type,
    *,
    title: str | None = None,
    description: str | None = None,
    only: Sequence[str] | None = None,
    exclude: Sequence[str] = (),
    override: dict[str, dict[str, Any]] | None = None,
    unset: bool = False,
) -> Any:
    """Add the options of dataclass `cls` to `parser` (in an argument group when `title` is given, or `cls.GROUP`).

    `only` / `exclude` pick fields by name; `override[name]` changes argparse settings of one flag for this verb
    (a default, a help text, `action="append"`): the flag, its destination and its meaning stay the field's.
    `unset`: every flag defaults to None, so the verb can tell which ones the user gave."""
    group = getattr(cls, "GROUP", None)  # a ClassVar (title, description): the options' own argument group
    if title is None and group is not None:
        title, description = group[0], description or group[1]
    target = parser.add_argument_group(title, description) if title else parser
    override = override or {}
    for name, spec, default in declared(cls):
        if (only is not None and name not in only) or name in exclude:
            continue
        spec.add_to(target, None if unset else default, **override.get(name, {}))
    return target


def options_from(cls: type, args: argparse.Namespace, **fixed: Any) -> Any:
    """An instance of `cls` from parsed arguments (fields whose option the verb does not have keep their
    default) plus `fixed` keyword arguments."""
    ns = vars(args)
    values = {name: ns[spec.dest] for name, spec, _ in declared(cls) if spec.dest in ns}
    return cls(**{**values, **fixed})


def renamed(old: str, new: str, what: str) -> dict[str, Any]:
    """argparse settings of a retired flag: using it is a one-line usage error that names its new spelling."""

    class _Renamed(argparse.Action):
        def __call__(self, parser: argparse.ArgumentParser, namespace: Any, values: Any, option_string: str | None = None) -> None:
            parser.error(f"{old} is now {new} ({what})")

    return {"action": _Renamed, "nargs": "?", "help": argparse.SUPPRESS, "dest": "_renamed_" + old.lstrip("-").replace("-", "_")}


# -- flags that several verbs take, with one meaning -----------------------------------------------------------
# Declared here once; a verb's options dataclass takes one with `common(flag, default)` (a default or help of its
# own allowed, the meaning never changes) and a verb without one with `add_common(parser, flag)`.


def _common_table() -> dict[str, Option]:
    from waste_edge._outputs import input_path, output_file, output_folder

    def opt(flag: str, help: str, **kwargs: Any) -> tuple[str, Option]:
        return flag, Option((flag,), help, kwargs, flag.lstrip("-").replace("-", "_"))

    return dict([
        opt("--data", "dataset: Kaggle TRAIN*/TEST* folders, class folders, or a path,label[,split] CSV", type=input_path),
        opt("--out", "output file", type=output_file),
        opt("--json", "write the full report as JSON to OUT", type=output_file, metavar="OUT"),
        opt("--quiet", "no progress bars", action="store_true"),
        opt("--batch-size", "images per batch (default: %(default)s)", type=batch_size, metavar="N"),
        opt("--workers", "parallel image decoding workers (default: %(default)s)", type=workers, metavar="N"),
        opt("--torch-threads", "PyTorch intra-op threads (default: all cores)", type=threads, metavar="N"),
        opt("--cache", "cache folder (default: under ~/.cache/waste-edge)", type=output_folder, metavar="DIR"),
        opt("--seed", "seed of the split (default: %(default)s)", type=int_in(0, 2**32 - 1)),
        opt("--test-size", "test fraction when the data has no split (default: %(default)s)", type=fraction),
        opt("--limit", "at most N images (a fixed-seed sample)", type=positive_int, metavar="N"),
        opt("--encoder", "encoder id (default: %(default)s)"),
        opt("--C", "inverse regularisation strength of the logistic head (default: %(default)s, the study's)",
            type=float_in(0.0, 1e6, open_lo=True)),
        opt("--class-weight", "class weighting of the head's loss (default: %(default)s)", choices=["none", "balanced"]),
        opt("--epochs", "maximum epochs (early stopping may end sooner; default: %(default)s)", type=int_in(1, 100_000)),
        opt("--lr", "learning rate (default: %(default)s)", type=float_in(0.0, 10.0, open_lo=True)),
        opt("--patience", "early-stopping patience in epochs (default: %(default)s)", type=int_in(1, 1000)),
        opt("--imgsz", "side of the square the network sees (default: %(default)s)", type=int_in(1, 16384)),
        opt("--max-pixels", "largest image in pixels, read from its header before decoding (default: %(default)s)",
            type=int_in(1, MAX_PIXELS), metavar="N"),
    ])


COMMON: dict[str, Option] = {}


def _common(flag: str) -> Option:
    if not COMMON:
        COMMON.update(_common_table())
    return COMMON[flag]


def common(flag: str, default: Any = MISSING, *, default_factory: Any = MISSING, help: str | None = None, **kwargs: Any) -> Any:
    """A dataclass field declared by the shared flag `flag` (see COMMON), with this field's default / help."""
    spec = _common(flag)
    return option(default, *spec.flags, help=help or spec.help, default_factory=default_factory, dest=spec.dest, **{**spec.kwargs, **kwargs})


def add_common(parser: Any, flag: str, default: Any = None, **override: Any) -> argparse.Action:
    """Add the shared flag `flag` to a verb that has no options dataclass."""
    return _common(flag).add_to(parser, default, **override)
