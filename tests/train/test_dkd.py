"""DKD's terms against values worked out by hand from the paper's equations, and the
sigmoid outputs' decision rule, conversion and initialisation."""

import math

import pytest
import torch

from reminder.models import build_segmenter
from reminder.train import dkd as D
from reminder.train.config import resolve_config
from reminder.train.methods import build_method, step0_method


def sig(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def bce(z: float, t: float, pos_weight: float = 1.0) -> float:
    """-(w t log s(z) + (1 - t) log(1 - s(z))), by hand."""
    return -(pos_weight * t * math.log(sig(z)) + (1 - t) * math.log(1 - sig(z)))


def test_multilabel_bce_scores_the_step_classes_on_their_pixels_only():
    # channels: aux, old class 1, new classes 2 and 3; pixels labelled 2, 0 (background), 255
    logits = torch.tensor([[0.5, -1.0, 2.0], [0.3, 0.1, -0.2], [1.5, -0.5, 0.7], [-1.0, 0.4, 9.0]]).view(1, 4, 1, 3)
    labels = torch.tensor([[[2, 0, 255]]])
    got = D.multilabel_bce(logits, labels, first=2, pos_weight=2.0)
    class2 = (bce(1.5, 1, 2.0) + bce(-0.5, 0)) / 2  # the ignored pixel counts for no class
    class3 = (bce(-1.0, 0) + bce(0.4, 0)) / 2
    assert got.item() == pytest.approx(class2 + class3, rel=1e-6)
    # step 0: every foreground class is the step's
    step0 = D.multilabel_bce(logits, labels, first=1)
    assert step0.item() == pytest.approx((bce(0.3, 0) + bce(0.1, 0)) / 2 + class2 - (bce(1.5, 1, 2.0) - bce(1.5, 1)) / 2
                                         + class3, rel=1e-6)


def test_sigmoid_kd_distils_the_old_classes_probabilities():
    student = torch.tensor([[9.0, 9.0], [0.2, -1.0], [3.0, 3.0]]).view(1, 3, 1, 2)  # aux, old 1, new 2
    teacher = torch.tensor([[-5.0, -5.0], [1.0, -2.0]]).view(1, 2, 1, 2)  # aux, old 1
    got = D.sigmoid_kd(student, teacher, num_old=2)
    assert got.item() == pytest.approx((bce(0.2, sig(1.0)) + bce(-1.0, sig(-2.0))) / 2, rel=1e-6)


def test_decomposed_kd_splits_each_old_logit_by_the_sign_of_its_weights():
    features = torch.tensor([1.0, 2.0, 3.0]).view(1, 3, 1, 1)
    weight = torch.tensor([[5.0, 5.0, 5.0], [0.5, -1.0, 2.0], [1.0, 1.0, 1.0]])  # aux, old 1, new 2
    positive, negative = D.regulators(features, weight, num_old=2)
    assert positive.item() == pytest.approx(0.5 * 1 + 2.0 * 3)  # evidence for the class
    assert negative.item() == pytest.approx(-1.0 * 2)  # evidence against it
    teacher_weight = torch.tensor([[0.0, 0.0, 0.0], [0.2, -0.5, 1.0]])
    teacher_features = torch.tensor([2.0, 1.0, 1.0]).view(1, 3, 1, 1)
    pos, neg = D.decomposed_kd(features, weight, teacher_features, teacher_weight, num_old=2)
    assert pos.item() == pytest.approx(bce(6.5, sig(0.2 * 2 + 1.0 * 1)), rel=1e-6)
    assert neg.item() == pytest.approx(bce(-2.0, sig(-0.5 * 1)), rel=1e-6)


def test_auxiliary_classifier_is_pushed_to_no_everywhere():
    aux = torch.tensor([0.0, 2.0]).view(1, 1, 1, 2)
    assert D.auxiliary_negative(aux).item() == pytest.approx((bce(0.0, 0) + bce(2.0, 0)) / 2, rel=1e-6)


def test_csw_sigmoid_kd_weighs_each_old_class_by_its_similarity_to_the_new_one():
    # old classes: background 0, 1 (prototype along x), 2 (along y); new class 3 with features along x
    prototypes = torch.tensor([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    features = torch.tensor([[2.0, 0.0], [0.0, 0.0], [0.0, 0.0]]).view(1, 3, 1, 2)
    labels = torch.tensor([[[3, 0]]])
    student = torch.tensor([[0.0, 0.0], [1.0, 0.0], [-1.0, 0.0], [0.5, 0.0]]).view(1, 4, 1, 2)
    teacher = torch.tensor([[0.0, 0.0], [2.0, 0.0], [-3.0, 0.0]]).view(1, 3, 1, 2)
    T = 3.0
    got = D.csw_sigmoid_kd(student, teacher, labels, features, prototypes, temperature=T)
    # new prototype (1, 0, 0): cosine 1 with class 1, 0 with class 2; softmax over classes 1 and 2
    s1, s2 = math.e / (math.e + 1), 1 / (math.e + 1)
    expected = T ** 2 * (s1 * bce(1.0 / T, sig(2.0 / T)) + s2 * bce(-1.0 / T, sig(-3.0 / T)))
    assert got.item() == pytest.approx(expected, rel=1e-5)
    assert D.csw_sigmoid_kd(student, teacher, torch.zeros_like(labels), features, prototypes).item() == 0.0


def test_sigmoid_outputs_decide_background_where_no_class_passes_one_half():
    model = build_segmenter("tiny", num_classes=3, outputs="sigmoid").eval()
    with torch.no_grad():
        head = model.classifier.heads[0]
        head.weight.zero_()
        head.bias.copy_(torch.tensor([7.0, -0.1, -2.0]))  # the auxiliary channel is never a class
        labels = model(torch.rand(1, 3, 32, 32)).argmax(1)
        assert labels.unique().tolist() == [0]
        head.bias.copy_(torch.tensor([7.0, 0.3, 0.2]))
        logits = model(torch.rand(1, 3, 32, 32))
        assert logits.argmax(1).unique().tolist() == [1]
        assert model.top_confidence(logits).flatten()[0].item() == pytest.approx(sig(0.3))
        head.bias.copy_(torch.tensor([7.0, -0.3, -1.0]))
        logits = model(torch.rand(1, 3, 32, 32))
        assert model.top_confidence(logits).flatten()[0].item() == pytest.approx(1 - sig(-0.3))


def test_converting_outputs_keeps_every_prediction_and_new_classes_start_from_the_auxiliary():
    torch.manual_seed(0)
    model = build_segmenter("tiny", num_classes=[6, 2]).eval()
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        before = model(images).argmax(1)
        assert torch.equal(model.convert_outputs("sigmoid")(images).argmax(1), before)
        assert model.config()["outputs"] == "sigmoid"
        old = model(images)[:, 1:]
        ids = model.add_classes(2, init="aux")
        after = model(images)
        assert torch.equal(after[:, 1:8], old)  # old logits bit-identical
        aux = model.classifier.heads[0]
        assert torch.equal(model.classifier.heads[-1].weight[1], aux.weight[0])
        assert model.classifier.heads[-1].bias[0].item() == aux.bias[0].item() == pytest.approx(-math.log(7))
        assert list(ids) == [8, 9]
        back = model.convert_outputs("softmax")(images).argmax(1)
        sigmoid_rule = after.argmax(1)
        assert torch.equal(back, sigmoid_rule)


def test_dkd_methods_and_presets():
    voc = resolve_config(dataset="voc", root=".", setting="15-1", method="dkd", out=".")
    assert (voc.lr, voc.lr_next, voc.head_lr_factor, voc.epochs, voc.batch_size) == (0.001, 0.0001, 10.0, 60, 32)
    assert (voc.bce_pos_weight_step0, voc.bce_pos_weight) == (2.0, 1.0)
    ade = resolve_config(dataset="ade", root=".", setting="100-10", method="dkd", out=".")
    assert (ade.bce_pos_weight_step0, ade.bce_pos_weight, ade.lr) == (35.0, 35.0, 0.0025)
    synth = resolve_config(dataset="synthvoc", root=".", setting="15-1", method="dkd", out=".")
    plop = resolve_config(dataset="synthvoc", root=".", setting="15-1", method="plop", out=".")
    assert (synth.lr, synth.lr_next, synth.head_lr_factor) == (plop.lr / 10, plop.lr_next / 10, 10.0)
    method = build_method("dkd", voc)
    assert [(t.name, t.weight) for t in method.terms] == [("mbce", 1.0), ("kd", 5.0), ("dkd_pos", 5.0),
                                                         ("dkd_neg", 5.0), ("ac", 1.0)]
    assert (method.outputs, method.head_init, method.freeze_bn) == ("sigmoid", "aux", True)
    assert [t.name for t in step0_method(method).terms] == ["mbce", "ac"]
    both = build_method("dkd+csw", voc)
    assert both.terms[-1].name == "csw_kd" and both.prototypes
    assert step0_method(build_method("reminder", voc)).terms[0].name == "ce"
