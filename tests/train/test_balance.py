import numpy as np
import pytest
import torch
import torch.nn.functional as F

from reminder.errors import ReminderError
from reminder.train import losses as L
from reminder.train.balance import MAX_WEIGHT, class_weights, label_pixel_counts


def test_sqrt_weights_by_hand():
    # shares 0.64, 0.32, 0.04 and one class without pixels
    weights = class_weights([640, 320, 40, 0], "sqrt")
    raw = np.array([0.64, 0.32, 0.04]) ** -0.5  # 1.25, 1.7678, 5.0
    norm = (np.array([0.64, 0.32, 0.04]) * raw).sum()
    assert weights[:3].tolist() == pytest.approx((raw / norm).tolist(), rel=1e-6)
    assert weights[3] == 1.0  # absent (an old class in an increment's labels): neutral
    # the pixel-weighted mean weight is 1: the loss keeps its scale
    assert float((torch.tensor([0.64, 0.32, 0.04]) * weights[:3]).sum()) == pytest.approx(1.0)
    assert class_weights([640, 320, 40], "none") is None


def test_inverse_weights_are_capped():
    weights = class_weights([10 ** 7, 1], "inverse")
    assert float(weights.max()) == MAX_WEIGHT


@pytest.mark.parametrize("bad", [("sqrt", [0, 0]), ("median", [1, 2])])
def test_bad_weights_are_refused(bad):
    mode, counts = bad
    with pytest.raises(ReminderError, match="class weights"):
        class_weights(counts, mode)


def test_weighted_cross_entropy_and_unce_by_hand():
    torch.manual_seed(0)
    logits, labels = torch.randn(2, 4, 3, 5), torch.randint(0, 4, (2, 3, 5))
    labels[0, 0, 0] = 255
    weights = torch.tensor([0.5, 1.0, 2.0, 4.0])
    per_pixel = F.cross_entropy(logits, labels, ignore_index=255, reduction="none")
    expected = (per_pixel * weights[labels.clamp(max=3)] * (labels != 255)).sum() / labels.numel()
    assert float(L.cross_entropy(logits, labels, class_weights=weights)) == pytest.approx(float(expected), rel=1e-6)
    # MiB's UNCE: an old class (here 1) is background, so it takes background's weight
    log_p = torch.log_softmax(logits, 1)
    background = torch.logsumexp(log_p[:, :2], 1)
    target = torch.where(labels < 2, 0, labels)
    per_pixel = torch.where(target == 0, -background, -log_p.gather(1, target.clamp(max=3)[:, None])[:, 0])
    expected = (per_pixel * weights[target.clamp(max=3)] * (labels != 255)).sum() / labels.numel()
    got = L.unbiased_cross_entropy(logits, labels, num_old=2, class_weights=weights)
    assert float(got) == pytest.approx(float(expected), rel=1e-5)


def test_pixel_counts_read_masks_with_the_step_labels(tmp_path):
    from PIL import Image

    from reminder.data.loading import SegmentationDataset
    from reminder.data.samples import Sample

    mask = np.zeros((4, 5), np.uint8)
    mask[0, :2], mask[1, 0], mask[3, 4] = 2, 1, 255
    Image.fromarray(mask).save(tmp_path / "m.png")
    Image.fromarray(np.zeros((4, 5, 3), np.uint8)).save(tmp_path / "i.png")
    lut = np.arange(256, dtype=np.uint8)
    lut[1] = 0  # class 1 is not learnt in this step: background
    dataset = SegmentationDataset([Sample("a", str(tmp_path / "i.png"), str(tmp_path / "m.png"))] * 2,
                                  num_classes=3, label_lut=lut)
    assert label_pixel_counts(dataset, 3).tolist() == [2 * 17, 0, 2 * 2]
