"""The fixed-size preprocessing: Pillow's taps computed in numpy, applied by a graph, equal to PIL grey level by grey level."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from PIL import Image

from waste_edge.export.pil_taps import (
    FLOAT32_EXACT,
    apply_taps,
    check_exact,
    fixed_steps,
    pillow_taps,
    reduce_mean,
    reduce_split,
    run_steps,
    vertical_first,
)
from waste_edge.export.preprocess_fixed import BOX_FORMS, FORMS, PIXELS, build_fixed_preprocess_model
from waste_edge.train.encoders import LITE0_SPEC
from waste_edge.train.preprocess import PreprocessSpec, resize_crop

CLIP_SPEC = PreprocessSpec(224, "shortest", "bicubic", True, (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711))
BILINEAR_SHORTEST = PreprocessSpec(128, "shortest", "bilinear", True, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
SPECS = {"clip": CLIP_SPEC, "lite0": LITE0_SPEC, "bilinear": BILINEAR_SHORTEST}
# (W, H): camera frames, portrait, odd, exact size, tall (Pillow's vertical-first pass), box reduce by 3 (k*k = 9)
# and the box_crop path that resizes after the reduce (1920x1080: k = 4, side 1080, 270 -> 224).
FRAMES = [(640, 480), (1280, 720), (480, 640), (301, 199), (224, 224), (225, 700), (96, 64), (1000, 672), (1920, 1080)]


def _frames(w: int, h: int, seed: int) -> dict[str, np.ndarray]:
    """Adversarial inputs: all-255 (largest sums), a 1-pixel checkerboard (largest overshoot of the cubic), noise."""
    rng = np.random.default_rng(seed)
    check = ((np.indices((h, w)).sum(0) % 2) * 255).astype(np.uint8)
    return {
        "white": np.full((h, w, 3), 255, np.uint8),
        "checker": np.stack([check, 255 - check, check], axis=-1),
        "noise": rng.integers(0, 256, (h, w, 3), dtype=np.uint8),
    }


def _session(model: onnx.ModelProto) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 2
    return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])


def _pil(rgb: np.ndarray, spec: PreprocessSpec) -> np.ndarray:
    return np.asarray(resize_crop(Image.fromarray(rgb), spec)).transpose(2, 0, 1)


@pytest.mark.parametrize("kind", ["bilinear", "bicubic"])
def test_numpy_taps_and_pass_order_reproduce_pillow_resize(kind):
    """The export-time taps are Pillow's, and so is the pass order: the other order is detectably wrong."""
    rng = np.random.default_rng(0)
    pil = {"bilinear": Image.Resampling.BILINEAR, "bicubic": Image.Resampling.BICUBIC}[kind]
    for (w, h), (nw, nh) in [((640, 480), (298, 224)), ((225, 700), (224, 696)), ((50, 80), (224, 300)), ((100, 400), (90, 200))]:
        rgb = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        ref = np.asarray(Image.fromarray(rgb).resize((nw, nh), pil))
        tx, ty = pillow_taps(w, nw, kind), pillow_taps(h, nh, kind)
        results = {}
        for order in ("v", "h"):
            x = rgb
            for axis in ((0, 1) if order == "v" else (1, 0)):
                x = apply_taps(x, ty if axis == 0 else tx, axis)
            results[order] = np.array_equal(x, ref)
        expected = "v" if vertical_first(w, h, nw, nh) else "h"
        assert results[expected], (w, h, nw, nh, "Pillow's pass order changed?")
        assert not results["h" if expected == "v" else "v"], (w, h, nw, nh)


@pytest.mark.parametrize("name", sorted(SPECS))
def test_steps_reproduce_resize_crop(name):
    spec = SPECS[name]
    for i, (w, h) in enumerate(FRAMES + [(336, 336), (230, 1000)]):
        rgb = _frames(w, h, i)["noise"]
        np.testing.assert_array_equal(run_steps(rgb, fixed_steps(spec, h, w)).transpose(2, 0, 1), _pil(rgb, spec), err_msg=str((w, h)))


def test_box_mean_is_exact_in_float32_for_every_sum():
    """Pillow's ((S + kk/2) * M) >> 24 via `reduce_split`, emulated in float32, for every reachable sum and k <= 15."""
    for k in range(2, 16):
        kk = k * k
        amend, m_hi, m_lo = reduce_split(kk)
        t = np.arange(255 * kk + 1, dtype=np.float32) + np.float32(amend)
        scaled = t * np.float32(m_hi * 2.0**-16)
        if m_lo:
            scaled = scaled + np.floor(t * np.float32(m_lo * 2.0**-8)) * np.float32(2.0**-16)
        np.testing.assert_array_equal(np.floor(scaled), reduce_mean(np.arange(255 * kk + 1), kk), err_msg=f"k={k}")
    with pytest.raises(ValueError, match="float32"):
        reduce_split(16 * 16)


def test_tables_that_would_leave_float32_are_refused():
    check_exact(pillow_taps(4096, 224, "bicubic"))  # a 4K frame is fine
    with pytest.raises(ValueError, match="not exact in float32"):
        check_exact(pillow_taps(20000, 224, "bicubic"))
    assert FLOAT32_EXACT == 2**24


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("name", ["clip", "lite0"])
def test_graph_equals_pil_on_adversarial_frames(name, form):
    spec = SPECS[name]
    for i, (w, h) in enumerate(FRAMES if form == "band" else FRAMES[:4]):  # the default form on every frame size
        sess = _session(build_fixed_preprocess_model(spec, "RGB", (h, w), form=form))
        for kind, rgb in _frames(w, h, i).items():
            out = sess.run([PIXELS], {"image": rgb[None]})[0][0]
            np.testing.assert_array_equal(out, _pil(rgb, spec), err_msg=f"{(w, h)} {kind}")


@pytest.mark.parametrize("box_form", BOX_FORMS)
def test_box_forms_agree_and_bgr_flips(box_form):
    for i, (w, h) in enumerate([(640, 480), (1280, 720), (1920, 1080)]):
        rgb = _frames(w, h, i)["noise"]
        sess = _session(build_fixed_preprocess_model(LITE0_SPEC, "BGR", (h, w), box_form=box_form))
        out = sess.run([PIXELS], {"image": np.ascontiguousarray(rgb[None, ..., ::-1])})[0][0]
        np.testing.assert_array_equal(out, _pil(rgb, LITE0_SPEC))


def _all_nodes(graph: onnx.GraphProto):
    for n in graph.node:
        yield n
        for a in n.attribute:
            if a.type == onnx.AttributeProto.GRAPH:
                yield from _all_nodes(a.g)


@pytest.mark.parametrize("name", ["clip", "lite0"])
def test_graph_has_one_cast_and_nothing_tensorrt_or_other_runtimes_disagree_on(name):
    model = build_fixed_preprocess_model(SPECS[name], "BGR", (480, 640), batch=2)
    onnx.checker.check_model(model, full_check=True)
    nodes = list(_all_nodes(model.graph))
    ops = {n.op_type for n in nodes}
    assert not ops & {"Resize", "If", "Loop", "Shape", "Range", "Div"}
    casts = [n for n in nodes if n.op_type == "Cast"]
    assert len(casts) == 1 and casts[0].input[0] == "image"
    assert all(t.data_type != onnx.TensorProto.DOUBLE for t in model.graph.initializer)
    assert [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim] == [2, 480, 640, 3]


@pytest.mark.slow
@pytest.mark.parametrize("frame", [(640, 480), (1280, 720)])
def test_real_photos_resized_to_camera_frames_match_pil(waste_sample, frame):
    """waste-sample TEST photos, resized to a camera frame size: 0 grey levels from PIL, both specs."""
    from waste_edge.data.decode import load_rgb

    files = sorted((waste_sample / "TEST").rglob("*.jpg"))[::10][:42]
    w, h = frame
    sessions = {name: _session(build_fixed_preprocess_model(SPECS[name], "RGB", (h, w))) for name in ("clip", "lite0")}
    worst = 0.0
    for path in files:
        rgb = np.asarray(load_rgb(path).resize((w, h), Image.Resampling.BILINEAR))
        for name, sess in sessions.items():
            out = sess.run([PIXELS], {"image": rgb[None]})[0][0]
            worst = max(worst, float(np.abs(out - _pil(rgb, SPECS[name])).max()))
    assert len(files) >= 40 and worst == 0.0
