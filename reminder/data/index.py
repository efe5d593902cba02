"""Which classes each image contains, built once in parallel and cached on disk.

The cache key is a hash of every mask's path, size and modification time (and the
class count), so a second call on the same files reads one JSON file, and any change to
the files (added, removed, rewritten) rebuilds the index.
"""

from __future__ import annotations

import hashlib
import json
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from reminder.data.samples import Sample, check_mask_values, name_bytes, read_mask
from reminder.io import atomic_write_text
from reminder.progress import progress as progress_bar

INDEX_VERSION = 1


def default_cache_dir() -> Path:
    return Path(os.environ.get("REMINDER_CACHE", Path.home() / ".cache" / "reminder"))


@dataclass
class ClassIndex:
    """``classes[image_id]``: the sorted label values present, 255 excluded."""

    classes: dict[str, tuple[int, ...]]
    path: Path | None = None
    from_cache: bool = False

    def __getitem__(self, image_id: str) -> tuple[int, ...]:
        return self.classes[image_id]


def _cache_key(samples: list[Sample], num_classes: int, mask_reader=None) -> str:
    digest = hashlib.sha256(f"v{INDEX_VERSION}:{num_classes}:{mask_reader!r}".encode())
    for sample in samples:
        stat = sample.mask.stat()
        digest.update(name_bytes(f"\n{sample.id}\t{sample.mask}\t{stat.st_size}\t{stat.st_mtime_ns}"))
    return digest.hexdigest()


def _scan(args: tuple[list[tuple[str, str]], int, object]) -> list[tuple[str, list[int]]]:
    chunk, num_classes, mask_reader = args
    out = []
    for image_id, mask_path in chunk:
        mask = read_mask(Path(mask_path)) if mask_reader is None else mask_reader(Path(mask_path))
        present = check_mask_values(mask, num_classes, Path(mask_path))
        out.append((image_id, [int(v) for v in present if v != 255]))
    return out


def build_class_index(samples: list[Sample], *, num_classes: int, cache_dir: str | Path | None = None,
                      workers: int | None = None, progress: bool = False, mask_reader=None) -> ClassIndex:
    """Index the classes in every sample's mask (values are checked against ``num_classes``).

    Reads ``cache_dir/index-<key>.json`` when the files are unchanged; otherwise scans
    the masks with ``workers`` processes and writes that file atomically. ``mask_reader``
    (picklable) decodes masks in place of reading their values (colour masks).
    """
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    key = _cache_key(samples, num_classes, mask_reader)
    path = cache_dir / f"index-{key[:24]}.json"
    if path.is_file():
        try:
            stored = json.loads(path.read_text())
            if stored.get("key") == key:
                classes = {k: tuple(v) for k, v in stored["classes"].items()}
                return ClassIndex(classes, path, from_cache=True)
        except (json.JSONDecodeError, KeyError):
            pass  # a damaged cache file is rebuilt below
    pairs = [(s.id, str(s.mask)) for s in samples]
    chunk_size = 64
    jobs = [(pairs[i:i + chunk_size], num_classes, mask_reader) for i in range(0, len(pairs), chunk_size)]
    workers = workers or min(os.cpu_count() or 1, 8)
    if workers > 1 and len(jobs) > 1:
        pool = ProcessPoolExecutor(workers)
        results = pool.map(_scan, jobs)
    else:
        pool, results = None, map(_scan, jobs)
    results = progress_bar(results, progress, total=len(jobs), desc="class index", unit="chunk")
    try:
        classes = {image_id: tuple(found) for chunk in results for image_id, found in chunk}
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
    cache_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps({"key": key, "version": INDEX_VERSION,
                                        "classes": {k: list(v) for k, v in classes.items()}}))
    return ClassIndex(classes, path, from_cache=False)
