"""The feature cache: a frozen encoder's annotations of every image, computed once.

With a frozen encoder, the CNN gives the same annotations for an image in every epoch, so
`captioner train` runs it once over the training images, stores the (L, D) annotations in
float16 on disk, and trains the decoder from them. A cache entry is a folder named after a
fingerprint of everything the features depend on: the encoder's architecture and weights,
the input size, and every image file's path, size and
modification time. Any change to one of them gives a new fingerprint, so a stale cache is
never used; an unchanged setup finds its entry and skips the extraction.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from captioner.data.dataset import ImageRecord
from captioner.data.image_pipeline import image_dataset

CACHE_VERSION = 2
FEATURES_FILE = "features.npy"
MANIFEST_FILE = "manifest.json"


def _encoder_fingerprint(model) -> hashlib._Hash:
    digest = hashlib.sha256()
    description = {
        "version": CACHE_VERSION,
        "encoder": keras.saving.serialize_keras_object(model.encoder)["config"],
        "class": type(model.encoder).__name__,
        "image_size": model.image_size,
    }
    description["encoder"].pop("name", None)
    digest.update(json.dumps(description, sort_keys=True, default=str).encode())
    for weight in model.encoder.weights:
        digest.update(weight.path.encode())
        digest.update(np.ascontiguousarray(keras.ops.convert_to_numpy(weight)).tobytes())
    return digest


def cache_key(model, records: Sequence[ImageRecord]) -> str:
    """The fingerprint of the features `model.grid_features` gives for these records' images."""
    digest = _encoder_fingerprint(model)
    for record in records:
        stat = os.stat(record.path)
        digest.update(f"{Path(record.path).resolve()}|{stat.st_size}|{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def extract_features(
    model, records: Sequence[ImageRecord], path: Path, batch_size: int = 64, verbose: int = 1
) -> np.ndarray:
    """Writes `model.grid_features` of every record's image to `path`, (N, L, D) float16.

    Returns the indices of the records whose image could not be read (their rows are 0;
    the loader has reported them).
    """
    encode = tf.function(model.grid_features)
    gh, gw = model.grid_size
    depth = encode.get_concrete_function(
        tf.TensorSpec((None, model.image_size, model.image_size, 3), tf.uint8)
    ).output_shapes[-1]
    out = np.lib.format.open_memmap(
        path, mode="w+", dtype=np.float16, shape=(len(records), gh * gw, depth)
    )
    progress = keras.utils.Progbar(len(records), unit_name="image", verbose=verbose)
    read = np.zeros(len(records), bool)
    for indices, images in image_dataset(records, model.image_size).batch(batch_size).prefetch(2):
        indices = indices.numpy()
        out[indices] = encode(images).numpy()
        read[indices] = True
        progress.add(len(indices))
    out.flush()
    del out
    return np.flatnonzero(~read)


def cached_features(
    model,
    records: Sequence[ImageRecord],
    cache_dir: str | Path,
    *,
    label: str = "features",
    batch_size: int = 64,
    log: Callable[[str], None] = print,
    verbose: int = 1,
) -> tuple[np.ndarray, np.ndarray]:
    """The grid features (N, L, D) float16 of every record, from the cache or extracted now,
    and the indices of the records whose image could not be read (their rows are unusable).

    `label` (e.g. the encoder's name) starts the entry's folder name. Returns a read-only
    memory-mapped array, so datasets larger than memory work too. A new
    entry is written to a temporary folder and renamed into place when complete: an
    interrupted extraction never leaves a cache entry behind.
    """
    key = cache_key(model, records)
    entry = Path(cache_dir) / f"{label}-{model.image_size}px-{key[:20]}"
    manifest_path = entry / MANIFEST_FILE
    if manifest_path.is_file():
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        if manifest.get("key") == key:
            features = np.load(entry / FEATURES_FILE, mmap_mode="r")
            log(f"feature cache: reusing {entry} ({features.shape[0]} images)")
            return features, np.array(manifest.get("unreadable", []), np.int64)
    log(f"feature cache: extracting {len(records)} images into {entry} ...")
    started = time.perf_counter()
    entry.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".partial-", dir=entry.parent))
    try:
        unreadable = extract_features(model, records, staging / FEATURES_FILE, batch_size, verbose)
        features = np.load(staging / FEATURES_FILE, mmap_mode="r")
        manifest = {
            "key": key,
            "version": CACHE_VERSION,
            "label": label,
            "image_size": model.image_size,
            "shape": list(features.shape),
            "dtype": "float16",
            "unreadable": unreadable.tolist(),
            "seconds": round(time.perf_counter() - started, 2),
        }
        del features
        (staging / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2) + "\n")
        if entry.exists():  # an entry without a valid manifest: the remains of a crash
            shutil.rmtree(entry)
        os.replace(staging, entry)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    seconds = time.perf_counter() - started
    log(f"  done in {seconds:.1f}s ({len(records) / max(seconds, 1e-9):.0f} images/s)")
    return np.load(entry / FEATURES_FILE, mmap_mode="r"), unreadable
