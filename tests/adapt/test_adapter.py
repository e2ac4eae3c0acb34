"""`adapt()` and `waste-edge adapt` end to end on a collection folder, torch-free."""

import json
import subprocess
import sys
import textwrap

import onnx
import pytest

from tests.adapt.conftest import NEW_B, NEW_N, OLD_B, OLD_N, solid
from tests.helpers import REPO, save_image
from tests.runtime.tiny_model import make_fused_model
from waste_edge._io import file_sha256
from waste_edge.adapt.adapter import adapt
from waste_edge.adapt.graph import AdaptError, read_metadata
from waste_edge.runtime.rehearsal import rehearsal_path
from waste_edge.cli import main
from waste_edge.runtime.classifier import Classifier
from waste_edge.runtime.collection import LABELS_FILE


def labels_of(model, colours, channel_order="RGB"):
    with Classifier(model, threads=1) as clf:
        return [clf.predict(solid(c, 900 + i), channel_order).label for i, c in enumerate(colours)]


def test_adapt_learns_the_new_bin_keeps_the_old_and_writes_a_copy(with_rehearsal, collection, tmp_path):
    model = with_rehearsal
    before = file_sha256(model)
    assert labels_of(model, [NEW_N, NEW_B, OLD_B, OLD_N]) == ["B", "B", "B", "N"]  # the old head errs on green glass
    out = tmp_path / "out" / "adapted.onnx"
    res = adapt(model, collection, out)
    assert file_sha256(model) == before  # the input is never modified
    assert labels_of(out, [NEW_N, NEW_B, OLD_B, OLD_N]) == ["N", "B", "B", "N"]
    assert res.fit.method == "rehearsal+prior" and res.fit.counts == {"B": 6, "N": 6} and res.fit.n_rehearsal == 32
    assert res.fit.new_accuracy_before == 0.5 and res.fit.new_accuracy_after == 1.0 and res.fit.rehearsal_agreement == 1.0
    assert res.sha256 == file_sha256(out) and res.base_sha256 == before and res.problems == []
    meta = read_metadata(onnx.load(out))
    prov = meta.adaptation
    assert prov["base_model_sha256"] == before and prov["labels_per_class"] == {"B": 6, "N": 6}
    assert prov["method"] == "rehearsal+prior" and prov["time"].endswith("Z") and prov["previous"] == []
    assert prov["rehearsal"]["n"] == 32 and prov["rehearsal"]["sha256"] == file_sha256(rehearsal_path(model))
    assert meta.head_sha256 != read_metadata(onnx.load(model)).head_sha256 and meta.embedding == read_metadata(onnx.load(model)).embedding
    assert res.rehearsal_out == rehearsal_path(out) and res.rehearsal_out.is_file()  # the copy can be adapted again
    text = res.summary()
    assert "method rehearsal+prior: 12 labelled frames (B 6, N 6) + 32 rehearsal embeddings" in text and "old head 50.0%, new head 100.0%" in text
    assert set(res.seconds) == {"load", "embed", "fit", "write", "total"}

    again = adapt(out, collection, tmp_path / "again.onnx")  # a second adaptation chains the provenance
    prov2 = read_metadata(onnx.load(again.out)).adaptation
    assert prov2["base_model_sha256"] == res.sha256 and prov2["previous"][0]["base_model_sha256"] == before


def test_without_a_rehearsal_set_the_prior_alone_protects(tiny_model, collection, tmp_path):
    notes = []
    res = adapt(tiny_model, collection, tmp_path / "a.onnx", log=notes.append)
    assert res.fit.method == "prior" and res.fit.n_rehearsal == 0 and res.rehearsal_out is None
    assert any("no rehearsal set" in n for n in notes)
    assert labels_of(res.out, [NEW_N, OLD_B, OLD_N]) == ["N", "B", "N"]


def test_unusable_rows_and_files_are_skipped_and_reported(with_rehearsal, collection, tmp_path):
    (collection / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    save_image(collection / "odd.png", solid(NEW_N, 7))
    with open(collection / LABELS_FILE, "a") as fh:
        fh.write("broken.jpg,N\nodd.png,cardboard\nmissing.jpg,B\nodd.png,skip\n")
    res = adapt(with_rehearsal, collection, tmp_path / "a.onnx")
    text = "\n".join(res.problems)
    assert "unknown label 'cardboard'" in text and "missing.jpg is not in" in text and "broken.jpg" in text
    assert res.fit.counts == {"B": 6, "N": 6} and res.n_labelled == 13  # broken.jpg counted as a label, skipped at decode


def test_refusals_are_one_line_errors(with_rehearsal, collection, tmp_path):
    model = with_rehearsal
    for out in (model, model.parent / "." / model.name):
        with pytest.raises(AdaptError, match="is the input model"):
            adapt(model, collection, out)
    link = tmp_path / "link.onnx"
    link.symlink_to(model)
    with pytest.raises(AdaptError, match="is the input model"):
        adapt(model, collection, link)
    with pytest.raises(AdaptError, match="must end in .onnx"):
        adapt(model, collection, tmp_path / "x.engine")
    with pytest.raises(AdaptError, match="adapt works on .onnx"):
        adapt(tmp_path / "m.engine", collection, tmp_path / "x.onnx")
    plain = make_fused_model(tmp_path / "plain.onnx", channel_order="BGR")
    with pytest.raises(AdaptError, match="--with-embedding"):
        adapt(plain, collection, tmp_path / "x.onnx")
    half = onnx.load(model)
    meta = read_metadata(half)
    meta.variant = "fp16"
    onnx.helper.set_model_props(half, meta.to_props())
    onnx.save(half, tmp_path / "half.onnx")
    with pytest.raises(AdaptError, match="fp16 model, meant for GPU providers"):
        adapt(tmp_path / "half.onnx", collection, tmp_path / "x.onnx")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(AdaptError, match="no usable labels"):
        adapt(model, empty, tmp_path / "x.onnx")
    assert not (tmp_path / "x.onnx").exists()


def test_cli_adapt_prints_a_summary_and_writes_json(with_rehearsal, collection, tmp_path, capsys):
    report = tmp_path / "report.json"
    rc = main(["adapt", "--model", str(with_rehearsal), "--data", str(collection), "--out", str(tmp_path / "n.onnx"), "--json", str(report), "--threads", "1"])
    out, err = capsys.readouterr()
    assert rc == 0 and "wrote" in out and "rehearsal+prior" in out
    doc = json.loads(report.read_text())
    assert doc["fit"]["counts"] == {"B": 6, "N": 6} and doc["sha256"] == file_sha256(tmp_path / "n.onnx")
    rc = main(["adapt", "--model", str(with_rehearsal), "--data", str(collection), "--out", str(with_rehearsal)])
    assert rc == 1 and "error: --out" in capsys.readouterr().err
    rc = main(["adapt", "--model", str(with_rehearsal), "--data", str(collection), "--out", str(tmp_path / "m.onnx"), "--method", "labels-only", "--no-rehearsal"])
    assert rc == 0 and "labels-only" in capsys.readouterr().out


BLOCKER = """
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in ('torch', 'tensorflow', 'keras', 'open_clip', 'torchvision'):
            raise ImportError(f'{name} is blocked in this test')
sys.meta_path.insert(0, Block())
"""


def test_adapt_imports_neither_torch_nor_tensorflow(with_rehearsal, collection, tmp_path):
    code = BLOCKER + textwrap.dedent(f"""
        import json
        from waste_edge.cli import main
        rc = main(["adapt", "--model", {str(with_rehearsal)!r}, "--data", {str(collection)!r}, "--out", {str(tmp_path / 'n.onnx')!r}])
        mods = {{m.split('.')[0] for m in sys.modules}}
        print(json.dumps({{"rc": rc, "torch": "torch" in mods, "tf": "tensorflow" in mods, "sklearn": "sklearn" in mods, "onnx": "onnx" in mods}}))
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out == {"rc": 0, "torch": False, "tf": False, "sklearn": True, "onnx": True}
    assert (tmp_path / "n.onnx").is_file()
