"""Training data of the baselines: every image decoded and cropped once, then fed by a tf.data index pipeline.

Decoding large JPEGs every epoch would dominate training on a 2-core machine, so each sample is decoded
(threads, progress bar) into one uint8 array up front; memory is N x imgsz^2 x 3 bytes. Unreadable files are
kept with their reason, never dropped silently.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
from tqdm import tqdm

from waste_edge._io import file_sha256
from waste_edge.data.decode import DecodeError, load_rgb
from waste_edge.data.discovery import Sample, stratified_split
from waste_edge.train.keras.archs import import_tensorflow
from waste_edge.train.preprocess import PreprocessSpec, resize_crop


@dataclass
class ImageSet:
    """Decoded `imgsz` crops of some samples, with what could not be decoded."""

    samples: list[Sample]
    images: np.ndarray  # uint8 [N, S, S, 3] RGB
    hashes: list[str]
    failed: list[tuple[Sample, str]] = field(default_factory=list)

    @property
    def labels(self) -> list[str]:
        return [s.label for s in self.samples]

    def unreadable(self) -> list[tuple[str, str]]:
        return [(str(s.path), why) for s, why in self.failed]


def load_images(samples: Sequence[Sample], spec: PreprocessSpec, *, workers: int = 2, progress: bool = True, desc: str = "decode") -> ImageSet:
    """Decode and crop every sample once (threads), keeping unreadable files with their reason."""

    def one(s: Sample) -> tuple[np.ndarray | None, str | None, str]:
        try:
            crop = np.asarray(resize_crop(load_rgb(s.path), spec), dtype=np.uint8)
            return crop, file_sha256(s.path), ""
        except DecodeError as e:
            return None, None, str(e)
        except OSError as e:
            return None, None, f"cannot read file: {e.strerror or e}"

    ok: list[Sample] = []
    crops: list[np.ndarray] = []
    hashes: list[str] = []
    failed: list[tuple[Sample, str]] = []
    with ThreadPoolExecutor(max(1, workers)) as pool:
        for s, (crop, h, why) in tqdm(zip(samples, pool.map(one, samples)), total=len(samples), desc=desc, unit="img", disable=not progress):
            if crop is None:
                failed.append((s, why))
            else:
                ok.append(s)
                crops.append(crop)
                hashes.append(str(h))
    arr = np.stack(crops) if crops else np.zeros((0, spec.size, spec.size, 3), np.uint8)
    return ImageSet(ok, arr, hashes, failed)


def tf_dataset(images: np.ndarray, labels: np.ndarray, batch_size: int, *, shuffle: bool, seed: int = 0) -> Any:
    """Shuffled index batches gathered from the decoded array, float RGB 0..255, prefetched.

    Indices rather than `from_tensor_slices(images)`: the array is not copied into the graph (no 2 GB limit).
    """
    tf, _ = import_tensorflow()
    n = len(images)
    size = images.shape[1:]

    def gather(idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return images[idx].astype(np.float32), labels[idx].astype(np.int64)

    def tf_gather(idx: Any) -> tuple[Any, Any]:
        x, y = tf.numpy_function(gather, [idx], (tf.float32, tf.int64))
        x.set_shape((None, *size))
        y.set_shape((None,))
        return x, y

    ds = tf.data.Dataset.range(n)
    if shuffle:
        ds = ds.shuffle(n, seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size).map(tf_gather, num_parallel_calls=tf.data.AUTOTUNE)
    if shuffle:
        ds = ds.map(lambda x, y: (tf.image.random_flip_left_right(x, seed=seed), y), num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)


def carve_validation(train: list[Sample], fraction: float, seed: int) -> tuple[list[Sample], list[Sample]]:
    """Hold out a stratified part of TRAIN for early stopping when the data has no VAL split."""
    parts = stratified_split([s.label for s in train], fraction, seed)
    return [s for s, p in zip(train, parts) if p == "train"], [s for s, p in zip(train, parts) if p == "test"]
