"""Options declared once, one meaning per flag, every path marked as input or output (issue 24).

The parser is built for real (every verb, every group); the declarations are read from the source with `ast`.
"""

from __future__ import annotations

import argparse
import ast
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest

from tests.helpers import REPO
from waste_edge import _outputs
from waste_edge.cli import build_parser, main

PACKAGE = REPO / "waste_edge"
MARKERS = (_outputs.output_file, _outputs.output_folder, _outputs.input_path, _outputs.input_run, _outputs.input_spec)
# Options that take free text by design (names, addresses, secrets, layer names): none is a path.
TEXT = {"encoder", "host", "token", "mqtt", "ray", "title", "weights", "fine_tune_from", "int8_scheme", "augment", "split",
        "on_decision", "webhook", "webhook_secret", "mqtt_discovery", "allow_host", "allow_origin"}


def _verbs(parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _verbs(sub, (*prefix, name))
    if prefix:
        yield " ".join(prefix), parser


def _actions():
    for verb, parser in _verbs(build_parser()):
        for a in parser._actions:
            if isinstance(a, (argparse._HelpAction, argparse._SubParsersAction)) or a.dest.startswith("_renamed_"):
                continue
            yield verb, a


def test_one_meaning_per_flag_across_verbs():
    """A flag fills the same destination on every verb that has it (--threads is ONNX Runtime's threads everywhere)."""
    dests = defaultdict(set)
    for verb, a in _actions():
        for flag in a.option_strings:
            dests[flag].add(a.dest)
    assert {f: d for f, d in dests.items() if len(d) > 1} == {}
    assert dests["--threads"] == {"threads"} and dests["--torch-threads"] == {"torch_threads"}


def test_every_path_option_is_marked_as_input_or_output():
    unmarked = []
    for verb, a in _actions():
        takes_value = a.nargs != 0 and not isinstance(a, (argparse._StoreTrueAction, argparse._StoreFalseAction))
        if not takes_value or a.choices is not None or a.dest in TEXT:
            continue
        if a.type is None or a.type in (str, Path) or (a.type is not None and getattr(a.type, "__name__", "") in ("Path", "str")):
            unmarked.append(f"{verb} {a.option_strings or a.dest}")
    assert unmarked == [], "declare these with a marked type (_outputs.input_path / output_file / ...) or a parsing type"


def _declarations() -> dict[str, list[str]]:
    """flag -> where it is declared: option(...) / opt(...) calls anywhere, add_argument(...) in cli.py (a retired
    spelling, `_retired(p, OLD, ...)`, passes it as a variable and is no declaration)."""
    found: dict[str, list[str]] = defaultdict(list)
    for path in PACKAGE.rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
            if name not in ("option", "opt", "add_argument"):
                continue
            flags = [a.value for a in node.args if isinstance(a, ast.Constant) and isinstance(a.value, str) and a.value.startswith("--")]
            if name == "add_argument" and path.name != "cli.py":
                continue  # a helper script's own parser (export/portability.py), not the waste-edge CLI
            for flag in flags:
                found[flag].append(f"{path.relative_to(REPO)}:{node.lineno}")
    return found


def test_every_flag_is_declared_in_one_place():
    twice = {flag: where for flag, where in _declarations().items() if len(where) > 1}
    assert twice == {}


def test_cli_module_stays_small():
    assert len((PACKAGE / "cli.py").read_text(encoding="utf-8").splitlines()) < 700


@pytest.mark.parametrize("argv, new", [
    (["serve", "--batch", "off"], "--batching"),
    (["serve", "--save", "out"], "--save-dir"),
    (["bench", "--batch", "1,16"], "--batches"),
    (["train", "linear", "--data", "d", "--out", "o", "--threads", "2"], "--torch-threads"),
    (["train", "baseline", "--arch", "cnn", "--data", "d", "--out", "o", "--threads", "2"], "--tf-threads"),
    (["data", "check", "d", "--threshold", "8"], "--radius"),
    (["demo", "--seconds", "2"], "--video-seconds"),
    (["adapt", "--data", "d", "--out", "o.onnx", "--rehearsal", "r.npz"], "--rehearsal-set"),
])
def test_a_retired_spelling_is_a_one_line_usage_error_naming_the_new_one(argv, new, capsys):
    with pytest.raises(SystemExit) as e:
        main(argv)
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert e.value.code == 2 and f"is now {new}" in err


def test_the_guard_finds_outputs_by_type_whatever_their_name(tmp_path):
    """A made-up verb whose output option has a name no list knows is still refused onto its own input."""
    src = tmp_path / "clip.mp4"
    src.write_bytes(b"x")
    p = argparse.ArgumentParser()
    p.add_argument("--footage", type=_outputs.input_spec)
    p.add_argument("--highlights", type=_outputs.output_file)
    with pytest.raises(_outputs.OutputPathError, match="--highlights"):
        _outputs.guard_cli_outputs(p.parse_args(["--footage", str(src), "--highlights", str(src)]))


def test_help_of_every_verb_builds():
    for verb, parser in _verbs(build_parser()):
        assert parser.format_help(), verb


def test_help_does_not_import_torch():
    code = "import sys; from waste_edge.cli import build_parser; build_parser().format_help(); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
