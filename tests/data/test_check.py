"""The duplicate / leakage check: hashes, index, cache, report, and the planted-pair acceptance test."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.data.planting import plant_copy, save_scene as _save, scene
from tests.helpers import REPO
from waste_edge._io import write_json
from waste_edge.data.check import DEFAULT_FINE_THRESHOLD, DEFAULT_THRESHOLD, check_dataset
from waste_edge.data.hamming_index import HammingIndex
from waste_edge.data.perceptual_hash import (
    _PIL_OPS,
    INVERSE,
    TRANSFORMS,
    HashCache,
    fine_distance,
    hash_image,
)


def coarse_distance(a: np.ndarray, b: np.ndarray) -> int:
    return int(np.bitwise_count(np.bitwise_xor(a, b)))


# --- hashes -----------------------------------------------------------------------------------------------------


def test_orientation_hashes_follow_the_image():
    """Hash t of an image ~ upright hash of transform t applied to it, for all 8 orientations."""
    img = scene(1, (160, 120))
    h = hash_image(img)
    assert h.coarse.shape == (8,) and h.fine.shape == (8, 32)
    for t, op in enumerate(_PIL_OPS):
        moved = hash_image(img if op is None else img.transpose(op))
        assert coarse_distance(moved.coarse[0], h.coarse[t]) <= 2, TRANSFORMS[t]
        assert fine_distance(moved.fine[0], h.fine[t]) <= 6, TRANSFORMS[t]
    # and the orientations of a generic photo are far apart from each other (else invariance would be free)
    assert min(int(coarse_distance(h.coarse[0], h.coarse[t])) for t in range(1, 8)) > 12


def test_inverse_table():
    img = scene(2, (60, 40))
    for t, op in enumerate(_PIL_OPS):
        if op is None:
            continue
        back = img.transpose(op)
        inv = _PIL_OPS[INVERSE[t]]
        back = back if inv is None else back.transpose(inv)
        assert np.array_equal(np.asarray(back), np.asarray(img)), TRANSFORMS[t]


# --- index ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("radius", [0, 3, 8, 12])
def test_hamming_index_matches_brute_force(radius):
    rng = np.random.default_rng(radius)
    codes = rng.integers(0, 2**63, 1500, dtype=np.int64).astype(np.uint64) * np.uint64(2) + rng.integers(0, 2, 1500).astype(np.uint64)
    for i in range(0, 1500, 7):  # plant codes at every distance 0..16 from another
        flips = rng.choice(64, size=int(rng.integers(0, 17)), replace=False)
        codes[i + 1 if i + 1 < 1500 else 0] = codes[i] ^ np.uint64(sum(1 << int(b) for b in flips))
    queries = np.concatenate([codes[::3], rng.integers(0, 2**63, 300, dtype=np.int64).astype(np.uint64)])
    qi, ci, d = HammingIndex(codes, radius).pairs(queries)
    dist = np.bitwise_count(queries[:, None] ^ codes[None, :])
    bq, bc = np.nonzero(dist <= radius)
    assert sorted(zip(qi.tolist(), ci.tolist())) == sorted(zip(bq.tolist(), bc.tolist()))
    assert np.array_equal(d, dist[qi, ci])


def test_hamming_index_plans_few_probes_for_large_collections():
    from waste_edge.data.hamming_index import _plan

    chunks, r = _plan(250_000, DEFAULT_THRESHOLD)
    assert chunks * (r + 1) > DEFAULT_THRESHOLD  # the pigeonhole guarantee
    assert 64 / chunks <= 22  # tables stay small


# --- check on small generated datasets --------------------------------------------------------------------------


def _pairs(result):
    return {(result.files[p.a].path, result.files[p.b].path): p for p in result.near_pairs}


def test_check_finds_planted_pairs_exact_copies_and_bad_files(small_dataset, tmp_path):
    root, planted = small_dataset
    result = check_dataset(root, cache_dir=tmp_path / "cache", workers=1, progress=False)
    pairs = _pairs(result)
    for pl in planted:
        key = (pl.original, pl.copy) if (pl.original, pl.copy) in pairs else (pl.copy, pl.original)
        assert key in pairs, f"missed {pl}"
        p = pairs[key]
        want = pl.transform if key[0] == pl.original else TRANSFORMS[INVERSE[TRANSFORMS.index(pl.transform)]]
        assert p.transform == want
        assert p.cross_split == ("same split" not in pl.copy)
        assert p.label_conflict == ("conflict" in pl.copy)
        assert result.files[p.a].split == "train" or not p.cross_split  # train side first
    unreadable = {Path(f.path).name: f.error for f in result.unreadable()}
    assert set(unreadable) == {"empty.jpg", "empty too.jpg", "text.jpg", "truncated.jpg"}
    assert "empty" in unreadable["empty.jpg"] and "not an image" in unreadable["text.jpg"]
    assert "truncated" in unreadable["truncated.jpg"]
    exact = sorted(sorted(Path(p).name for p in (result.files[i].path for i in g)) for g in result.exact_groups)
    assert exact == [["TRAIN.1_BIODEG_ORI_1.jpg", "img 1 (x).jpg"], ["exact 7.jpg", "img 7 (x).jpg"], ["exact 8 again.jpg", "img 8 (x).jpg"]]
    s = result.totals()
    assert s["exact_duplicate_pairs_cross_split"] == 1  # 7 (train) ~ exact 7 (test)
    # leaked test files: hflip of 0, rot of 3, conflict of 5, exact 7, and the HFL copy of scene 1
    assert s["leaked_files"] == {"test": 5}
    # the mirrored TEST_BIODEG_HFL_1 pairs with both byte-identical copies of scene 1
    hfl = [k for k in pairs if "TEST_BIODEG_HFL_1" in k[1]]
    assert len(hfl) == 2 and all(pairs[k].transform == "hflip" for k in hfl)
    # only planted pairs: no pair between distinct scenes
    assert len(pairs) == len(planted) + 2
    names = result.name_patterns()
    assert names["tag_counts"] == {"ORI": 2, "HFL": 1, "VFL": 1, "ROT": 0}
    groups = {g["key"]: g for g in names["cross_split_groups"]}
    assert set(groups) == {"biodeg_1", "biodeg_2"}
    assert groups["biodeg_1"]["pixel_confirmed"] and not groups["biodeg_2"]["pixel_confirmed"]


def test_json_report_schema_and_paths_as_given(small_dataset, tmp_path, monkeypatch):
    root, _ = small_dataset
    monkeypatch.chdir(root.parent)
    result = check_dataset(Path("data"), cache_dir=tmp_path / "cache", workers=2, progress=False)
    out = write_json(tmp_path / "out" / "report.json", result.to_json())
    rep = json.loads(out.read_text(encoding="utf-8"))
    assert set(rep) >= {"counts", "unreadable", "exact_duplicates", "near_duplicates", "summary"}
    assert rep["counts"]["train"]["B"] == sum(1 for f in result.files if f.split == "train" and f.label == "B")
    assert all(set(u) == {"path", "reason"} for u in rep["unreadable"])
    nd = rep["near_duplicates"][0]
    assert set(nd) >= {"a", "b", "distance", "transform", "cross_split", "label_conflict"}
    every_path = [u["path"] for u in rep["unreadable"]] + [p for g in rep["exact_duplicates"] for p in g]
    every_path += [d[k] for d in rep["near_duplicates"] for k in ("a", "b")]
    assert all(p.startswith("data/") for p in every_path)  # relative, as typed
    assert rep["summary"]["threshold"] == DEFAULT_THRESHOLD
    text = result.summary()
    assert "LEAKAGE: 5 of" in text and "truncated.jpg" in text


def test_second_check_hashes_nothing(small_dataset, tmp_path):
    root, _ = small_dataset
    cache = tmp_path / "cache"
    first = check_dataset(root, cache_dir=cache, workers=1, progress=False)
    distinct = len({f.key for f in first.files if f.key})
    assert first.hashed == distinct and first.from_cache == 0
    cache_files = list(cache.glob("*.npz"))
    assert len(cache_files) == 1
    with np.load(cache_files[0], allow_pickle=False) as z:  # plain arrays, no pickle
        assert len(z["keys"]) + len(z["error_keys"]) == distinct
    second = check_dataset(root, cache_dir=cache, workers=1, progress=False)
    assert second.hashed == 0 and second.from_cache == distinct
    assert second.to_json()["near_duplicates"] == first.to_json()["near_duplicates"]
    assert [f.error for f in second.files] == [f.error for f in first.files]
    # a moved copy of the dataset is still fully cached: keys are file contents, not paths
    moved = shutil.copytree(root, tmp_path / "moved")
    assert check_dataset(moved, cache_dir=cache, workers=1, progress=False).hashed == 0


def test_damaged_cache_is_rebuilt(small_dataset, tmp_path):
    root, _ = small_dataset
    cache = HashCache(tmp_path / "cache")
    cache.folder.mkdir(parents=True)
    cache.path.write_bytes(b"garbage")
    result = check_dataset(root, cache_dir=tmp_path / "cache", workers=1, progress=False)
    assert result.hashed > 0 and any("ignored unreadable hash cache" in w for w in result.warnings)
    assert len(HashCache(tmp_path / "cache")) == result.hashed


def test_no_cache_option(small_dataset, tmp_path, monkeypatch):
    root, _ = small_dataset
    monkeypatch.setenv("WASTE_EDGE_CACHE", str(tmp_path / "env-cache"))
    check_dataset(root, use_cache=False, workers=1, progress=False)
    assert not (tmp_path / "env-cache").exists()
    check_dataset(root, workers=1, progress=False)
    assert list((tmp_path / "env-cache" / "hashes").glob("*.npz"))


def test_csv_manifest_and_class_folder_layouts(tmp_path):
    a = _save(scene(1), tmp_path / "B" / "a.jpg")
    _save(scene(2), tmp_path / "N" / "b.jpg")
    plant_copy(a, tmp_path / "N" / "a mirrored.jpg", "rot180")
    for k in range(3, 9):
        _save(scene(k), tmp_path / ("B" if k % 2 else "N") / f"{k}.jpg")
    folders = check_dataset(tmp_path, use_cache=False, workers=1, progress=False)
    assert folders.layout == "folders" and len(folders.near_pairs) == 1
    assert folders.near_pairs[0].transform == "rot180" and folders.near_pairs[0].label_conflict
    m = tmp_path / "m.csv"
    m.write_text("path,label,split\nB/a.jpg,B,train\nN/a mirrored.jpg,B,test\nN/b.jpg,N,train\nN/gone.jpg,N,test\n")
    manifest = check_dataset(m, use_cache=False, workers=1, progress=False)
    assert manifest.layout == "csv"
    (p,) = manifest.near_pairs
    assert p.cross_split and not p.label_conflict
    assert [(Path(f.path).name, f.error) for f in manifest.unreadable()] == [("gone.jpg", "file not found")]


def test_fail_on(small_dataset, tmp_path):
    root, _ = small_dataset
    r = check_dataset(root, cache_dir=tmp_path / "c", workers=1, progress=False)
    assert r.should_fail("leakage") and r.should_fail("conflicts") and r.should_fail("any")
    assert not r.should_fail("never")
    clean = tmp_path / "clean"
    for k in range(6):
        _save(scene(k), clean / ("TRAIN" if k < 4 else "TEST") / ("B" if k % 2 else "N") / f"{k}.png")
    c = check_dataset(clean, cache_dir=tmp_path / "c", workers=1, progress=False)
    assert not c.should_fail("any") and not c.near_pairs and not c.exact_groups


def test_data_modules_do_not_import_imagehash_at_import_time():
    code = (
        "import sys, waste_edge.data.decode, waste_edge.data.discovery, waste_edge.data.check, "
        "waste_edge.data.split_groups, waste_edge.data.download, waste_edge.cli; "
        "bad = [m for m in ('imagehash', 'kagglehub', 'scipy', 'torch', 'sklearn') if m in sys.modules]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)


# --- acceptance: planted copies in real photos and generated scenes ---------------------------------------------

N_SCENES = 120


def test_acceptance_planted_pairs_found_and_few_false_pairs(tmp_path, waste_sample_optional):
    """Mirrored, rotated, JPEG-60 re-encoded and slightly resized copies planted across TRAIN/TEST are all
    found with the right transform; distinct images give at most 1 false pair per 1,000 images."""
    rng = np.random.default_rng(7)
    rows: list[tuple[str, str, str]] = []
    originals: list[tuple[Path, str, str]] = []
    for k in range(N_SCENES):
        split = "train" if k % 5 else "test"
        label = "B" if k % 2 else "N"
        p = _save(scene(k), tmp_path / "scenes" / f"scene {k}.jpg", quality=90)
        originals.append((p, label, split))
    if waste_sample_optional is not None:
        with (waste_sample_optional / "labels.csv").open(newline="", encoding="utf-8") as fh:
            for r in csv.DictReader(fh):
                split = "train" if r["path"].startswith("TRAIN/") else "test"
                originals.append((waste_sample_optional / r["path"], r["label"], split))
    rows += [(str(p.resolve()), lab, sp) for p, lab, sp in originals]
    # plant copies across the split: train originals -> copies in test and vice versa
    chosen = rng.choice(len(originals), size=min(len(originals), 240), replace=False)
    planted = []
    for n, idx in enumerate(chosen):
        src, label, split = originals[int(idx)]
        transform = TRANSFORMS[1 + n % 7] if n % 8 else "identity"
        resize = (0.9, 1.0, 1.1, 0.95)[n % 4]
        fmt = "PNG" if n % 10 == 3 else "JPEG"
        out = tmp_path / "planted" / f"copy {n}.{'png' if fmt == 'PNG' else 'jpg'}"
        pl = plant_copy(src, out, transform, resize=resize, fmt=fmt, quality=60)
        planted.append(pl)
        rows.append((str(out), label, "test" if split == "train" else "train"))
    manifest = tmp_path / "all.csv"
    with manifest.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "label", "split"])
        w.writerows(rows)

    result = check_dataset(manifest, cache_dir=tmp_path / "cache", workers=2, progress=False)
    assert not result.unreadable()
    pairs = {}
    for p in result.near_pairs:
        pairs[(result.files[p.a].path, result.files[p.b].path)] = p
    for pl in planted:
        orig = str(Path(pl.original).resolve())
        if (orig, pl.copy) in pairs:
            p, want = pairs[(orig, pl.copy)], pl.transform
        else:
            assert (pl.copy, orig) in pairs, f"planted pair not found: {pl}"
            p, want = pairs[(pl.copy, orig)], TRANSFORMS[INVERSE[TRANSFORMS.index(pl.transform)]]
        assert p.cross_split and not p.label_conflict
        assert p.transform == want, (pl, p)
        assert p.distance <= DEFAULT_THRESHOLD and p.fine_distance <= DEFAULT_FINE_THRESHOLD

    # false pairs: pairs whose underlying originals differ, unless those originals are themselves a found pair
    base = {pl.copy: str(Path(pl.original).resolve()) for pl in planted}
    false_pairs = set()
    for a, b in pairs:
        oa, ob = base.get(a, a), base.get(b, b)
        if oa != ob:
            false_pairs.add(frozenset((oa, ob)))
    n_distinct = len(originals)
    assert len(false_pairs) <= max(1, n_distinct // 1000), sorted(map(sorted, false_pairs))
    copies_in_test = sum(1 for path, _, split in rows if split == "test" and path in base)
    assert result.totals()["leaked_files"]["test"] >= copies_in_test
