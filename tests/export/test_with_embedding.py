"""`export --with-embedding`: the third output is the head's input, free to ignore, and `adapt` can refit it."""

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from tests.export.conftest import make_run, register_tiny_clip
from tests.helpers import save_image, synthetic_rgb
from waste_edge.adapt.graph import find_head, read_metadata
from waste_edge.cli import main
from waste_edge.export.exporter import export
from waste_edge.runtime.classifier import Classifier
from waste_edge.runtime.collection import write_labels
from waste_edge.runtime.formats import FormatError
from waste_edge.runtime.rehearsal import load_rehearsal, rehearsal_path

FRAMES = [synthetic_rgb("B", 1, (120, 90)), synthetic_rgb("N", 2, (200, 150)), synthetic_rgb("N", 3, (64, 48))]


@pytest.fixture(scope="module")
def clip_emb(tmp_path_factory, clip_run):
    out = tmp_path_factory.mktemp("emb") / "clip-emb.onnx"
    assert main(["export", str(clip_run), "--dynamic", "--with-embedding", "--out", str(out), "--quiet"]) == 0
    return out


def outputs(path):
    return [o.name for o in ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).get_outputs()]


def test_embedding_output_is_what_the_head_sees_and_is_recorded(clip_emb, clip_onnx):
    assert not rehearsal_path(clip_emb).exists()  # this run's card names no training data: skipped with a note
    assert outputs(clip_emb) == ["probabilities", "label", "embedding"] and outputs(clip_onnx) == ["probabilities", "label"]
    proto = onnx.load(clip_emb)
    meta = read_metadata(proto)
    assert meta.embedding == {"output": "embedding", "dim": 32, "normalization": "none"}
    assert read_metadata(onnx.load(clip_onnx)).embedding is None
    head = find_head(proto).constants
    with Classifier(clip_emb, threads=1) as clf, Classifier(clip_onnx, threads=1) as plain:
        assert clf.has_embedding and clf.embedding_dim == 32 and not plain.has_embedding
        probs, emb = clf.predict_proba(FRAMES, "RGB", with_embedding=True)
        assert emb.shape == (3, 32) and emb.dtype == np.float32
        np.testing.assert_allclose(probs, head.predict_proba(emb), atol=1e-5)
        np.testing.assert_allclose(clf.predict_proba(FRAMES, "RGB"), plain.predict_proba(FRAMES, "RGB"), atol=1e-6)  # same model otherwise
        one_p, one_e = clf.predict_proba(FRAMES[0], "RGB", with_embedding=True)
        np.testing.assert_allclose(one_e, emb[:1], atol=1e-5)
        with pytest.raises(Exception, match="--with-embedding"):
            plain.predict_proba(FRAMES[0], "RGB", with_embedding=True)


def test_int8_l2_model_exposes_normalised_features_and_keeps_an_fp32_head_that_adapt_swaps(tmp_path_factory, export_images, monkeypatch):
    from waste_edge.adapt.adapter import adapt

    monkeypatch.setenv("WASTE_EDGE_CACHE", str(tmp_path_factory.mktemp("cache")))
    d = tmp_path_factory.mktemp("int8")
    run = make_run(d / "clip-l2", register_tiny_clip(), export_images, l2=True)
    card = json.loads((run / "card.json").read_text())
    card["data"] = {"source": str(export_images), "split_seed": 0}  # what `train linear` records
    (run / "card.json").write_text(json.dumps(card))
    res = export(run, "onnx", out=d / "clip-int8.onnx", dynamic=True, int8=True, with_embedding=True, rehearsal=3, progress=False)
    assert res.metadata.variant == "int8" and res.metadata.embedding == {"output": "embedding", "dim": 32, "normalization": "l2"}
    old_head = find_head(onnx.load(res.path)).constants
    assert old_head.weight.dtype == np.float32
    with Classifier(res.path, threads=1) as clf:
        probs, emb = clf.predict_proba(FRAMES, "RGB", with_embedding=True)
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)  # after the head's L2 normalisation
    np.testing.assert_allclose(probs, old_head.predict_proba(emb), atol=1e-5)
    # The rehearsal set beside the model: sampled TRAIN images through the model's own (INT8, L2-normalised) embedding output.
    assert res.extra_files == [rehearsal_path(res.path)]
    rs = load_rehearsal(res.extra_files[0])
    assert rs.encoder == "clip:waste-edge-tiny-vit/none" and rs.dim == 32 and rs.normalization == "l2" and sum(rs.counts().values()) <= 6
    np.testing.assert_allclose(np.linalg.norm(rs.features, axis=1), 1.0, atol=2e-3)
    folder = d / "collected"
    labels = {}
    for i in range(8):
        lab = "BN"[i % 2]
        labels[save_image(folder / f"f{i}.png", synthetic_rgb("N" if lab == "B" else "B", 40 + i, (96, 72))).name] = lab  # inverted
    write_labels(folder, labels)
    result = adapt(res.path, folder, d / "clip-int8-adapted.onnx")
    out = result.out
    assert result.fit.method == "rehearsal+prior" and result.fit.n_rehearsal == len(rs.labels)
    new_head = find_head(onnx.load(out)).constants
    assert not np.allclose(new_head.weight, old_head.weight)
    with Classifier(out, threads=1) as clf:
        probs2, emb2 = clf.predict_proba(FRAMES, "RGB", with_embedding=True)
    np.testing.assert_array_equal(emb2, emb)  # the INT8 encoder is untouched
    np.testing.assert_allclose(probs2, new_head.predict_proba(emb2), atol=1e-5)
    assert read_metadata(onnx.load(out)).variant == "int8"


def test_engine_format_refuses_with_embedding_and_rehearsal_needs_it(clip_run, tmp_path):
    with pytest.raises(FormatError, match="does not support --with-embedding"):
        export(clip_run, "engine", with_embedding=True, out=tmp_path / "x.engine")
    with pytest.raises(Exception, match="--rehearsal N .>= 0. only applies to --with-embedding"):
        export(clip_run, "onnx", rehearsal=5, out=tmp_path / "x.onnx")
