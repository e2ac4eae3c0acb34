"""Keras baselines: train one step per architecture, export to the fused graph, check it against Keras."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("tensorflow")
pytest.importorskip("tf2onnx")

import onnx  # noqa: E402
import onnxruntime as ort  # noqa: E402
from PIL import Image  # noqa: E402

from tests.helpers import make_kaggle_dataset, synthetic_rgb  # noqa: E402
from waste_edge.cli import main  # noqa: E402
from waste_edge.data.discovery import discover  # noqa: E402
from waste_edge.export.exporter import export  # noqa: E402
from waste_edge.runtime.classifier import Classifier  # noqa: E402
from waste_edge.runtime.metadata import ModelMetadata  # noqa: E402
from waste_edge.train.card import RunError  # noqa: E402
from waste_edge.train.keras.archs import BaselineError, build_model, import_tensorflow, resolve_weights, unfreeze_from  # noqa: E402
from waste_edge.train.keras.data import load_images  # noqa: E402
from waste_edge.train.keras.trainer import BaselineConfig, train_baseline  # noqa: E402
from waste_edge.train.runs import KerasRun, open_run  # noqa: E402

pytestmark = [
    pytest.mark.tf,
    # Keras 3.15 internals call np.array(tensor) with numpy 2's copy semantics: noise, not our code.
    pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning"),
]

RUN_FILES = ("card.json", "model.keras", "metrics.json", "report.txt", "confusion_matrix.png", "roc.png")
SIZES = {"cnn": 32, "vgg16": 32, "efficientnetb0": 32, "inceptionv3": 75}


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory) -> Path:
    # 8 training images: with --batch-size 64 one epoch is one step.
    return make_kaggle_dataset(tmp_path_factory.mktemp("keras") / "data", n_per_class=4, splits=("TRAIN.1", "TEST"))


def _session(path: Path, extra_outputs: tuple[str, ...] = ()) -> ort.InferenceSession:
    model = onnx.load(path)
    for name in extra_outputs:
        model.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 2
    return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])


# The big backbones spend most of a minute tracing their graphs for one step: slow, but still run in CI.
@pytest.mark.parametrize("arch", [a if a in ("cnn", "vgg16") else pytest.param(a, marks=pytest.mark.slow) for a in SIZES])
def test_train_one_step_export_and_match_keras(arch, tiny_data, tmp_path):
    out = tmp_path / arch
    cfg = BaselineConfig(data=tiny_data, arch=arch, out=out, epochs=1, imgsz=SIZES[arch], batch_size=64,
                         weights="none", progress=False)
    result = train_baseline(cfg)

    for name in RUN_FILES:
        assert (out / name).is_file(), name
    card = json.loads((out / "card.json").read_text())
    assert card["kind"] == "keras" and card["arch"] == arch and card["imgsz"] == SIZES[arch]
    assert card["classes"] == ["B", "N"] and card["display_names"] == ["biodegradable", "non-biodegradable"]
    assert card["encoder"]["weights"]["source"] == "none"
    assert card["training"]["epochs_run"] == 1 and result.epochs_run == 1
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["n"] == 8 and metrics["split"] == "test"
    assert metrics["roc_auc"] is not None  # from probabilities: both classes present in TEST
    assert card["metrics"]["accuracy"] == metrics["accuracy"]

    run = open_run(out)
    model = run.load_model()
    onnx_path = export(out, "onnx", out=out / "model-fp32.onnx", channel_order="BGR", dynamic=True, progress=False).path
    meta = ModelMetadata.from_props({p.key: p.value for p in onnx.load(onnx_path).metadata_props})
    assert meta.model_kind == "keras" and meta.encoder == f"keras:{arch}" and meta.classes == ["B", "N"]
    assert meta.head_sha256 == run.model_sha256 and meta.channel_order == "BGR"

    # Crops already at imgsz: the in-graph resize is the identity, so ONNX must equal Keras itself.
    test_samples = discover(tiny_data).split("test")
    crops = load_images(test_samples, run.spec, progress=False).images
    assert len(crops) == len(test_samples)
    sess = _session(onnx_path)
    p_onnx, label = sess.run(["probabilities", "label"], {"image": np.ascontiguousarray(crops[..., ::-1])})
    p_keras = model.predict(crops.astype(np.float32), verbose=0)
    assert p_onnx.shape == (len(crops), 2) and label.dtype == np.int64
    np.testing.assert_allclose(p_onnx, p_keras, atol=1e-4, rtol=0)
    np.testing.assert_array_equal(label, p_onnx.argmax(axis=1))


def test_full_frames_match_reference_pipeline(tiny_data, tmp_path):
    """A camera-sized frame: the graph's crop equals PIL's to 1 grey level and probabilities follow."""
    out = tmp_path / "cnn"
    assert main(["train", "baseline", "--arch", "cnn", "--data", str(tiny_data), "--out", str(out), "--imgsz", "40",
                 "--epochs", "2", "--batch-size", "4"]) == 0
    onnx_path = export(out, "onnx", out=out / "model.onnx", channel_order="RGB", dynamic=True, progress=False).path
    ref = open_run(out).reference()
    frames = [synthetic_rgb(lab, 100 + i, size=(160, 120)) for i, lab in enumerate("BNBN")]
    sess = _session(onnx_path, extra_outputs=("pixels",))
    for frame in frames:
        p_onnx, pixels = sess.run(["probabilities", "pixels"], {"image": frame[None]})
        img = Image.fromarray(frame)
        assert np.max(np.abs(pixels[0] - ref.crop_uint8(img).astype(np.float32))) <= 1.0
        p_ref = ref.proba([img])
        assert np.max(np.abs(p_onnx - p_ref)) < 0.05
    # The fixed-size form for these frames: Pillow-exact, and a graph TensorRT's parser accepts.
    from waste_edge.export.tensorrt_lint import lint_path

    fixed = export(out, "onnx", out=out / "model-fixed.onnx", channel_order="RGB", dynamic=True, imgsz=(120, 160), progress=False).path
    assert lint_path(fixed).passed
    fixed_sess = _session(fixed, extra_outputs=("pixels",))
    for frame in frames:
        p_fixed, pixels = fixed_sess.run(["probabilities", "pixels"], {"image": frame[None]})
        np.testing.assert_array_equal(pixels[0], ref.crop_uint8(Image.fromarray(frame)).astype(np.float32))
        np.testing.assert_allclose(p_fixed, sess.run(["probabilities"], {"image": frame[None]})[0], atol=1e-5)
    # The edge runtime treats the baseline like any other model.
    clf = Classifier(onnx_path, threads=2)
    probs = clf.predict_proba(np.stack(frames), channel_order="RGB")
    assert probs.shape == (4, 2) and np.allclose(probs.sum(axis=1), 1.0, atol=1e-5)


def test_imagenet_offline_fails_fast_naming_the_alternatives(monkeypatch, tmp_path, capsys, tiny_data):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "empty-keras-home"))

    attempts = []

    def offline(*args, **kwargs):
        attempts.append(args)
        raise OSError(101, "Network is unreachable")

    monkeypatch.setattr(socket, "create_connection", offline)
    rc = main(["train", "baseline", "--arch", "vgg16", "--data", str(tiny_data), "--out", str(tmp_path / "run"), "--weights", "imagenet"])
    err = capsys.readouterr().err
    # Fast means no retry loop and no training before the error (counted, not timed: TensorFlow alone takes seconds
    # to start on a loaded machine).
    assert rc == 1 and len(attempts) <= 2, attempts
    assert "--weights none" in err and "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5" in err
    assert not (tmp_path / "run" / "model.keras").exists()


def test_weights_options_are_checked(tmp_path):
    with pytest.raises(BaselineError, match="--weights none"):
        resolve_weights("cnn", "imagenet")
    with pytest.raises(BaselineError, match="no such file"):
        resolve_weights("inceptionv3", str(tmp_path / "missing.h5"))
    local = tmp_path / "w.h5"
    local.write_bytes(b"not really weights")
    w = resolve_weights("efficientnetb0", str(local))
    assert w["source"] == "file" and len(w["sha256"]) == 64
    with pytest.raises(BaselineError, match=">= 75"):
        build_model("inceptionv3", 2, 64, {"source": "none", "path": None})


def test_fine_tune_from_unfreezes_the_named_layer_on():
    import_tensorflow()
    _, base = build_model("vgg16", 2, 32, {"source": "none", "path": None})
    n = unfreeze_from(base, "block5_conv1")
    names = [lay.name for lay in base.layers]
    start = names.index("block5_conv1")
    assert [lay.trainable for lay in base.layers[:start]] == [False] * start
    assert base.layers[start].trainable and n == sum(lay.trainable for lay in base.layers) > 0
    with pytest.raises(BaselineError, match="no such layer"):
        unfreeze_from(base, "block9_conv1")


def test_run_loading_is_kind_aware_and_checks_the_model_file(tiny_data, tmp_path):
    out = tmp_path / "cnn"
    train_baseline(BaselineConfig(data=tiny_data, arch="cnn", out=out, epochs=1, imgsz=16, batch_size=64, progress=False))
    run = open_run(out)
    assert isinstance(run, KerasRun) and run.kind == "keras" and run.head_sha256 == run.model_sha256
    with (out / "model.keras").open("ab") as fh:
        fh.write(b"tampered")
    with pytest.raises(RunError, match="sha256"):
        open_run(out)


def test_export_parity_and_eval_verbs_treat_baselines_like_any_run(tiny_data, tmp_path, capsys):
    """The same `waste-edge export | parity | eval` verbs dispatch on the run card's kind."""
    run = tmp_path / "cnn run"
    assert main(["train", "baseline", "--arch", "cnn", "--data", str(tiny_data), "--out", str(run), "--imgsz", "32",
                 "--epochs", "1", "--batch-size", "64"]) == 0
    model = tmp_path / "cnn.onnx"
    assert main(["export", str(run), "--format", "onnx", "--dynamic", "--out", str(model), "--quiet"]) == 0
    meta = ModelMetadata.from_props({p.key: p.value for p in onnx.load(model).metadata_props})
    assert meta.model_kind == "keras" and meta.encoder == "keras:cnn"
    assert main(["export", str(run), "--int8", "--out", str(tmp_path / "x.onnx")]) == 1
    assert "not available for Keras baselines" in capsys.readouterr().err
    report = tmp_path / "parity.json"
    assert main(["parity", str(model), "--run", str(run), "--data", str(tiny_data / "TEST"), "--json", str(report), "--quiet"]) == 0
    parity = json.loads(report.read_text())
    assert parity["n"] == 8 and parity["agreement"] == 1.0 and parity["max_abs_dp"] <= 1e-3
    assert main(["eval", str(run), "--data", str(tiny_data), "--out", str(tmp_path / "ev")]) == 0
    assert json.loads((tmp_path / "ev" / "metrics.json").read_text())["n"] == 8
