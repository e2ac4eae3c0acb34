import numpy as np
import pytest
import torch
from PIL import Image

from tests.helpers import register_tiny_clip, synthetic_rgb
from waste_edge.train.encoders import EncoderError, LITE0_SPEC, create_encoder
from waste_edge.train.preprocess import PreprocessSpec, box_crop_geometry, resize_crop


@pytest.fixture(scope="module")
def tiny_clip():
    return register_tiny_clip()


def test_clip_random_weights_spec_from_preprocess_cfg(tiny_clip):
    enc = create_encoder(f"clip:{tiny_clip}/none")
    assert enc.family == "clip" and enc.dim == 32 and enc.weights == {"source": "random", "sha256": None}
    assert enc.spec.size == 224 and enc.spec.resize_mode == "shortest" and enc.spec.interpolation == "bicubic"
    assert enc.spec.mean == pytest.approx((0.48145466, 0.4578275, 0.40821073))
    # Random weights are seeded: train, export and parity rebuild the very same tensors.
    again = create_encoder(f"clip:{tiny_clip}/none")
    assert torch.equal(enc.module.conv1.weight, again.module.conv1.weight)


def test_clip_local_checkpoint(tmp_path, tiny_clip):
    import open_clip

    torch.manual_seed(123)
    model = open_clip.create_model(tiny_clip, pretrained=None)
    ckpt = tmp_path / "my clip (v1).pt"
    torch.save(model.state_dict(), ckpt)
    with pytest.warns(UserWarning, match="QuickGELU"):
        enc = create_encoder(f"clip:{tiny_clip}/{ckpt}")
    assert enc.weights["sha256"] is not None and len(enc.weights["sha256"]) == 64
    assert torch.equal(enc.module.conv1.weight, model.visual.conv1.weight)


def test_clip_missing_checkpoint_and_unknown_ids(tmp_path, tiny_clip):
    with pytest.raises(EncoderError, match="not found"):
        create_encoder(f"clip:{tiny_clip}/{tmp_path}/nope.pt")
    with pytest.raises(EncoderError, match="unknown encoder"):
        create_encoder("resnet9000")
    with pytest.raises(EncoderError, match="architecture"):
        create_encoder("clip:NoSuchArch/none")


def test_offline_hub_fails_fast_with_local_checkpoint_hint(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(EncoderError, match="pass the file"):
        create_encoder("clip:ViT-B-32/openai")


def test_clip_preprocess_spec_reproduces_open_clip_transform(tiny_clip):
    """Our PIL implementation of the spec equals open_clip's own preprocess (what export rebuilds)."""
    from waste_edge.train.preprocess import normalise

    enc = create_encoder(f"clip:{tiny_clip}/none")
    for i, (w, h) in enumerate([(301, 199), (64, 48), (200, 200), (480, 640)]):
        img = Image.fromarray(synthetic_rgb("B" if i % 2 else "N", i, (w, h)))
        ours = normalise(np.asarray(resize_crop(img, enc.spec)), enc.spec)
        np.testing.assert_allclose(ours, enc.preprocess(img), atol=1e-5)


def test_effnet_lite0_imagenet_weights_load_and_classify_sensibly():
    enc = create_encoder("effnet-lite0")
    assert enc.dim == 1280 and enc.spec == LITE0_SPEC
    assert enc.weights["sha256"] == "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"
    x = torch.from_numpy(np.stack([enc.preprocess(Image.fromarray(synthetic_rgb("B", s, (320, 240)))) for s in range(2)]))
    with torch.inference_mode():
        feats = enc.module(x)
        probs = enc.module.logits(x).softmax(-1)
    assert feats.shape == (2, 1280) and torch.isfinite(feats).all()
    assert float(probs.sum(-1).mean()) == pytest.approx(1.0, abs=1e-4)


@pytest.mark.parametrize("w,h", [(640, 480), (200, 200), (100, 150), (3072, 2048), (225, 1000)])
def test_box_crop_geometry(w, h):
    left, top, side, k = box_crop_geometry(w, h, 224)
    assert side % k == 0 and side // k >= min(224, min(w, h))
    assert side // k < 2 * 224 and 0 <= left <= w - side and 0 <= top <= h - side
    spec = PreprocessSpec(224, "box_crop", "bilinear", True, (0.5,) * 3, (0.5,) * 3)
    assert resize_crop(Image.new("RGB", (w, h)), spec).size == (224, 224)
