"""The recorded benchmark files and the writer that puts them into benchmarks/README.md.

The writer once appended a second copy of the tables after the `results:end` marker, and recorded tables
carried machine paths: both are checked here on the files in the repository and on the writer itself."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BENCHMARKS = REPO / "benchmarks"


@pytest.fixture(scope="module")
def runner():
    spec = importlib.util.spec_from_file_location("benchmarks_run", BENCHMARKS / "run.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_writer_replaces_the_block_and_keeps_the_prose(runner):
    begin, end = runner.RESULTS_MARKERS
    text = f"# Benchmarks\n\nprose before\n\n{begin}\nold tables\n{end}\n\nprose after\n"
    once = runner.replace_between(text, runner.RESULTS_MARKERS, "### new table\n| a |")
    twice = runner.replace_between(once, runner.RESULTS_MARKERS, "### new table\n| a |")
    assert once == twice
    assert once.count("### new table") == 1 and "old tables" not in once
    assert once.startswith("# Benchmarks\n\nprose before") and once.endswith(f"{end}\n\nprose after\n")


@pytest.mark.parametrize("broken", ["no markers at all", "{begin}\n{end}\n{begin}\n{end}", "{end}\n{begin}", "{begin} only"])
def test_writer_refuses_missing_repeated_or_swapped_markers(runner, broken):
    begin, end = runner.RESULTS_MARKERS
    with pytest.raises(runner.ReadmeError):
        runner.replace_between(broken.format(begin=begin, end=end), runner.RESULTS_MARKERS, "x")


def test_readme_has_each_generated_block_once(runner):
    text = (BENCHMARKS / "README.md").read_text()
    for begin, end in (runner.RESULTS_MARKERS, runner.TARGETS_MARKERS):
        assert text.count(begin) == 1 and text.count(end) == 1 and text.index(begin) < text.index(end)
    tail = text.split(runner.RESULTS_MARKERS[1], 1)[1]
    assert "| Model | Variant |" not in tail  # no second copy of the tables after the block


def test_recorded_files_carry_no_machine_paths():
    files = [BENCHMARKS / "README.md", *sorted((BENCHMARKS / "results").glob("*.md")), *sorted((BENCHMARKS / "results").glob("*.json"))]
    assert len(files) > 3
    pattern = re.compile(r"(/work/|/home/|/root/|/tmp/|/Users/|[A-Za-z]:\\\\)")
    found = {f.name: sorted(set(pattern.findall(f.read_text()))) for f in files}
    assert not {k: v for k, v in found.items() if v}, found
