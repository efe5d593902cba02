"""AOTInductor packages: the export leaves the caller's module alone, and the backend runs
a package on the device it was compiled for (real CPU packages; CUDA ones in tests/gpu)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from reminder.errors import ReminderError
from reminder.export.aoti import export_aoti
from reminder.export.graph import ExportModule, example_input
from reminder.models import build_segmenter
from reminder.runtime.backends import AotiBackend, open_artifact


@pytest.fixture(scope="module")
def package(tmp_path_factory):
    torch.manual_seed(0)
    module = ExportModule(build_segmenter("tiny", num_classes=[4, 1]), output="logits")
    module.train()
    before = {name: p.detach().clone() for name, p in module.named_parameters()}
    path = export_aoti(module, tmp_path_factory.mktemp("aoti") / "model.pt2", example_input(), device="cpu")
    return module, before, path


def test_export_leaves_the_callers_module_as_it_was(package):
    module, before, _ = package
    assert module.training, "export_aoti switched the caller's module to eval mode"
    for name, parameter in module.named_parameters():
        assert parameter.device.type == "cpu" and torch.equal(parameter, before[name])


def test_cpu_package_runs_on_cpu_even_where_cuda_is_available(package, monkeypatch):
    module, _, path = package
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    backend = AotiBackend(path, compiled_for="cpu")
    assert backend.device.type == "cpu"
    images = np.random.default_rng(0).uniform(0, 255, (1, 3, 48, 80)).astype(np.float32)
    module.eval()
    with torch.no_grad():
        expected = module(torch.from_numpy(images)).numpy()
    assert np.allclose(backend(images)["logits"], expected, atol=1e-3)


def test_cuda_package_is_refused_without_cuda(package):
    _, _, path = package
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(ReminderError, match="compiled for cuda, and this machine has no CUDA"):
        AotiBackend(path, compiled_for="cuda")
    from reminder.contracts import ClassTable
    from reminder.contracts.manifest import InputSpec, Manifest, OutputSpec

    manifest = Manifest.new(name="m", version="v", step=0, created="", input=InputSpec(64, 64),
                            classes=ClassTable(("background", "a"), ((0, 0, 0), (9, 9, 9))),
                            outputs=OutputSpec("labels", ("labels",)), model={}, metrics={}, quality={}, tools={})
    manifest.add_artifact("aoti", {"path": path.name, "sha256": "0" * 64, "bytes": 1, "device": "cuda:0"})
    with pytest.raises(ReminderError, match="compiled for cuda:0"):
        open_artifact(path.parent, manifest, "aoti")
    with pytest.raises(ReminderError, match="cannot run on cuda"):
        AotiBackend(path, compiled_for="cpu", device="cuda")


def test_a_shape_guard_that_fails_is_named(tmp_path):
    """ResNet-101's export failed under torch 2.11 on a GPU with only "Constraints violated
    (height, width)!"; the message now carries the guard that failed."""
    class EvenHeightOnly(torch.nn.Module):
        def forward(self, images):
            return images[:, :, ::2] + images[:, :, 1::2]

    with pytest.raises(ReminderError, match=r"Constraints violated \(height\)!.* - Not all values of height"):
        export_aoti(EvenHeightOnly(), tmp_path / "m.pt2", torch.zeros(2, 3, 64, 64))
    assert not list(tmp_path.iterdir())
