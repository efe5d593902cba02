"""An updated model's ONNX from its parent's graph (reminder/export/patch.py)."""

import copy

import onnx
import pytest
import torch

from reminder.bundle import read_manifest
from reminder.export.graph import ExportModule, example_input
from reminder.export.patch import patched_onnx
from reminder.runtime.backends import OrtBackend
from reminder.update.training import load_bundle_model


def _parent_and_child(bundle, *, train_backbone=False):
    manifest = read_manifest(bundle)
    parent = load_bundle_model(bundle, manifest, torch.device("cpu")).eval()
    child = copy.deepcopy(parent)
    child.add_classes(1)
    trained = [child.aspp, child.classifier] + ([child.backbone] if train_backbone else []) + \
        ([child.decoder] if child.decoder is not None else [])
    with torch.no_grad():
        for module in trained:
            for parameter in module.parameters():
                parameter.add_(torch.randn_like(parameter) * 0.05)
    kind = manifest.outputs.kind
    return ExportModule(parent, output=kind), ExportModule(child.eval(), output=kind)


@pytest.mark.parametrize("which", ["deeplabv3", "deeplabv3plus", "whole model trained"])
def test_the_parents_graph_takes_the_childs_weights(bundles, v3plus_bundle, tmp_path, which):
    bundle = v3plus_bundle if which == "deeplabv3plus" else bundles[0]
    parent, child = _parent_and_child(bundle, train_backbone=which == "whole model trained")
    target = patched_onnx(bundle / "model.onnx", parent, child, tmp_path / "child.onnx", metadata={"step": "1"},
                          example=example_input())
    assert target is not None
    images = example_input(batch=3, height=48, width=80, seed=4)  # another size than the trace's
    with torch.no_grad():
        expected = child(images)[0].numpy()
    labels = OrtBackend(target, providers=["CPUExecutionProvider"])(images.numpy())["labels"]
    assert (labels == expected).mean() >= 0.999 and expected.max() <= child.num_classes - 1
    model = onnx.load(str(target))
    assert {p.key: p.value for p in model.metadata_props} == {"step": "1"}


def test_a_graph_that_does_not_come_from_the_parent_is_not_patched(bundles, tmp_path):
    """The mapping is checked on the parent first: another model's graph is refused (and the
    caller traces), and nothing is written."""
    parent, child = _parent_and_child(bundles[0])
    with torch.no_grad():
        for parameter in parent.parameters():  # the graph no longer holds this parent's weights
            parameter.mul_(1.5)
    target = tmp_path / "child.onnx"
    assert patched_onnx(bundles[0] / "model.onnx", parent, child, target, metadata={},
                        example=example_input()) is None
    assert not target.exists()
