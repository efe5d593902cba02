"""Each loss against values worked out by hand on tiny tensors."""

import math

import pytest
import torch
import torch.nn.functional as F

from reminder.train import losses as L


def logits_1px(*values):
    """(1, K, 1, 1) logits of one pixel."""
    return torch.tensor(values, dtype=torch.float32).view(1, -1, 1, 1)


def test_cross_entropy_by_hand_with_ignore_and_image_weights():
    logits = torch.tensor([[[[0.0, 1.0]], [[1.0, 1.0]]]])  # (1, 2, 1, 2)
    labels = torch.tensor([[[1, 255]]])
    expected = -math.log(math.e / (1 + math.e)) / 2  # the ignored pixel counts as 0 in the mean
    assert L.cross_entropy(logits, labels).item() == pytest.approx(expected, rel=1e-6)
    weighted = L.cross_entropy(logits, labels, image_weights=torch.tensor([0.5]))
    assert weighted.item() == pytest.approx(expected / 2, rel=1e-6)


def test_normalized_entropy_bounds():
    uniform = torch.full((1, 4, 1, 1), 0.25)
    certain = torch.tensor([1.0, 0, 0, 0]).view(1, 4, 1, 1)
    assert L.normalized_entropy(uniform).item() == pytest.approx(1.0)
    assert L.normalized_entropy(certain).item() == pytest.approx(0.0, abs=1e-9)


def test_median_thresholds_from_histogram():
    histogram = torch.tensor([[2, 2, 0, 0], [0, 0, 4, 0], [0, 0, 0, 0], [4, 0, 0, 0], [1, 1, 1, 1]])
    thresholds = L.thresholds_from_histogram(histogram, floor=0.001)
    # class 1: all 4 values in bin 2 -> half-way through it; class 2: never predicted -> floor
    assert thresholds.tolist() == pytest.approx([0.25, 0.625, 0.001, 0.125, 0.5])
    assert L.thresholds_from_histogram(torch.tensor([[1000, 0, 0]]), floor=0.2).item() == pytest.approx(0.2)


# Expected values below come from running the reference code's own `entropy` function and
# the median loop of its `find_median` (REMINDER's train.py) on the same inputs.

def test_reference_entropy_is_the_reference_codes_quantity():
    peaked = torch.tensor([5.0, 0.0, 0.0, 0.0]).softmax(0).view(1, 4, 1, 1)
    assert L.reference_entropy(peaked, num_all=5).item() == 0.013342746533453465
    uniform = torch.full((1, 16, 1, 1), 1 / 16)  # its maximum on VOC 15-1: 1 / (K_old ln K_all)
    assert L.reference_entropy(uniform, num_all=17).item() == pytest.approx(0.02205975539982319, abs=1e-9)
    assert L.reference_entropy(uniform, num_all=17).item() == pytest.approx(1 / (16 * math.log(17)), rel=1e-6)


def test_reference_thresholds_are_the_reference_loops_bit_for_bit():
    cases = torch.zeros(6, 100, dtype=torch.long)
    cases[0, 0] = 1000                                  # more than half in bin 0
    cases[1, :3] = torch.tensor([10, 30, 20])           # stops on an empty bin
    cases[2, :3] = torch.tensor([4000, 6000, 3000])     # runs past the last bin: +inf, all kept
    cases[3, 1:3] = torch.tensor([2, 2])
    cases[5, 0:2] = torch.tensor([3, 9000])             # class 4 is never predicted: the floor
    expected = [0.004999999888241291, 0.019999999552965164, math.inf, 0.019999999552965164,
                0.0010000000474974513, 0.01500166580080986]
    assert L.reference_thresholds(cases, floor=0.001).tolist() == expected
    # the true median of the same histograms, for comparison (pseudo_thresholds="median")
    median = L.thresholds_from_histogram(cases, floor=0.001).tolist()
    assert median[2] == pytest.approx((1 + 2500 / 6000) / 100) and median[0] == pytest.approx(0.005)


def test_reference_thresholds_on_a_confident_teacher_match_the_reference_end_to_end():
    """Three batches of a 16-class teacher (VOC 15-1's step 1: K_all = 17), through the
    histogram and the loop; the reference gave 0.0052-0.0057 for every class."""
    torch.manual_seed(0)
    logits = [torch.randn(2, 16, 20, 20) * 6 for _ in range(3)]
    labels = [torch.zeros(2, 20, 20, dtype=torch.long) for _ in range(3)]
    labels[0][0, :5] = 16
    histogram = sum(L.entropy_histogram(lo, la, bins=100, num_all=17) for lo, la in zip(logits, labels))
    thresholds = L.reference_thresholds(histogram, floor=0.001)
    assert thresholds[:3].tolist() == [0.005588235333561897, 0.005629370454698801, 0.005443548317998648]
    assert thresholds[6].item() == 0.005171232856810093 and thresholds[15].item() == 0.00554621871560812


def test_entropy_histogram_counts_background_pixels_only():
    teacher = torch.tensor([[[[5.0, 0.0, 0.0]], [[0.0, 5.0, 0.0]]]])  # (1, 2, 1, 3)
    labels = torch.tensor([[[0, 0, 3]]])
    histogram = L.entropy_histogram(teacher, labels, bins=10, num_all=2, mode="median")
    assert histogram.sum().item() == 2
    entropy = L.normalized_entropy(torch.tensor([5.0, 0.0]).softmax(0).view(1, 2, 1, 1)).item()
    assert histogram[0, int(entropy * 10)].item() == 1 and histogram[1, int(entropy * 10)].item() == 1


def test_pseudo_labels_and_lambda():
    # pixel 0: confident old class 1; pixel 1: uncertain; pixel 2: a new class (label 3)
    teacher = torch.tensor([[[[0.0, 0.0, 0.0]], [[8.0, 0.1, 0.0]], [[0.0, 0.0, 9.0]]]])  # (1, 3, 1, 3)
    labels = torch.tensor([[[0, 0, 3]]])
    thresholds = torch.tensor([0.5, 0.5, 0.5])
    new_labels, weight = L.entropy_pseudo_labels(labels, teacher, thresholds, mode="median")
    assert new_labels.tolist() == [[[1, 255, 3]]]
    assert weight.tolist() == [0.5]
    # an image with no background pixel: lambda 1, never NaN
    _, weight = L.entropy_pseudo_labels(torch.tensor([[[3, 3, 255]]]), teacher, thresholds, mode="median")
    assert weight.tolist() == [1.0]


def test_unbiased_cross_entropy_by_hand():
    logits = logits_1px(1.0, 2.0, 0.5)  # background, old class 1, new class 2
    lse_all = math.log(math.e + math.e ** 2 + math.e ** 0.5)
    background = L.unbiased_cross_entropy(logits, torch.tensor([[[0]]]), num_old=2)
    assert background.item() == pytest.approx(-(math.log(math.e + math.e ** 2) - lse_all), rel=1e-6)
    old_label = L.unbiased_cross_entropy(logits, torch.tensor([[[1]]]), num_old=2)
    assert old_label.item() == pytest.approx(background.item(), rel=1e-6)  # old labels are background
    new = L.unbiased_cross_entropy(logits, torch.tensor([[[2]]]), num_old=2)
    assert new.item() == pytest.approx(-(0.5 - lse_all), rel=1e-6)
    assert L.unbiased_cross_entropy(logits, torch.tensor([[[255]]]), num_old=2).item() == 0.0


def test_knowledge_distillation_by_hand():
    student = logits_1px(0.0, 1.0, 3.0)  # the new class (3.0) is dropped, old re-normalised
    teacher = logits_1px(1.0, 0.0)
    p_teacher = torch.tensor([1.0, 0.0]).softmax(0)
    log_student = torch.tensor([0.0, 1.0]).log_softmax(0)
    expected = -(p_teacher * log_student).sum().item()
    assert L.knowledge_distillation(student, teacher).item() == pytest.approx(expected, rel=1e-6)
    mean = L.knowledge_distillation(student, teacher, class_reduction="mean")
    assert mean.item() == pytest.approx(expected / 2, rel=1e-6)


def test_unbiased_kd_by_hand():
    student = logits_1px(0.5, 1.0, 2.0, -1.0)  # bg, old 1, old 2, new 3
    teacher = logits_1px(0.2, 0.3, 0.1)
    lse_all = torch.logsumexp(torch.tensor([0.5, 1.0, 2.0, -1.0]), 0)
    log_bg = torch.logsumexp(torch.tensor([0.5, -1.0]), 0) - lse_all
    q = torch.tensor([0.2, 0.3, 0.1]).softmax(0)
    expected = -(q[0] * log_bg + q[1] * (1.0 - lse_all) + q[2] * (2.0 - lse_all)) / 3
    assert L.unbiased_kd(student, teacher, num_old=3).item() == pytest.approx(expected.item(), rel=1e-6)


def test_lwf_mc_by_hand():
    student = logits_1px(0.0, 2.0, 5.0)
    teacher = logits_1px(1.0, -1.0)
    target = torch.sigmoid(torch.tensor([1.0, -1.0]))
    s = torch.sigmoid(torch.tensor([0.0, 2.0]))
    bce = -(target * s.log() + (1 - target) * (1 - s).log())
    assert L.lwf_mc_distillation(student, teacher).item() == pytest.approx(bce.sum().item(), rel=1e-5)


def test_local_pod_by_hand():
    old = [torch.zeros(1, 1, 2, 2)]
    new = [torch.full((1, 1, 2, 2), 2.0)]
    # scale 1: squared values are 4; 2 row means + 2 column means = 4 entries of 4 -> norm 8
    assert L.local_pod(old, new, scales=(1,)).item() == pytest.approx(8.0)
    # scale 2 adds 4 regions of 1 pixel, each one row mean + one column mean of 4 -> 8 more entries
    assert L.local_pod(old, new, scales=(1, 2)).item() == pytest.approx(math.sqrt(12 * 16))
    # two layers: mean of weighted layer losses
    two = L.local_pod(old * 2, new + [torch.zeros(1, 1, 2, 2)], scales=(1,), layer_weights=[0.5, 3.0])
    assert two.item() == pytest.approx((0.5 * 8.0 + 0.0) / 2)
    same = torch.randn(2, 3, 4, 6)
    assert L.local_pod([same], [same.clone()]).item() == 0.0


def test_pod_embedding_regions_on_non_square_maps():
    features = torch.arange(24, dtype=torch.float32).view(1, 1, 4, 6)
    embedding = L.pod_embedding(features, scales=(2,))
    top_left = features[..., :2, :3].pow(2)
    assert torch.allclose(embedding[0, :2], top_left.mean(dim=3).flatten())
    assert torch.allclose(embedding[0, 2:5], top_left.mean(dim=2).flatten())


def test_fold_new_logits():
    student = logits_1px(1.0, 2.0, 3.0, 4.0)
    assert L.fold_new_logits(student, 2).flatten().tolist() == [8.0, 2.0]


def test_class_feature_sums_equal_upsample_then_mean():
    torch.manual_seed(0)
    features = torch.randn(2, 5, 4, 6)
    labels = torch.randint(0, 4, (2, 15, 23))
    labels[0, :3] = 255
    sums, counts = L.class_feature_sums(features, labels, [1, 3, 7])
    upsampled = F.interpolate(features, size=(15, 23), mode="bilinear", align_corners=True)
    for row, class_id in enumerate([1, 3, 7]):
        mask = labels == class_id
        assert counts[row].item() == mask.sum().item()
        expected = upsampled.permute(0, 2, 3, 1)[mask].sum(0)
        torch.testing.assert_close(sums[row], expected, rtol=1e-4, atol=1e-4)


def _csw_inputs(num_old=3, seed=0):
    torch.manual_seed(seed)
    student = torch.randn(2, num_old + 2, 4, 4, requires_grad=True)
    teacher = torch.randn(2, num_old, 4, 4)
    labels = torch.zeros(2, 4, 4, dtype=torch.long)
    labels[0, :2] = num_old        # new class u = num_old
    labels[1, 1:3, 1:3] = num_old + 1
    labels[1, 0, 0] = 255
    features = torch.rand(2, 6, 2, 2)
    return student, teacher, labels, features


def test_csw_kd_with_uniform_similarity_is_kd_scaled():
    student, teacher, labels, features = _csw_inputs()
    identical = torch.ones(3, 6)  # every old prototype the same -> uniform similarity 1/3
    loss = L.csw_kd(student, teacher, labels, features, identical, temperature=3.0)
    new = (labels >= 3) & (labels != 255)
    s = student.permute(0, 2, 3, 1)[new][:, :3]
    t = teacher.permute(0, 2, 3, 1)[new]
    kd = -(F.softmax(t / 3, 1) * F.log_softmax(s / 3, 1)).sum(1).mean()
    torch.testing.assert_close(loss, 9 * kd / 3)


def test_csw_kd_weights_by_class_similarity_by_hand():
    # one new pixel of class 2; two old classes; prototype identical to old class 1's
    student = logits_1px(0.3, -0.2, 1.0)
    teacher = logits_1px(0.5, 1.5)
    labels = torch.tensor([[[2]]])
    features = torch.tensor([1.0, 0.0]).view(1, 2, 1, 1)
    old_prototypes = torch.tensor([[0.0, 1.0], [1.0, 0.0]])  # cos = 0 and 1
    s = torch.tensor([0.0, 1.0]).softmax(0)
    target = (torch.tensor([0.5, 1.5]) / 2).softmax(0) * s
    log_p = (torch.tensor([0.3, -0.2]) / 2).log_softmax(0)
    expected = 4 * -(target * log_p).sum()
    loss = L.csw_kd(student, teacher, labels, features, old_prototypes, temperature=2.0)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    # delta: weights below delta / K_old are dropped; s = (0.269, 0.731) and delta/2 = 0.5
    filtered = L.csw_kd(student, teacher, labels, features, old_prototypes, temperature=2.0, delta=1.0)
    target = (torch.tensor([0.5, 1.5]) / 2).softmax(0) * torch.tensor([0.0, s[1]])
    assert filtered.item() == pytest.approx(4 * -(target * log_p).sum().item(), rel=1e-6)


def test_csw_kd_no_new_pixels_is_zero_with_gradient():
    student, teacher, labels, features = _csw_inputs()
    labels[labels >= 3] = 0
    loss = L.csw_kd(student, teacher, labels, features, torch.randn(3, 6))
    assert loss.item() == 0.0 and not torch.isnan(loss)
    loss.backward()
    assert torch.equal(student.grad, torch.zeros_like(student))


def test_csw_kd_gradient_flows_to_student_only():
    student, teacher, labels, features = _csw_inputs()
    features.requires_grad_(True)
    loss = L.csw_kd(student, teacher, labels, features, torch.randn(3, 6))
    loss.backward()
    assert student.grad.abs().sum() > 0
    assert features.grad is None  # prototypes take no gradient
    assert student.grad[:, 3:].abs().sum() == 0  # only the old-class logits are distilled


def test_ewc_penalty_by_hand():
    parameters = {"w": torch.tensor([1.0, 2.0]), "new": torch.tensor([5.0])}
    anchors = {"w": torch.tensor([0.0, 1.0])}
    fisher = {"w": torch.tensor([2.0, 3.0])}
    assert L.ewc_penalty(parameters, anchors, fisher).item() == pytest.approx(2 * 1 + 3 * 1)
