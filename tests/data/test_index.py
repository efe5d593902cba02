import os

import numpy as np
import pytest

from conftest import HAND_TRAIN, mask_with, save_mask
from reminder.data.index import build_class_index
from reminder.data.voc import voc_samples
from reminder.errors import ReminderError


def test_index_lists_classes(hand_voc, cache_dir):
    index = build_class_index(voc_samples(hand_voc, "train"), num_classes=21, cache_dir=cache_dir, workers=1)
    assert index.classes == {k: tuple([0] + v) for k, v in HAND_TRAIN.items()}
    assert not index.from_cache


def test_index_cache_reused_then_rebuilt_when_files_change(hand_voc, cache_dir):
    samples = voc_samples(hand_voc, "train")
    first = build_class_index(samples, num_classes=21, cache_dir=cache_dir, workers=1)
    second = build_class_index(samples, num_classes=21, cache_dir=cache_dir, workers=1)
    assert second.from_cache and second.path == first.path
    assert second.classes == first.classes
    mask_path = samples[0].mask
    save_mask(mask_path, mask_with([7]), palette=False)
    stat = mask_path.stat()
    os.utime(mask_path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    third = build_class_index(samples, num_classes=21, cache_dir=cache_dir, workers=1)
    assert not third.from_cache and third.path != first.path
    assert third[samples[0].id] == (0, 7)


def test_parallel_index_matches_serial(synthvoc_root, cache_dir):
    samples = voc_samples(synthvoc_root, "train")
    serial = build_class_index(samples, num_classes=21, cache_dir=cache_dir / "a", workers=1)
    parallel = build_class_index(samples, num_classes=21, cache_dir=cache_dir / "b", workers=2)
    assert serial.classes == parallel.classes


def test_bad_mask_value_names_file_and_value(hand_voc, cache_dir):
    samples = voc_samples(hand_voc, "train")
    bad = np.zeros((16, 16), np.uint8)
    bad[3, 3] = 42
    save_mask(samples[1].mask, bad, palette=False)
    with pytest.raises(ReminderError, match=rf"mask {samples[1].mask} has value 42, outside classes 0..20"):
        build_class_index(samples, num_classes=21, cache_dir=cache_dir, workers=1)
