"""Inputs are read-only to every verb: a generated matrix of every writing verb x every output option x every
file and folder that verb reads (the model's sidecars and a collection folder's labels.csv and frame sidecars
included), each case hashing every input before and after.

The generator (`cases`) derives the hostile outputs from one table of verbs (`VERBS`): the output option set to
an input file itself, to a symlink to it, to a new file inside an input folder with a suffix the verb reads from
there, and, for folder outputs, to an input folder, a folder inside one and an input file. `--collect` must also
stay apart from every source (a looping folder source would read its own collected frames). Each case runs the
verb in-process: the guard refuses before anything heavy is imported, so the whole matrix takes seconds.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.adapt.conftest import NEW_B, NEW_N, old_domain, solid
from tests.faults.conftest import assert_clean, assert_one_line_error, digest_tree, write_images, write_video
from tests.helpers import save_image
from tests.runtime.tiny_model import make_fused_model
from waste_edge._outputs import DEFAULT_MODEL, REHEARSAL_SUFFIX, model_sidecars
from waste_edge.runtime.collection import write_labels
from waste_edge.runtime.rehearsal import build_rehearsal_set, rehearsal_path, save_rehearsal



def build_world(root: Path) -> Path:
    """Everything a verb may read: a model with its rehearsal set and card, a video, an image folder, a collection
    folder (frames, sidecars, labels.csv), a run directory, a manifest, calibration images."""
    root.mkdir(parents=True)
    model = make_fused_model(root / "tiny.onnx", channel_order="BGR", with_embedding=True)
    feats, labels = old_domain()
    save_rehearsal(build_rehearsal_set(feats, labels, classes=["B", "N"], encoder="test:mean-colour", per_class=8), rehearsal_path(model))
    (root / "tiny.json").write_text('{"metrics": {"accuracy": 0.5}}')
    write_video(root / "clip.mp4")
    write_images(root / "imgs", n=3)
    coll = root / "coll"
    names = {}
    for i in range(3):
        names[save_image(coll / f"n{i}.png", solid(NEW_N, i)).name] = "N"
        names[save_image(coll / f"b{i}.png", solid(NEW_B, 10 + i)).name] = "B"
    for name in names:
        (coll / name).with_suffix(".json").write_text('{"format": "waste-edge/collected-frame", "version": 1}')
    write_labels(coll, names)
    run = root / "run"
    run.mkdir()
    for name, text in (("card.json", '{"encoder": "x"}'), ("head.json", '{"classes": ["B", "N"]}'), ("metrics.json", "{}")):
        (run / name).write_text(text)
    (root / "m.csv").write_text("path,label\nimgs/img0.png,B\nimgs/img1.png,N\n")
    write_images(root / "calib", n=2)
    return root


@dataclass(frozen=True)
class Verb:
    argv: tuple[str, ...]  # with {r} for the world
    files: tuple[str, ...]  # input files it reads (relative to the world)
    folders: tuple[tuple[str, tuple[str, ...]], ...]  # input folders and suffixes it reads there
    outputs: tuple[tuple[str, str], ...]  # (option, "file" | "folder")


MODEL_FILES = ("tiny.onnx", "tiny" + REHEARSAL_SUFFIX, "tiny.json")
SOURCE_FOLDER = ("imgs", (".png", ".jpg", ".mp4"))
VERBS = {
    "predict": Verb(("predict", "{r}/imgs", "{r}/clip.mp4", "--model", "{r}/tiny.onnx"), (*MODEL_FILES, "clip.mp4"), (SOURCE_FOLDER,),
                    (("--out", "file"),)),
    "camera": Verb(("camera", "--device", "{r}/imgs", "--model", "{r}/tiny.onnx", "--no-show"), MODEL_FILES, (SOURCE_FOLDER,),
                   (("--save", "file"), ("--jsonl", "file"), ("--collect", "folder"))),
    "camera-video": Verb(("camera", "--device", "{r}/clip.mp4", "--model", "{r}/tiny.onnx", "--no-show"), (*MODEL_FILES, "clip.mp4"), (),
                         (("--save", "file"), ("--jsonl", "file"), ("--collect", "folder"))),
    "adapt": Verb(("adapt", "--model", "{r}/tiny.onnx", "--data", "{r}/coll", "--out", "{o}/adapted.onnx"), MODEL_FILES,
                  (("coll", (".png", ".json", ".csv")),), (("--json", "file"),)),
    "adapt-out": Verb(("adapt", "--model", "{r}/tiny.onnx", "--data", "{r}/coll"), MODEL_FILES, (("coll", (".png", ".json", ".csv")),),
                      (("--out", "file"),)),
    "adapt-rehearsal": Verb(("adapt", "--model", "{r}/tiny.onnx", "--data", "{r}/coll", "--rehearsal-set", "{r}/tiny.rehearsal.npz",
                             "--out", "{o}/adapted.onnx"), MODEL_FILES, (), (("--json", "file"),)),
    "export": Verb(("export", "{r}/run", "--calib", "{r}/calib"), ("run/card.json", "run/head.json"), (("run", (".json",)), ("calib", (".png",))),
                   (("--out", "file"),)),
    "train-linear": Verb(("train", "linear", "--data", "{r}/m.csv", "--split-file", "{r}/m.csv"), ("m.csv",), (), (("--out", "folder"),)),
    "train-linear-folder": Verb(("train", "linear", "--data", "{r}/imgs"), (), (SOURCE_FOLDER,), (("--out", "folder"),)),
    "train-finetune": Verb(("train", "finetune", "--data", "{r}/imgs"), (), (SOURCE_FOLDER,), (("--out", "folder"),)),
    "eval": Verb(("eval", "{r}/run", "--data", "{r}/imgs"), ("run/card.json", "run/head.json"), (SOURCE_FOLDER,), (("--out", "folder"),)),
    "parity": Verb(("parity", "{r}/tiny.onnx", "--run", "{r}/run", "--data", "{r}/imgs"), (*MODEL_FILES, "run/card.json", "run/head.json"),
                   (("run", (".json",)), SOURCE_FOLDER), (("--json", "file"),)),
    "data-check": Verb(("data", "check", "{r}/m.csv"), ("m.csv",), (), (("--json", "file"),)),
    "data-check-folder": Verb(("data", "check", "{r}/imgs"), (), (SOURCE_FOLDER,), (("--json", "file"),)),
    "data-split": Verb(("data", "split", "{r}/m.csv"), ("m.csv",), (), (("--out", "file"),)),
    "bench": Verb(("bench", "--model", "{r}/tiny.onnx", "--reference", "{r}/run", "--data", "{r}/imgs"), (*MODEL_FILES, "run/card.json"),
                  (("run", (".json",)), SOURCE_FOLDER), (("--json", "file"), ("--md", "file"), ("--plot", "file"))),
    "serve": Verb(("serve", "--device", "door={r}/imgs", "--device", "{r}/clip.mp4", "--model", "{r}/tiny.onnx"), (*MODEL_FILES, "clip.mp4"),
                  (SOURCE_FOLDER,), (("--jsonl", "file"), ("--save-dir", "folder"), ("--collect", "folder"))),
    "demo": Verb(("demo", "--model", "{r}/tiny.onnx", "--no-show"), MODEL_FILES, (), (("--out", "folder"),)),
}
FOLDERS_ONLY = {"run"}  # read by file name, not walked: a report folder inside one is allowed (eval's default)


def cases() -> list[tuple[str, str, str, str]]:
    """(verb, option, how, target): every hostile output the table implies."""
    out = []
    for name, verb in VERBS.items():
        for option, kind in verb.outputs:
            for f in verb.files:
                out.append((name, option, "is", f))
                out.append((name, option, "symlink", f))
            for folder, suffixes in verb.folders:
                if kind == "file":
                    out += [(name, option, "inside", f"{folder}/new{s}") for s in suffixes]
                else:
                    out.append((name, option, "is", folder))
                    if folder not in FOLDERS_ONLY:
                        out.append((name, option, "inside", f"{folder}/sub"))
            if option == "--collect":  # apart from every source: its parent, the folder of a video source
                out.append((name, option, "is", "."))
    return out


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    return build_world(tmp_path_factory.mktemp("inputs") / "w")


@pytest.mark.parametrize("case", cases(), ids=lambda c: "-".join(c))
def test_no_verb_writes_onto_or_into_what_it_reads(case, world, tmp_path, cli):
    name, option, how, target = case
    verb = VERBS[name]
    out_dir = tmp_path / "o"
    out_dir.mkdir()
    path = world / target
    if how == "symlink":
        link = out_dir / ("link" + "".join(Path(target).suffixes))
        link.symlink_to(path)
        path = link
    argv = [a.format(r=world, o=out_dir) for a in verb.argv] + [option, str(path)]
    before = digest_tree(world)
    status, _out, err = cli(*argv)
    assert status == 1, (argv, err)
    assert_one_line_error(err, option)
    assert digest_tree(world) == before
    assert not [p for p in world.rglob("*") if p.name.endswith(".tmp")]


def test_the_generator_covers_every_writing_verb_and_output():
    """Every verb that writes, every output option it has (the table is the list to keep up to date)."""
    covered = {(VERBS[n].argv[0], o) for n, o, _h, _t in cases()}
    for verb, option in [("predict", "--out"), ("camera", "--save"), ("camera", "--jsonl"), ("camera", "--collect"), ("adapt", "--out"),
                         ("adapt", "--json"), ("export", "--out"), ("train", "--out"), ("eval", "--out"), ("parity", "--json"),
                         ("data", "--json"), ("data", "--out"), ("bench", "--json"), ("bench", "--md"), ("bench", "--plot"),
                         ("serve", "--jsonl"), ("serve", "--save-dir"), ("serve", "--collect"), ("demo", "--out")]:
        assert (verb, option) in covered, (verb, option)
    assert len(cases()) > 150


def test_sidecar_names_agree_with_their_readers():
    from waste_edge.runtime.backends.engine_sidecar import sidecar_path
    from waste_edge.runtime.model_path import DEFAULT_MODEL as RUNTIME_DEFAULT
    from waste_edge.runtime.model_path import model_card_path

    m = Path("/x/m.onnx")
    assert model_sidecars(m) == [rehearsal_path(m), model_card_path(m), sidecar_path(m)]
    assert DEFAULT_MODEL == RUNTIME_DEFAULT


# -- the same verbs, allowed outputs: they run, and every input is still byte-for-byte what it was ---------------


def test_adapt_reruns_to_the_same_name_and_never_touches_its_inputs(world, tmp_path, cli):
    before = digest_tree(world)
    out = tmp_path / "o" / "bin7.onnx"
    args = ("adapt", "--model", world / "tiny.onnx", "--data", world / "coll", "--out", out, "--json", tmp_path / "o" / "r.json")
    status, first, err = cli(*args)
    assert status == 0, err
    assert out.is_file() and (tmp_path / "o" / ("bin7" + REHEARSAL_SUFFIX)).is_file()
    status, second, err = cli(*args)  # the same command again: replaces its own earlier result
    assert status == 0, err
    assert "wrote" in second and "Traceback" not in err
    assert digest_tree(world) == before
    assert not [p for p in (tmp_path / "o").iterdir() if p.name.endswith(".tmp")]


def test_adapt_refuses_to_replace_a_model_it_did_not_write(world, tmp_path, cli):
    other = tmp_path / "export.onnx"
    shutil.copy(world / "tiny.onnx", other)
    before = digest_tree(world), other.read_bytes()
    status, _o, err = cli("adapt", "--model", world / "tiny.onnx", "--data", world / "coll", "--out", other)
    assert status == 1
    assert_one_line_error(err, "was not written by adapt")
    assert (digest_tree(world), other.read_bytes()) == before
    status, _o, err = cli("adapt", "--model", world / "tiny.onnx", "--data", world / "coll", "--out", world / "coll")
    assert status == 1 and "is a folder" in err


def test_collect_folder_apart_from_a_glob_source(world, tmp_path, cli):
    before = digest_tree(world)
    status, _o, err = cli("camera", "--device", f"{world}/imgs/*.png", "--model", world / "tiny.onnx", "--no-show",
                          "--collect", world / "imgs" / "c")
    assert status == 1
    assert_one_line_error(err, "--collect")
    assert digest_tree(world) == before


def test_writing_verbs_leave_inputs_unchanged(world, tmp_path, cli):
    """The allowed outputs, written for real by the fast verbs: every input file hashes the same afterwards."""
    o = tmp_path / "o"
    before = digest_tree(world)
    runs = [
        ("predict", world / "imgs", world / "clip.mp4", "--model", world / "tiny.onnx", "--out", o / "p.csv", "--quiet"),
        ("camera", "--device", world / "imgs", "--model", world / "tiny.onnx", "--no-show", "--save", o / "a.mp4",
         "--jsonl", o / "e.jsonl", "--collect", o / "coll", "--collect-every", "0", "--collect-below", "1"),
        ("data", "split", world / "m.csv", "--out", o / "s.csv", "--no-cache"),
        ("data", "check", world / "imgs", "--json", o / "c.json", "--no-cache"),
    ]
    for argv in runs:
        status, _out, err = cli(*argv)
        assert status in (0, 1), err  # data check of 3 identical-looking images may find duplicates: not a failure of the guard
        assert_clean(err)
        assert digest_tree(world) == before, argv
    assert (o / "p.csv").is_file() and (o / "e.jsonl").is_file() and any((o / "coll").glob("*.jpg"))


def test_default_model_and_its_card_are_inputs(tmp_path, cli):
    if not DEFAULT_MODEL.is_file():
        pytest.skip("no embedded default model in this checkout")
    write_images(tmp_path / "i", n=1)
    status, _o, err = cli("predict", tmp_path / "i", "--out", DEFAULT_MODEL.with_suffix(".json"))
    assert status == 1
    assert_one_line_error(err, "is an input")
    assert os.path.getsize(DEFAULT_MODEL.with_suffix(".json")) > 0
