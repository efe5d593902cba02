import numpy as np
import pytest
import torchvision
from PIL import Image

from conftest import HAND_TRAIN, HAND_VAL, mask_with, write_voc
from reminder.data.loading import SegmentationDataset
from reminder.data.samples import read_mask
from reminder.data.splits import load_scenario
from reminder.data.voc import voc_samples
from reminder.errors import ReminderError


@pytest.mark.parametrize("layout, mask_folder", [
    ("devkit", "SegmentationClassAug"), ("devkit", "SegmentationClass"), ("mib", "SegmentationClassAug")])
def test_layouts_read_the_same_pairs(tmp_path, layout, mask_folder):
    root = write_voc(tmp_path, HAND_TRAIN, HAND_VAL, layout=layout, mask_folder=mask_folder)
    for split, expected in (("train", HAND_TRAIN), ("val", HAND_VAL)):
        samples = voc_samples(root, split)
        assert [s.id for s in samples] == list(expected)
        for sample in samples:
            assert sample.image.is_file() and sample.mask.is_file()
            present = set(np.unique(read_mask(sample.mask)).tolist())
            assert present == {0, 255, *expected[sample.id]}


def test_root_may_be_voc2012_or_vocdevkit(hand_voc):
    for root in (hand_voc, hand_voc / "VOCdevkit", hand_voc / "VOCdevkit" / "VOC2012"):
        assert len(voc_samples(root, "train")) == len(HAND_TRAIN)


def test_missing_folders_are_named(tmp_path, hand_voc):
    with pytest.raises(ReminderError, match="folder JPEGImages is missing"):
        voc_samples(tmp_path / "voc" / "VOCdevkit" / "VOC2012" / "ImageSets", "train")
    (hand_voc / "VOCdevkit" / "VOC2012" / "SegmentationClassAug").rename(tmp_path / "moved")
    with pytest.raises(ReminderError, match="SegmentationClassAug \\(or SegmentationClass\\) is missing"):
        voc_samples(hand_voc, "train")


def test_missing_split_list_is_named(hand_voc):
    (hand_voc / "VOCdevkit" / "VOC2012" / "ImageSets" / "Segmentation" / "val.txt").unlink()
    with pytest.raises(ReminderError, match="split list val.txt is missing"):
        voc_samples(hand_voc, "val")


def test_undecodable_image_is_named(hand_voc):
    samples = voc_samples(hand_voc, "train")
    samples[0].image.write_bytes(b"not a jpeg")
    dataset = SegmentationDataset(samples, num_classes=21)
    with pytest.raises(ReminderError, match=f"cannot decode image {samples[0].image}"):
        dataset[0]


def test_mask_size_mismatch_is_named(hand_voc):
    samples = voc_samples(hand_voc, "train")
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(samples[0].mask)
    with pytest.raises(ReminderError, match=f"mask {samples[0].mask} is 8x8 but image"):
        SegmentationDataset(samples, num_classes=21)[0]


def test_step_datasets_apply_label_rules(hand_voc, cache_dir):
    data = load_scenario("voc", hand_voc, "15-1", cache_dir=cache_dir)
    # img_c holds 1 and 4: step-0 classes keep their label
    step0 = data.train_dataset(0)
    assert [s.id for s in step0.samples] == ["img_a", "img_b", "img_c", "img_d"]
    _, labels = step0[2]
    assert set(labels.unique().tolist()) == {0, 1, 4, 255}
    expected = mask_with([1, 4]).astype(np.int64)
    assert np.array_equal(labels.numpy(), expected)


def test_synthvoc_read_by_our_loader_and_torchvision(synthvoc_root):
    ours = voc_samples(synthvoc_root, "train")
    theirs = torchvision.datasets.VOCSegmentation(str(synthvoc_root), year="2012", image_set="train")
    assert len(theirs) == len(ours) == 96
    for i in (0, 7, 95):
        image, target = theirs[i]
        assert theirs.images[i].endswith(f"{ours[i].id}.jpg")
        assert image.size == (64, 64)
        assert np.array_equal(np.asarray(target), read_mask(ours[i].mask))
    val = torchvision.datasets.VOCSegmentation(str(synthvoc_root), year="2012", image_set="val")
    assert len(val) == len(voc_samples(synthvoc_root, "val")) == 24
