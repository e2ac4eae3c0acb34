"""The rehearsal set file: built from a run's embeddings, stored compactly, checked against the model."""

import numpy as np
import pytest

from waste_edge.runtime.rehearsal import RehearsalError, build_rehearsal_set, load_rehearsal, rehearsal_path, save_rehearsal, select_rehearsal


def run_embeddings(n=300, d=32, seed=0):
    rng = np.random.default_rng(seed)
    labels = ["B" if i % 3 else "N" for i in range(n)]
    return rng.gamma(2.0, 1.0, (n, d)).astype(np.float32), labels


def test_round_trip_is_compact_stratified_and_normalised(tmp_path):
    feats, labels = run_embeddings()
    rs = build_rehearsal_set(feats, labels, classes=["B", "N"], encoder="effnet-lite0", normalization="l2", per_class=64, source={"run": "r1"})
    assert rs.counts() == {"B": 64, "N": 64}
    np.testing.assert_allclose(np.linalg.norm(rs.features, axis=1), 1.0, atol=1e-6)  # the head's input, after its L2
    path = save_rehearsal(rs, tmp_path / "m.rehearsal.npz")
    assert path.stat().st_size < 128 * 32 * 4  # float16, compressed
    back = load_rehearsal(path)
    np.testing.assert_allclose(back.features, rs.features, atol=2e-3)
    assert back.labels.tolist() == rs.labels.tolist() and back.classes == ["B", "N"] and back.encoder == "effnet-lite0"
    assert back.info["per_class"] == 64 and back.info["run"] == "r1" and back.info["from_n"] == 300
    again = build_rehearsal_set(feats, labels, classes=["B", "N"], encoder="effnet-lite0", per_class=64)
    assert np.array_equal(again.labels, rs.labels)  # same seed, same sample


def test_small_class_is_taken_whole_and_path_convention(tmp_path):
    feats, labels = run_embeddings(40)
    rs = build_rehearsal_set(feats, labels, classes=["B", "N"], encoder="e", per_class=20)
    assert rs.counts() == {"B": 20, "N": 14}
    assert rehearsal_path(tmp_path / "default.onnx").name == "default.rehearsal.npz"
    idx = select_rehearsal(labels, 5, seed=1)  # labels only: an exporter embeds just these
    assert len(idx) == 10 and list(idx) == sorted(idx) and sorted(labels[i] for i in idx) == ["B"] * 5 + ["N"] * 5
    part = build_rehearsal_set(feats[idx], [labels[i] for i in idx], classes=["B", "N"], encoder="e", per_class=5, selected=True)
    np.testing.assert_array_equal(part.features, feats[idx])


def test_mismatch_and_bad_files_are_clear_errors(tmp_path):
    feats, labels = run_embeddings()
    rs = build_rehearsal_set(feats, labels, classes=["B", "N"], encoder="effnet-lite0")
    with pytest.raises(RehearsalError, match="encoder effnet-lite0 .the model's is clip"):
        rs.check_matches("clip:ViT-B-32/openai", 32, "none", ["B", "N"])
    with pytest.raises(RehearsalError, match="32-d features"):
        rs.check_matches("effnet-lite0", 1280, "none", ["B", "N"])
    with pytest.raises(RehearsalError, match="not classes"):
        build_rehearsal_set(feats, ["X"] * len(labels), classes=["B", "N"], encoder="e")
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    with pytest.raises(RehearsalError, match="not a rehearsal set"):
        load_rehearsal(tmp_path / "bad.npz")
    np.savez(tmp_path / "other.npz", header=np.array('{"format": "something else"}'), features=np.zeros((1, 2)), labels=np.zeros(1))
    with pytest.raises(RehearsalError, match="not a waste-edge rehearsal set"):
        load_rehearsal(tmp_path / "other.npz")
    with pytest.raises(RehearsalError, match="no such rehearsal set"):
        load_rehearsal(tmp_path / "absent.npz")
