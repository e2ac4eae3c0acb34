"""waste_edge.data.decode: every awkward file kind real datasets contain, generated here."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from tests.helpers import save_image, synthetic_rgb
from waste_edge._io import is_image_path
from waste_edge.data.decode import DecodeError, load_rgb, load_rgb_array
from waste_edge.errors import WasteEdgeError


def _jpeg_bytes(arr: np.ndarray, **kw) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "JPEG", **kw)
    return buf.getvalue()


# --- files that are not usable: each must raise DecodeError with a specific one-line reason ----------------


def test_empty_file(tmp_path):
    p = tmp_path / "empty.jpg"
    p.write_bytes(b"")
    with pytest.raises(DecodeError, match="empty file"):
        load_rgb(p)


def test_missing_file(tmp_path):
    with pytest.raises(DecodeError, match="file not found"):
        load_rgb(tmp_path / "nope.jpg")


def test_text_file_with_jpg_suffix(tmp_path):
    p = tmp_path / "notes.jpg"
    p.write_text("this is not a picture\n")
    with pytest.raises(DecodeError, match="not an image"):
        load_rgb(p)


def test_random_bytes(tmp_path):
    p = tmp_path / "noise.jpg"
    p.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    with pytest.raises(DecodeError) as e:
        load_rgb(p)
    assert "\n" not in str(e.value)


def test_corrupt_jpeg_body(tmp_path):
    data = bytearray(_jpeg_bytes(synthetic_rgb("B", 1, (96, 96))))
    data[600:] = b"\x00" * (len(data) - 600)  # header intact, entropy-coded data destroyed, no EOI
    p = tmp_path / "corrupt.jpg"
    p.write_bytes(bytes(data))
    with pytest.raises(DecodeError, match="corrupt or truncated"):
        load_rgb(p)


def test_truncated_jpeg(tmp_path):
    data = _jpeg_bytes(synthetic_rgb("N", 2, (120, 90)))
    p = tmp_path / "truncated.jpg"
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(DecodeError, match="truncated"):
        load_rgb(p)


def test_truncated_png(tmp_path):
    buf = io.BytesIO()
    Image.fromarray(synthetic_rgb("B", 3, (80, 80))).save(buf, "PNG")
    p = tmp_path / "truncated.png"
    p.write_bytes(buf.getvalue()[:200])
    with pytest.raises(DecodeError):
        load_rgb(p)


def test_decode_error_is_a_user_error():
    assert issubclass(DecodeError, WasteEdgeError)


# --- modes: all become 8-bit RGB, the way a person sees them ------------------------------------------------


def test_greyscale(tmp_path):
    grey = np.tile(np.arange(0, 256, 4, dtype=np.uint8), (10, 1))
    p = save_image(tmp_path / "grey.png", grey)
    arr = load_rgb_array(p)
    assert arr.shape == (10, 64, 3) and arr.dtype == np.uint8
    assert np.array_equal(arr[..., 0], grey) and np.array_equal(arr[..., 1], grey)


def test_rgba_transparent_becomes_white(tmp_path):
    rgba = np.zeros((8, 8, 4), dtype=np.uint8)
    rgba[..., 0] = 200  # red-ish
    rgba[:, :4, 3] = 255  # left half opaque, right half fully transparent
    p = save_image(tmp_path / "rgba.png", rgba)
    arr = load_rgb_array(p)
    assert arr.shape == (8, 8, 3)
    assert arr[0, 0].tolist() == [200, 0, 0]
    assert arr[0, 7].tolist() == [255, 255, 255]


def test_palette_with_and_without_transparency(tmp_path):
    pal = Image.fromarray(synthetic_rgb("B", 4, (16, 16))).convert("P", palette=Image.Palette.ADAPTIVE, colors=8)
    p1 = tmp_path / "pal.png"
    pal.save(p1)
    ref = np.asarray(pal.convert("RGB"))
    assert np.array_equal(load_rgb_array(p1), ref)
    idx = int(np.asarray(pal)[0, 0])
    p2 = tmp_path / "pal_t.gif"
    pal.save(p2, transparency=idx)
    arr = load_rgb_array(p2)
    assert arr[0, 0].tolist() == [255, 255, 255]  # the transparent index shows as white, not black


def test_16bit_png_scaled_not_clipped(tmp_path):
    a = np.full((6, 6), 32768, dtype=np.uint16)
    a[0, 0] = 65535
    p = tmp_path / "deep.png"
    Image.fromarray(a).save(p)
    arr = load_rgb_array(p)
    assert arr[1, 1].tolist() == [128, 128, 128]  # mid-grey stays mid-grey (convert('L') would give 255)
    assert arr[0, 0].tolist() == [255, 255, 255]


def test_cmyk_jpeg(tmp_path):
    rgb = np.zeros((16, 16, 3), dtype=np.uint8)
    rgb[..., 0] = 220
    rgb[..., 2] = 30
    p = tmp_path / "cmyk.jpg"
    Image.fromarray(rgb).convert("CMYK").save(p, "JPEG", quality=95)
    assert Image.open(p).mode == "CMYK"
    arr = load_rgb_array(p).astype(int)
    assert np.abs(arr - rgb.astype(int)).max() <= 12


def test_exif_orientation_applied(tmp_path):
    # stored 40 wide x 20 high: left half red, right half blue; orientation 6 = display rotated 90 deg clockwise
    arr = np.zeros((20, 40, 3), dtype=np.uint8)
    arr[:, :20] = (255, 0, 0)
    arr[:, 20:] = (0, 0, 255)
    img = Image.fromarray(arr)
    exif = img.getexif()
    exif[0x0112] = 6
    p = tmp_path / "rotated.jpg"
    img.save(p, "JPEG", quality=95, exif=exif)
    out = load_rgb_array(p)
    assert out.shape == (40, 20, 3)  # upright: 20 wide, 40 high
    top, bottom = out[5, 10].astype(int), out[35, 10].astype(int)
    assert top[0] > 200 and top[2] < 60  # the stored left (red) half is now on top
    assert bottom[2] > 200 and bottom[0] < 60


def test_draft_decodes_small_but_same_picture(tmp_path):
    big = synthetic_rgb("N", 5, (640, 480))
    p = save_image(tmp_path / "big.jpg", big, quality=95)
    full, small = load_rgb(p), load_rgb(p, draft=(64, 64))
    assert full.size == (640, 480)
    assert small.size == (160, 120)  # 1/4 scale: 1/8 would make the short side 60 < 64
    ref = np.asarray(full.resize(small.size, Image.Resampling.BOX)).astype(int)
    assert np.abs(np.asarray(small).astype(int) - ref).mean() < 8
    png = save_image(tmp_path / "big.png", big)
    assert load_rgb(png, draft=(64, 64)).size == (640, 480)  # not JPEG: draft is ignored


@pytest.mark.parametrize("name", ["with space (1).jpg", "ünïcødé 画像.png", "a(b)[c] {d}.jpeg"])
def test_awkward_file_names(tmp_path, name):
    p = save_image(tmp_path / "dir with space" / name, synthetic_rgb("B", 6, (20, 10)))
    assert load_rgb(p).size == (20, 10)


def test_is_image_path():
    assert is_image_path("a/b.JPG") and is_image_path("x.webp")
    assert not is_image_path("labels.csv") and not is_image_path("README")
