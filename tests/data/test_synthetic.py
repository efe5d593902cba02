import json

import numpy as np

from reminder.data.classes import VOC_CLASSES
from reminder.data.synthetic import CLASS_STYLES, GROUPS, render_sample, write_synthvoc


def test_deterministic_by_seed():
    image_a, label_a = render_sample(5, size=64, seed=1)
    image_b, label_b = render_sample(5, size=64, seed=1)
    image_c, _ = render_sample(5, size=64, seed=2)
    assert np.array_equal(image_a, image_b) and np.array_equal(label_a, label_b)
    assert not np.array_equal(image_a, image_c)


def test_files_identical_for_same_seed(tmp_path):
    first = write_synthvoc(tmp_path / "a", images=12, size=48, seed=4, workers=1)
    second = write_synthvoc(tmp_path / "b", images=12, size=48, seed=4, workers=2)
    for sub in ("JPEGImages/synth_000003.jpg", "SegmentationClass/synth_000011.png",
                "ImageSets/Segmentation/train.txt"):
        assert (first / sub).read_bytes() == (second / sub).read_bytes()
    meta = json.loads((first / "synthvoc.json").read_text())
    assert meta["images"] == 12 and meta["train"] + meta["val"] == 12


def test_every_class_several_objects_and_void_outline():
    counts = np.zeros(21, int)
    objects_per_image = []
    for index in range(200):
        _, label = render_sample(index, size=64, seed=0)
        present = set(np.unique(label).tolist()) - {0, 255}
        objects_per_image.append(len(present))
        counts[list(present)] += 1
        if present:
            assert (label == 255).any()  # VOC-style void outline around objects
    assert (counts[1:] >= 10).all(), counts
    assert np.mean(objects_per_image) > 1.5


def test_classes_look_most_like_their_own_group():
    """The nearest class by mean colour lies in the same visual group (Fig. 1's premise)."""
    sums = np.zeros((21, 3))
    pixels = np.zeros(21)
    for index in range(300):
        image, label = render_sample(index, size=64, seed=0)
        for c in range(1, 21):
            where = label == c
            sums[c] += image[where].sum(0)
            pixels[c] += where.sum()
    means = sums[1:] / pixels[1:, None]
    names = VOC_CLASSES[1:]
    for i, name in enumerate(names):
        distance = np.linalg.norm(means - means[i], axis=1)
        distance[i] = np.inf
        nearest = names[int(distance.argmin())]
        if len(GROUPS[CLASS_STYLES[name].group]) > 1:
            assert CLASS_STYLES[nearest].group == CLASS_STYLES[name].group, (name, nearest)
