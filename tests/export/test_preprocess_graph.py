"""The ONNX preprocessing graph against the PIL reference, grey level by grey level."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from PIL import Image

from tests.export.conftest import register_tiny_clip
from tests.helpers import synthetic_rgb
from waste_edge.export.preprocess_graph import PIXELS, build_preprocess_model
from waste_edge.train.encoders import LITE0_SPEC, create_encoder
from waste_edge.train.preprocess import resize_crop

# (W, H): the sizes, plus exact-size, 2x, a large photo and a tall one (Pillow resamples vertically first).
SIZES = [(301, 199), (640, 480), (200, 200), (100, 150), (224, 224), (448, 448), (1024, 683), (225, 700), (2048 // 4, 3072 // 4)]


def _natural(w: int, h: int, seed: int) -> np.ndarray:
    """Texture + sensor-like noise (sigma 12), like the helpers' class images."""
    return synthetic_rgb("B" if seed % 2 else "N", seed, (w, h))


def _noisy(w: int, h: int, seed: int) -> np.ndarray:
    """A stress case: +-50 uniform noise on top, so cubic overshoot and clipping happen everywhere."""
    rgb = synthetic_rgb("B" if seed % 2 else "N", seed, (w, h)).astype(int)
    return np.clip(rgb + np.random.default_rng(seed).integers(-50, 50, rgb.shape), 0, 255).astype(np.uint8)


def _session(model: onnx.ModelProto) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 2
    return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])


@pytest.fixture(scope="module")
def clip_encoder():
    return create_encoder(register_tiny_clip())


def test_clip_preprocessing_matches_open_clip_pil_preprocess(clip_encoder):
    spec = clip_encoder.spec
    model = build_preprocess_model(spec, "RGB")
    onnx.checker.check_model(model, full_check=True)
    sess = _session(model)
    std = np.asarray(spec.std, np.float32).reshape(3, 1, 1) * 255
    mean = np.asarray(spec.mean, np.float32).reshape(3, 1, 1) * 255
    stress = []
    for i, (w, h) in enumerate(SIZES):
        for make, out_list in ((_natural, None), (_noisy, stress)):
            rgb = make(w, h, i)
            # open_clip's own transform (Resize + CenterCrop + ToTensor + Normalize on PIL), scaled back to grey levels.
            ref = clip_encoder.reference_transform(Image.fromarray(rgb)).numpy() * std + mean
            out = sess.run([PIXELS], {"image": rgb[None]})[0][0]
            assert out.shape == (3, spec.size, spec.size)
            d = np.abs(out - ref)
            if out_list is None:
                assert d.max() <= 1.0 + 1e-3, (w, h)
            else:
                out_list.append(d.ravel())
    # Pure noise: PIL's fixed-point arithmetic and ONNX Runtime's round a handful of pixels 2 levels apart.
    stress_all = np.concatenate(stress)
    assert stress_all.max() <= 2.0 + 1e-3
    assert (stress_all > 1.0 + 1e-3).mean() < 1e-5


def test_box_crop_preprocessing_is_bit_exact_with_pil_reduce_and_resize():
    """Pillow's reduce and bilinear resample are rebuilt with Pillow's own fixed-point arithmetic: equal, not close."""
    sess = _session(build_preprocess_model(LITE0_SPEC, "RGB"))
    for i, (w, h) in enumerate(SIZES + [(3072 // 2, 2048 // 2), (96, 64), (1280, 720)]):
        for rgb in (_natural(w, h, 10 + i), _noisy(w, h, 10 + i)):
            ref = np.asarray(resize_crop(Image.fromarray(rgb), LITE0_SPEC)).transpose(2, 0, 1).astype(np.float32)
            np.testing.assert_array_equal(sess.run([PIXELS], {"image": rgb[None]})[0][0], ref, err_msg=str((w, h)))


@pytest.mark.parametrize("kind", ["bilinear", "bicubic"])
def test_exact_resample_equals_pillow_resize(kind):
    from waste_edge.export.onnx_builder import FLOAT, INT64, GraphBuilder, tensor_info
    from waste_edge.export.pil_resample import resize_exact_nchw

    g = GraphBuilder("t/")
    x = g.op("Transpose", ["x"], perm=[0, 3, 1, 2])
    shape = g.op("Shape", ["x"])
    h, w = (g.op("Slice", [shape, g.const([i]), g.const([i + 1])]) for i in (1, 2))
    g.op("Identity", [resize_exact_nchw(g, x, h, w, "new_h", "new_w", kind)], "y")
    model = g.model(
        [tensor_info("x", onnx.TensorProto.UINT8, [1, None, None, 3]), tensor_info("new_h", INT64, [1]), tensor_info("new_w", INT64, [1])],
        [tensor_info("y", FLOAT, [1, 3, None, None])], 18, "t",
    )
    sess = _session(model)
    pil = {"bilinear": Image.Resampling.BILINEAR, "bicubic": Image.Resampling.BICUBIC}[kind]
    for i, ((w0, h0), (w1, h1)) in enumerate([((240, 240), (224, 224)), ((301, 199), (338, 224)), ((50, 80), (224, 300)), ((225, 224), (224, 224))]):
        rgb = _noisy(w0, h0, i)
        ref = np.asarray(Image.fromarray(rgb).resize((w1, h1), pil)).transpose(2, 0, 1)
        out = sess.run(None, {"x": rgb[None], "new_h": np.array([h1]), "new_w": np.array([w1])})[0][0]
        np.testing.assert_array_equal(out, ref)


@pytest.mark.parametrize("spec_name", ["clip", "lite0"])
def test_bgr_input_gives_the_same_pixels_as_rgb(spec_name, clip_encoder):
    spec = clip_encoder.spec if spec_name == "clip" else LITE0_SPEC
    rgb = _noisy(320, 240, 3)
    out_rgb = _session(build_preprocess_model(spec, "RGB")).run([PIXELS], {"image": rgb[None]})[0]
    out_bgr = _session(build_preprocess_model(spec, "BGR")).run([PIXELS], {"image": np.ascontiguousarray(rgb[..., ::-1])[None]})[0]
    np.testing.assert_array_equal(out_rgb, out_bgr)


def test_fixed_sizes_are_declared_and_batches_are_independent():
    model = build_preprocess_model(LITE0_SPEC, "RGB", batch=3, imgsz=(240, 320))
    dims = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    assert dims == [3, 240, 320, 3]
    sess = _session(model)
    frames = np.stack([_noisy(320, 240, s) for s in range(3)])
    batched = sess.run([PIXELS], {"image": frames})[0]
    single = _session(build_preprocess_model(LITE0_SPEC, "RGB"))
    for i in range(3):
        np.testing.assert_array_equal(batched[i], single.run([PIXELS], {"image": frames[i : i + 1]})[0][0])


def test_rejects_old_opset_and_unknown_channel_order():
    with pytest.raises(ValueError, match="opset"):
        build_preprocess_model(LITE0_SPEC, "RGB", opset=17)
    with pytest.raises(ValueError, match="channel order"):
        build_preprocess_model(LITE0_SPEC, "YUV")
