"""The README's Python snippets run as written.

Each ```python block is executed in a folder that holds what the README's prose names:
``bundles/sv-step5`` (a real exported bundle), ``resnet101-imagenet.pth`` (torchvision's
ResNet-101 layout, randomly initialised: ImageNet weights cannot be downloaded here), and
the two free variables the snippets assume: ``frame`` (a BGR uint8 camera frame) and
``images`` (a float batch).
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

README = Path(__file__).resolve().parents[1] / "README.md"
SNIPPETS = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)


def test_the_readme_has_python_snippets():
    assert len(SNIPPETS) >= 2


@pytest.mark.parametrize("index", range(len(SNIPPETS)))
def test_readme_snippet_runs(index, bundles, frames, tmp_path, monkeypatch):
    code = SNIPPETS[index]
    (tmp_path / "bundles").mkdir()
    shutil.copytree(bundles[1], tmp_path / "bundles" / "sv-step5")
    if "resnet101-imagenet.pth" in code:
        from torchvision.models import resnet101

        torch.save(resnet101().state_dict(), tmp_path / "resnet101-imagenet.pth")
    monkeypatch.chdir(tmp_path)
    namespace = {"frame": frames[0], "images": torch.rand(2, 3, 65, 97)}
    exec(compile(code, f"README.md python snippet {index}", "exec"), namespace)
    if "predictor" in namespace:
        assert namespace["prediction"].labels.shape == frames[0].shape[:2]
        assert namespace["overlay"].shape == frames[0].shape and namespace["overlay"].dtype == np.uint8
    if "fused" in namespace:
        assert namespace["logits"].shape == (2, 17, 65, 97)
        assert torch.allclose(namespace["fused"](namespace["images"]), namespace["logits"], atol=1e-4)
