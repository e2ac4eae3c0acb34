import dataclasses

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto

import waste_edge
from tests.helpers import synthetic_rgb
from tests.runtime.tiny_model import expected_probs, make_fused_model
from waste_edge.errors import WasteEdgeError
from waste_edge.runtime.classifier import Classifier, Prediction
from waste_edge.runtime.frames import FrameError
from waste_edge.runtime.metadata import MetadataError
from waste_edge.runtime.model_path import resolve_model_path
from waste_edge.runtime.backends.base import BackendError, FeedError
from waste_edge.runtime.backends.select import available_backends, candidate_backends, make_runner


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    d = tmp_path_factory.mktemp("models")
    return {
        "rgb": make_fused_model(d / "rgb.onnx", channel_order="RGB"),
        "bgr": make_fused_model(d / "bgr.onnx", channel_order="BGR"),
        "fixed": make_fused_model(d / "fixed.onnx", input_size=(32, 40)),
        "batch1": make_fused_model(d / "batch1.onnx", batch=1),
        "three": make_fused_model(d / "three.onnx", classes=("B", "N", "X")),
        "nometa": make_fused_model(d / "nometa.onnx", metadata=False),
        "float": make_fused_model(d / "float.onnx", input_dtype=TensorProto.FLOAT),
        "named": make_fused_model(d / "named.onnx", input_name="pixels"),
    }


@pytest.fixture(scope="module")
def clf(models):
    with Classifier(models["rgb"], threads=1) as c:
        yield c


def test_metadata_and_backend_are_read_once_and_reported(clf):
    assert clf.classes == ["B", "N"]
    assert clf.display_names == ["biodegradable", "non-biodegradable"]
    assert clf.channel_order == "RGB"
    assert clf.input_size is None
    assert clf.backend == "cpu" and clf.provider == "CPUExecutionProvider"
    assert "backend cpu (CPUExecutionProvider)" in clf.describe()
    assert clf.metadata.encoder == "test:mean-colour"


def test_predict_single_frame_returns_typed_result(clf):
    rgb = synthetic_rgb("B", 3, size=(64, 48))
    pred = clf.predict(rgb, channel_order="RGB")
    assert isinstance(pred, Prediction)
    assert dataclasses.is_dataclass(pred)
    with pytest.raises(dataclasses.FrozenInstanceError):
        pred.label = "N"  # type: ignore[misc]
    exp = expected_probs(rgb)
    assert pred.label == "B" and pred.index == 0 and pred.display_name == "biodegradable"
    assert pred.confidence == pytest.approx(exp[0], abs=1e-5)
    assert pred.probabilities == pytest.approx({"B": exp[0], "N": exp[1]}, abs=1e-5)


def test_channel_order_is_flipped_only_when_the_model_wants_the_other(models):
    rgb = synthetic_rgb("B", 4, size=(64, 48))
    bgr = np.ascontiguousarray(rgb[..., ::-1])
    exp = expected_probs(rgb)
    for name in ("rgb", "bgr"):
        with Classifier(models[name], "cpu", threads=1) as c:
            # The right answer whichever order the caller has, as long as the caller says which it is.
            assert c.predict_proba(bgr, "BGR")[0] == pytest.approx(exp, abs=1e-5)
            assert c.predict_proba(rgb, "RGB")[0] == pytest.approx(exp, abs=1e-5)
            # Lying about the order flips the answer: proof that the channels really are swapped (or not).
            assert c.predict(rgb, "BGR").label == "N"
    # the caller's frame is never modified in place by the flip
    assert np.array_equal(bgr, np.ascontiguousarray(rgb[..., ::-1]))


def test_batches_and_lists_of_different_sizes(clf):
    frames = [synthetic_rgb("B", 1, (64, 48)), synthetic_rgb("N", 2, (64, 48)), synthetic_rgb("N", 3, (40, 30)), synthetic_rgb("B", 4, (64, 48))]
    preds = clf.predict(frames, "RGB")
    assert [p.label for p in preds] == ["B", "N", "N", "B"]
    for f, p in zip(frames, preds):
        assert p.confidence == pytest.approx(expected_probs(f).max(), abs=1e-5)
    batch = np.stack([frames[0], frames[1]])
    probs = clf.predict_proba(batch, "RGB")
    assert probs.shape == (2, 2) and probs.dtype == np.float32
    assert [p.label for p in clf.predict(batch, "RGB")] == ["B", "N"]
    assert clf.predict_proba(batch[:, :, :, ::-1], "BGR") == pytest.approx(probs, abs=1e-6)


@pytest.mark.parametrize(
    "bad, match",
    [
        (None, "None"),
        (np.zeros((48, 64), np.uint8), "greyscale"),
        (np.zeros((48, 64, 4), np.uint8), "4 channels"),
        (np.zeros((48, 64, 3), np.float32), "dtype is float32"),
        (np.zeros((0, 64, 3), np.uint8), "empty"),
        ([[1, 2, 3]], "numpy array"),
        ([], "empty list"),
        (np.zeros((2, 48, 64, 1), np.uint8), "NxHxWx3"),
    ],
)
def test_bad_frames_raise_a_clear_value_error(clf, bad, match):
    with pytest.raises(ValueError, match=match) as err:
        clf.predict(bad)
    assert isinstance(err.value, FrameError)


def test_bad_frame_in_a_list_is_named(clf):
    with pytest.raises(FrameError, match="frame 1: .*dtype"):
        clf.predict([synthetic_rgb("B", 1), np.zeros((4, 4, 3), np.int32)])


def test_bad_channel_order_argument(clf):
    with pytest.raises(ValueError, match="channel_order"):
        clf.predict(synthetic_rgb("B", 1), channel_order="YUV")


def test_fixed_input_size_model_resizes_frames(models):
    with Classifier(models["fixed"], threads=1) as c:
        assert c.input_size == (32, 40)
        big = synthetic_rgb("N", 5, size=(160, 120))
        assert c.predict(big, "RGB").label == "N"
        assert len(c.predict([big, synthetic_rgb("B", 6, size=(20, 10))], "RGB")) == 2


def test_fixed_batch_model_runs_any_batch(models):
    with Classifier(models["batch1"], threads=1) as c:
        assert c.max_batch == 1
        frames = np.stack([synthetic_rgb(l, i) for i, l in enumerate("BNB")])
        assert [p.label for p in c.predict(frames, "RGB")] == ["B", "N", "B"]


def test_number_of_classes_comes_from_metadata(models):
    with Classifier(models["three"], threads=1) as c:
        pred = c.predict(synthetic_rgb("B", 1), "RGB")
        assert list(pred.probabilities) == ["B", "N", "X"]
        assert sum(pred.probabilities.values()) == pytest.approx(1.0, abs=1e-5)


def test_models_that_break_the_contract_are_refused(models):
    with pytest.raises(MetadataError, match="no waste-edge metadata"):
        Classifier(models["nometa"])
    with pytest.raises(BackendError, match="input type is float32, expected uint8"):
        Classifier(models["float"])
    with pytest.raises(BackendError, match="named 'pixels'"):
        Classifier(models["named"])


def test_model_path_errors(tmp_path, monkeypatch):
    from waste_edge.runtime import model_path

    assert resolve_model_path(None) == model_path.DEFAULT_MODEL  # no --model: the embedded default
    monkeypatch.setattr(model_path, "DEFAULT_MODEL", tmp_path / "not-built.onnx")
    with pytest.raises(WasteEdgeError, match="default model is missing from this install: pass --model"):
        resolve_model_path(None)
    with pytest.raises(WasteEdgeError, match="model file not found"):
        Classifier(tmp_path / "missing.onnx")
    with pytest.raises(WasteEdgeError, match="unknown model file type"):
        Classifier(tmp_path / "model.pt")
    (tmp_path / "garbage.onnx").write_bytes(b"not a protobuf")
    with pytest.raises(BackendError, match="cannot load the model"):
        Classifier(tmp_path / "garbage.onnx")


def test_backend_choice_follows_the_format_table_and_what_is_available(models):
    here = set(ort.get_available_providers())
    backends = available_backends(models["rgb"])
    assert backends[-1] == "cpu"
    assert ("cuda" in backends) == ("CUDAExecutionProvider" in here)
    assert ("tensorrt" in backends) == ("TensorrtExecutionProvider" in here)
    assert candidate_backends(models["rgb"], "auto") == backends
    assert candidate_backends(models["rgb"], "cpu") == ["cpu"]
    with pytest.raises(BackendError, match="unknown backend"):
        candidate_backends(models["rgb"], "npu")


@pytest.mark.skipif("CUDAExecutionProvider" in ort.get_available_providers(), reason="CUDA is available here")
def test_unavailable_backend_is_a_clear_error(models):
    with pytest.raises(BackendError, match="backend 'cuda' is not available.*onnxruntime-gpu"):
        Classifier(models["rgb"], backend="cuda")
    with pytest.raises(BackendError, match="needs CUDAExecutionProvider"):
        make_runner(models["rgb"], "cuda").activate()


def test_runner_is_a_context_manager(models):
    runner = make_runner(models["rgb"], "cpu", threads=1)
    assert not runner.is_active
    with runner as r:
        assert r.is_active
        out = r.infer({"image": synthetic_rgb("N", 1)[None]})
        assert set(out) == {"probabilities", "label"}
        assert out["label"].tolist() == [int(out["probabilities"].argmax())]
        info = r.input_info()["image"]
        assert info.dtype == np.uint8 and info.shape == (None, None, None, 3)
        # The template checks the feed against the declared inputs before the backend sees it.
        with pytest.raises(FeedError, match="'image' has dtype float32"):
            r.infer({"image": synthetic_rgb("N", 1)[None].astype(np.float32)})
        with pytest.raises(FeedError, match="declares rank 4"):
            r.infer({"image": synthetic_rgb("N", 1)})
        with pytest.raises(FeedError, match="missing \\['image'\\]"):
            r.infer({"pixels": synthetic_rgb("N", 1)[None]})
    assert not runner.is_active
    with pytest.raises(BackendError, match="not active"):
        runner.infer({"image": synthetic_rgb("N", 1)[None]})
    runner.deactivate()  # a no-op when inactive


def test_package_exports_are_lazy():
    assert waste_edge.Classifier is Classifier
    from waste_edge.runtime.sources import open_source

    assert waste_edge.open_source is open_source
    with pytest.raises(AttributeError):
        waste_edge.NoSuchThing  # noqa: B018
