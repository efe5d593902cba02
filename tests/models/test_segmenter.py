import math

import pytest
import torch

from reminder.errors import ReminderError
from reminder.models import IncrementalClassifier, build_segmenter
from reminder.models.backbones import BACKBONES

STAGES = {"tiny": 4, "mobilenet_v3_large": 5, "resnet50": 4, "resnet101": 4}


@pytest.fixture(params=list(BACKBONES))
def model(request):
    torch.manual_seed(0)
    return build_segmenter(request.param, num_classes=16).eval()


def test_shapes_and_output_stride(model):
    images = torch.randn(2, 3, 64, 96)
    out = model.forward_features(images)
    assert out.logits.shape == (2, 16, 64, 96)
    assert out.lowres_logits.shape == (2, 16, 4, 6)  # output stride 16
    assert out.features.shape == (2, 256, 4, 6)
    assert len(out.stages) == STAGES[model.backbone_name]
    assert torch.equal(model(images), out.logits)


def test_add_classes_mib_keeps_old_foreground_logits_and_shares_background(model):
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        before = model(images)
        new_ids = model.add_classes(3)
        after = model(images)
    assert new_ids == range(16, 19)
    assert model.classes_per_step == [16, 3]
    assert torch.equal(after[:, 1:16], before[:, 1:16])  # bit-identical
    torch.testing.assert_close(after[:, 0], before[:, 0] - math.log(4), rtol=1e-5, atol=1e-4)
    p_before, p_after = before.softmax(1), after.softmax(1)
    torch.testing.assert_close(p_after[:, 1:16], p_before[:, 1:16])
    torch.testing.assert_close(p_after[:, [0, 16, 17, 18]].sum(1), p_before[:, 0])


def test_mib_initial_values():
    torch.manual_seed(0)
    head = IncrementalClassifier(8, [5])
    bg_weight = head.heads[0].weight[0].clone()
    bg_bias = head.heads[0].bias[0].item()
    head.add_classes(2)
    new = head.heads[1]
    for k in range(2):
        assert torch.equal(new.weight[k], bg_weight)
    expected = bg_bias - math.log(3)
    assert new.bias.tolist() == pytest.approx([expected, expected], abs=1e-6)
    assert head.heads[0].bias[0].item() == pytest.approx(expected, abs=1e-6)


def test_add_classes_default_init_keeps_every_old_logit():
    torch.manual_seed(0)
    model = build_segmenter("tiny", num_classes=4).eval()
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        before = model(images)
        model.add_classes(1, init="default")
        assert torch.equal(model(images)[:, :4], before)


def test_fuse_gives_the_same_logits(model):
    model.add_classes(1)
    model.add_classes(2)
    images = torch.randn(2, 3, 48, 48)
    fused = model.fuse()
    assert len(fused.classifier.heads) == 1 and fused.num_classes == 19
    with torch.no_grad():
        torch.testing.assert_close(fused(images), model(images), rtol=0, atol=1e-5)
    assert len(model.classifier.heads) == 3  # the original is untouched


@pytest.mark.parametrize("bad", [0, -1, 1.5])
def test_add_classes_rejects_non_positive(bad):
    model = build_segmenter("tiny", num_classes=4)
    with pytest.raises(ReminderError, match="positive number of classes"):
        model.add_classes(bad)


def test_local_backbone_weights_are_loaded(tmp_path):
    from torchvision.models import resnet50

    reference = resnet50()
    path = tmp_path / "resnet50.pth"
    torch.save(reference.state_dict(), path)
    model = build_segmenter("resnet50", num_classes=3, weights_backbone=path)
    assert torch.equal(model.backbone.stages[3][0].conv1.weight, reference.layer4[0].conv1.weight)


def test_unreachable_imagenet_weights_give_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # no cached weights
    monkeypatch.setenv("https_proxy", "http://127.0.0.1:9")  # nothing listens: the download fails
    with pytest.raises(ReminderError, match="ImageNet weights .* could not be loaded"):
        build_segmenter("mobilenet_v3_large", num_classes=3, weights_backbone="imagenet")
    with pytest.raises(ReminderError, match="does not exist"):
        build_segmenter("resnet50", num_classes=3, weights_backbone=tmp_path / "missing.pth")


def test_config_rebuilds_the_architecture():
    model = build_segmenter("tiny", num_classes=16)
    model.add_classes(1)
    config = model.config()
    rebuilt = build_segmenter(config["backbone"], num_classes=config["classes_per_step"])
    rebuilt.load_state_dict(model.state_dict())
    assert rebuilt.classes_per_step == [16, 1]


def test_resnet_last_stage_is_dilated_by_2_in_every_block_as_the_reference():
    """torchvision's replace_stride_with_dilation leaves layer4's first block at dilation 1;
    the reference dilates all of them. Output stride stays 16."""
    from reminder.models.backbones import resnet_backbone

    backbone = resnet_backbone(50)
    layer4 = backbone.stages[3]
    assert [block.conv2.dilation for block in layer4] == [(2, 2)] * len(layer4)
    assert [block.conv2.padding for block in layer4] == [(2, 2)] * len(layer4)
    model = build_segmenter("resnet50", num_classes=3).eval()
    with torch.no_grad():
        out = model.forward_features(torch.rand(1, 3, 64, 96))
    assert out.lowres_logits.shape[-2:] == (4, 6)


def test_imagenet_means_the_v1_resnet_weights():
    from torchvision.models import resnet

    from reminder.models.backbones import _imagenet_weights

    assert _imagenet_weights(resnet.ResNet101_Weights, "imagenet")[0] == resnet.ResNet101_Weights.IMAGENET1K_V1


@pytest.mark.parametrize("backbone", list(BACKBONES))
@pytest.mark.parametrize("head,output_stride,lowres", [("deeplabv3", 8, (8, 12)), ("deeplabv3plus", 16, (16, 24)),
                                                       ("deeplabv3plus", 8, (16, 24))])
def test_heads_keep_detail_at_stride_8_or_4(backbone, head, output_stride, lowres):
    torch.manual_seed(0)
    model = build_segmenter(backbone, num_classes=5, head=head, output_stride=output_stride).eval()
    images = torch.randn(1, 3, 64, 96)
    out = model.forward_features(images)
    assert out.lowres_logits.shape[-2:] == lowres and out.features.shape[1] == 256
    assert out.logits.shape == (1, 5, 64, 96) and len(out.stages) == STAGES[backbone]
    assert model.config()["head"] == head and model.config()["output_stride"] == output_stride
    with torch.no_grad():  # the growing head keeps the old logits on either head
        before = model(images)
        model.add_classes(2)
        assert torch.equal(model(images)[:, 1:5], before[:, 1:5])


def test_stride_8_keeps_the_backbone_weights_and_only_dilates():
    torch.manual_seed(0)
    at16 = build_segmenter("tiny", num_classes=3)
    at8 = build_segmenter("tiny", num_classes=3, output_stride=8)
    assert [k for k in at16.state_dict()] == [k for k in at8.state_dict()]
    convs = [m for m in at8.backbone.stages[3].modules() if isinstance(m, torch.nn.Conv2d)]
    assert all(c.stride == (1, 1) and c.dilation == (2, 2) and c.padding == (2, 2) for c in convs)


def test_a_config_rebuilds_the_same_architecture():
    from reminder.models import segmenter_from_config

    model = build_segmenter("tiny", num_classes=[4, 2], head="deeplabv3plus", output_stride=8)
    again = segmenter_from_config(model.config())
    again.load_state_dict(model.state_dict())  # strict: same modules and shapes
    assert again.config() == model.config()
    old = segmenter_from_config({"backbone": "tiny", "classes_per_step": [3]})  # written before heads existed
    assert (old.head, old.output_stride, old.decoder) == ("deeplabv3", 16, None)


@pytest.mark.parametrize("bad", [{"head": "unet"}, {"output_stride": 32}])
def test_unknown_head_or_stride_is_refused(bad):
    with pytest.raises(ReminderError, match="head|output stride"):
        build_segmenter("tiny", num_classes=3, **bad)
