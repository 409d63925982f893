"""On-disk cache of calibration results, keyed by (model, data, sampling size, algorithms, options).

An entry is one JSON file ``calib-<key>.json`` under the cache folder, written atomically (temporary
file in the same folder, then ``os.replace``). A file that cannot be read is a miss (logged), never an
error: the cache only ever saves time.

The data fingerprint is the hash of the first batch's bytes plus the loader's length when it has one;
reading the first batch is cheap, and it lets a hit return without running the model over the rest.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from lpot_ir.fileio import atomic_write

__all__ = ["CACHE_VERSION", "data_fingerprint", "cache_key", "cache_path", "load_entry", "store_entry"]

logger = logging.getLogger(__name__)

CACHE_VERSION = 1
"""Bumped whenever the statistics or algorithms change meaning, so old entries are not reused."""


def _hash_value(digest: Any, value: Any) -> None:
    """Feed a (possibly nested) batch into ``digest``: arrays by dtype, shape and bytes."""
    if isinstance(value, Mapping):
        for key in sorted(value, key=str):
            digest.update(f"key:{key}".encode())
            _hash_value(digest, value[key])
    elif isinstance(value, (tuple, list)):
        digest.update(f"seq:{len(value)}".encode())
        for item in value:
            _hash_value(digest, item)
    elif value is None:
        digest.update(b"none")
    else:
        array = np.ascontiguousarray(np.asarray(value))
        digest.update(f"array:{array.dtype.str}:{array.shape}".encode())
        if array.dtype != object:
            digest.update(array.tobytes())
        else:
            digest.update(repr(array.tolist()).encode())


def data_fingerprint(first_batch: Any, length: int | None) -> str:
    """Hash of the first batch (inputs and labels) and of the loader's length (``None`` if unknown)."""
    digest = hashlib.sha256()
    _hash_value(digest, first_batch)
    digest.update(f"length:{length}".encode())
    return digest.hexdigest()


def cache_key(
    model_digest: str,
    fingerprint: str,
    sampling_size: int,
    algorithms: Iterable[str],
    tensors: Iterable[str] | None,
    options: Mapping[str, Any],
) -> str:
    """The content key of one calibration: equal inputs give equal keys."""
    parts = {
        "version": CACHE_VERSION,
        "model": model_digest,
        "data": fingerprint,
        "sampling_size": sampling_size,
        "algorithms": sorted(algorithms),
        "tensors": sorted(tensors) if tensors is not None else None,
        "options": dict(sorted(options.items())),
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:32]


def cache_path(cache_dir: str | os.PathLike[str], key: str) -> Path:
    return Path(cache_dir) / f"calib-{key}.json"


def load_entry(cache_dir: str | os.PathLike[str], key: str) -> dict[str, Any] | None:
    """The cached entry for ``key``, or None on a miss or an unreadable file."""
    path = cache_path(cache_dir, key)
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        logger.warning("Ignoring unreadable calibration cache entry %s (%s); calibrating again.", path, exc)
        return None
    if not isinstance(data, dict) or data.get("key") != key:
        logger.warning("Ignoring calibration cache entry %s: it does not hold key %s.", path, key)
        return None
    return data


def store_entry(cache_dir: str | os.PathLike[str], key: str, data: Mapping[str, Any]) -> Path:
    """Write ``data`` (plus its key) as the entry for ``key``, atomically; return the path.

    Raises:
        WriteError: the entry could not be written (an ``OSError``; callers log it and go on).
    """
    path = cache_path(cache_dir, key)
    atomic_write(path, json.dumps({**data, "key": key}, sort_keys=True))
    return path
