import numpy as np
import pytest

from tests.helpers import make_kaggle_dataset, save_image, synthetic_rgb
from waste_edge.data.discovery import discover
from waste_edge.train.embeddings import EmbeddingCache, extract_embeddings
from waste_edge.train.encoders import create_encoder


@pytest.fixture(scope="module")
def lite0_random():
    return create_encoder("effnet-lite0/none")


def test_cache_resumes_after_interruption(tmp_path, lite0_random):
    ds = discover(make_kaggle_dataset(tmp_path / "data", n_per_class=5, splits=("TRAIN",)), test_size=0.4)
    samples = ds.samples
    cache = tmp_path / "cache"
    seen = []

    def interrupt_after_two_batches(n):
        seen.append(n)
        if len(seen) == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        extract_embeddings(lite0_random, samples, batch_size=3, cache_dir=cache, progress=False, on_batch=interrupt_after_two_batches)
    assert len(EmbeddingCache(cache, lite0_random.cache_key())) == 6  # what was computed before the stop is kept

    resumed = extract_embeddings(lite0_random, samples, batch_size=3, cache_dir=cache, progress=False)
    assert (resumed.n_cached, resumed.n_extracted) == (6, len(samples) - 6)
    again = extract_embeddings(lite0_random, samples, batch_size=3, cache_dir=cache, progress=False)
    assert (again.n_cached, again.n_extracted) == (len(samples), 0)
    np.testing.assert_allclose(again.features, resumed.features, atol=1e-6)


def test_cache_is_keyed_by_content_not_path(tmp_path, lite0_random):
    from waste_edge.data.discovery import Sample

    a = save_image(tmp_path / "a" / "B" / "x.png", synthetic_rgb("B", 1))
    b = save_image(tmp_path / "moved here" / "B" / "renamed (1).png", synthetic_rgb("B", 1))
    cache = tmp_path / "cache"
    first = extract_embeddings(lite0_random, [Sample(a, "B", "train")], cache_dir=cache, progress=False)
    second = extract_embeddings(lite0_random, [Sample(b, "B", "train")], cache_dir=cache, progress=False)
    assert (first.n_extracted, second.n_cached, second.n_extracted) == (1, 1, 0)
    np.testing.assert_array_equal(first.features, second.features)


def test_unreadable_files_are_reported_not_dropped(tmp_path, lite0_random):
    from waste_edge.data.discovery import Sample

    good = save_image(tmp_path / "ok.png", synthetic_rgb("N", 3))
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    text = tmp_path / "notes.jpg"
    text.write_text("not an image")
    samples = [Sample(good, "N", "train"), Sample(empty, "B", "train"), Sample(text, "B", "train"), Sample(tmp_path / "gone.jpg", "B", "train")]
    emb = extract_embeddings(lite0_random, samples, cache_dir=tmp_path / "c", progress=False)
    assert [s.path for s in emb.samples] == [good] and emb.features.shape == (1, 1280)
    reasons = {s.path.name: why for s, why in emb.failed}
    assert set(reasons) == {"empty.jpg", "notes.jpg", "gone.jpg"}
    assert "empty" in reasons["empty.jpg"] and "not an image" in reasons["notes.jpg"]


def test_cache_distrusts_shards_with_wrong_width_nan_or_torn_bytes(tmp_path, lite0_random):
    """A cache is a file anyone can edit: vectors of the wrong width, NaN / inf rows and torn shards are
    recomputed (and said so), never fed to a head."""
    import io

    ds = discover(make_kaggle_dataset(tmp_path / "data", n_per_class=2, splits=("TRAIN",)), test_size=0.5)
    samples = ds.samples
    cache = tmp_path / "cache"
    first = extract_embeddings(lite0_random, samples, batch_size=4, cache_dir=cache, progress=False)
    key_dir = next(p for p in cache.iterdir() if p.is_dir())
    (shard,) = key_dir.glob("shard-*.npz")
    with np.load(shard) as z:
        keys, feats = z["keys"], z["features"]
    shard.unlink()
    bad = feats.copy()
    bad[0, 3] = np.nan
    bad[1, 0] = np.inf

    def write(name, **arrays):
        buf = io.BytesIO()
        np.savez(buf, **arrays)
        (key_dir / name).write_bytes(buf.getvalue())

    write("shard-nan.npz", keys=keys[:2], features=bad[:2])
    write("shard-narrow.npz", keys=keys[2:], features=feats[2:, :7])
    (key_dir / "shard-torn.npz").write_bytes(b"PK\x03\x04 torn")
    lines = []
    again = extract_embeddings(lite0_random, samples, batch_size=4, cache_dir=cache, progress=False, log=lines.append)
    assert (again.n_cached, again.n_extracted) == (0, len(samples))
    assert np.isfinite(again.features).all() and again.features.shape == first.features.shape
    np.testing.assert_allclose(again.features, first.features, atol=1e-5)
    assert any("unusable" in line and "extracting again" in line for line in lines), lines
