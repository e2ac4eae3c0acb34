"""predict --ray and extraction on Ray, on a real in-process Ray cluster (ray.init(num_cpus=2), one per module).

The `ray start --head` cluster of test_ray_cluster.py is not shared with these tests on purpose: the issue asks
for both kinds, and an in-process driver cannot join a token-authenticated head once Ray is imported (Ray reads
the token settings at import), so each module starts the one cluster its tests share.

Each Ray job starts its actors (a process each, importing onnxruntime or torch): seconds, so the tests here
run as few jobs as they can while checking everything the issue asks: rows equal to the single-process path,
an interruption that leaves complete shards, and a rerun that skips them without duplicating a row.
"""

import json
import shutil
import tempfile

import numpy as np
import pytest

from tests.helpers import make_kaggle_dataset
from tests.scale.conftest import assert_same_rows, read_csv

ray = pytest.importorskip("ray")
pytest.importorskip("ray.data")
pytest.importorskip("pyarrow")

from waste_edge.cli import main  # noqa: E402
from waste_edge.scale.cluster import RayOptions  # noqa: E402

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def local_ray():
    # A fresh local cluster (never one another process started), 2 CPUs, a small object store, and a short temp
    # folder of its own: Ray's socket paths must stay under 107 bytes.
    temp = tempfile.mkdtemp(prefix="we-ray-", dir="/tmp")
    ray.init(address="local", num_cpus=2, include_dashboard=False, object_store_memory=100 * 2**20, _temp_dir=temp,
             log_to_driver=False, logging_level="WARNING")
    yield
    ray.shutdown()
    shutil.rmtree(temp, ignore_errors=True)


class Stop(KeyboardInterrupt):
    """A Ctrl-C at a chosen moment: after the first shard is safely on disk."""


def stop_after_first_shard(seen: list):
    def hook(index: int) -> None:
        seen.append(index)
        raise Stop

    return hook


def test_predict_on_ray_equals_single_process_and_resumes_after_interruption(local_ray, predict_inputs, tmp_path, monkeypatch, capsys):
    from waste_edge.runtime.classifier import Classifier
    from waste_edge.runtime.predict import run_predict
    from waste_edge.scale.predict import run_predict_ray

    monkeypatch.setenv("WASTE_EDGE_CACHE", str(tmp_path / "cache"))
    with Classifier(None, "cpu") as clf:
        run_predict(clf, predict_inputs, tmp_path / "single.csv", batch_size=4, progress=False)
    want = read_csv(tmp_path / "single.csv")
    assert len(want) == 18 + 2 + 6 + 1 and sum(1 for r in want if r["error"]) == 3

    shards = tmp_path / "shards"
    seen: list = []
    with pytest.raises(Stop):  # 2 work units per shard: 5 units of 4 images and the video in 3 shards
        run_predict_ray(None, predict_inputs, tmp_path / "ray.csv", options=RayOptions(workers=1, shard_size=8, shards_dir=shards),
                        backend="cpu", batch_size=4, progress=False, on_shard=stop_after_first_shard(seen))
    assert len(seen) == 1 and [p.name for p in shards.glob("part-*.parquet")] == [f"part-{seen[0]:05d}.parquet"]
    partial = read_csv(tmp_path / "ray.csv")  # what was merged in order before the stop: a prefix, never a gap
    assert len(partial) < len(want)
    assert_same_rows(partial, want[: len(partial)])

    # The same command again, as a user would type it: the finished shard is skipped, the rest computed.
    args = ["predict", *map(str, predict_inputs), "--out", str(tmp_path / "ray.csv"), "--batch-size", "4", "--backend", "cpu",
            "--ray", "--shard-size", "8", "--ray-shards", str(shards), "--quiet"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "27 rows (24 predictions, 3 errors)" in out and "3 shards (1 reused from an earlier run)" in out
    assert_same_rows(read_csv(tmp_path / "ray.csv"), want)
    assert not shards.exists()  # merged into the CSV, then removed


def test_extraction_on_ray_equals_single_process_and_recovers_finished_shards(local_ray, tmp_path, capsys):
    import pyarrow.parquet as pq

    from waste_edge.data.discovery import discover
    from waste_edge.scale.extract import RayFeatureRunner
    from waste_edge.train.embeddings import extract_embeddings
    from waste_edge.train.encoders import create_encoder

    data = make_kaggle_dataset(tmp_path / "data", n_per_class=3)
    (data / "TRAIN.1" / "B" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    enc = create_encoder("effnet-lite0/none")
    train = discover(data).split("train")
    single = extract_embeddings(enc, train, batch_size=4, cache_dir=tmp_path / "c1", progress=False, device="cpu")
    assert len(single.samples) == 12 and [s.path.name for s, _ in single.failed] == ["broken.jpg"]

    cache = tmp_path / "c2"
    seen: list = []
    runner = RayFeatureRunner(RayOptions(workers=1, shard_size=8), device="cpu", on_shard=stop_after_first_shard(seen))
    with pytest.raises(Stop):
        extract_embeddings(enc, train, batch_size=4, cache_dir=cache, progress=False, runner=runner)
    key_dir = cache / enc.cache_key()
    parts = list((key_dir / "ray-parts").glob("*/part-*.parquet"))
    assert len(parts) == 1
    in_shard = pq.read_table(parts[0]).num_rows
    assert 0 < in_shard <= 8
    for f in key_dir.glob("shard-*.npz"):  # as if killed before the cache was flushed: only the Parquet shard is left
        f.unlink()
    # The test split is in the cache already: one Ray job fewer (its extraction has nothing to do).
    extract_embeddings(enc, discover(data).split("test"), batch_size=4, cache_dir=cache, progress=False, device="cpu")

    # Resume through the CLI: train linear --ray folds the shard into the cache, then extracts only the rest.
    args = ["train", "linear", "--data", str(data), "--encoder", "effnet-lite0/none", "--batch-size", "4", "--torch-device", "cpu"]
    assert main([*args, "--cache", str(cache), "--out", str(tmp_path / "run-ray"), "--ray", "--shard-size", "8"]) == 0
    captured = capsys.readouterr()
    assert f"recovered {in_shard} embeddings" in captured.err
    assert f"train: {12 - in_shard} extracted, {in_shard} reused from the cache, 1 unreadable" in captured.out
    assert "test: all 6 embeddings reused from the cache" in captured.out
    assert not list((key_dir / "ray-parts").glob("*/*.parquet"))  # merged into the cache, then removed

    # The cache now holds the single-process features, and the run is the single-process run.
    again = extract_embeddings(enc, train, batch_size=4, cache_dir=cache, progress=False, device="cpu")
    assert (again.n_cached, again.n_extracted) == (12, 0)
    assert [s.path for s in again.samples] == [s.path for s in single.samples]
    np.testing.assert_allclose(again.features, single.features, rtol=1e-5, atol=1e-5)
    assert main([*args, "--cache", str(tmp_path / "c1"), "--out", str(tmp_path / "run-one")]) == 0
    heads = [json.loads((tmp_path / r / "head.json").read_text()) for r in ("run-ray", "run-one")]
    np.testing.assert_allclose(heads[0]["coef"], heads[1]["coef"], atol=1e-4)
    metrics = [json.loads((tmp_path / r / "metrics.json").read_text()) for r in ("run-ray", "run-one")]
    assert metrics[0]["accuracy"] == metrics[1]["accuracy"]
    card = json.loads((tmp_path / "run-ray" / "card.json").read_text())
    assert card["training"]["embeddings"]["runner"] == "ray"
