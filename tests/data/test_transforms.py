import numpy as np
import torch
from torchvision import tv_tensors

from reminder.data.transforms import eval_transform, train_transform


def _pair(height=48, width=64):
    rng = np.random.default_rng(0)
    image = tv_tensors.Image(torch.from_numpy(rng.integers(0, 255, (3, height, width), dtype=np.uint8)))
    mask = np.zeros((height, width), np.uint8)
    mask[10:30, 5:40] = 7
    mask[20:25, 30:60] = 12
    mask[0, :] = 255
    return image, tv_tensors.Mask(torch.from_numpy(mask))


def test_train_transform_keeps_mask_values_and_crop_size():
    torch.manual_seed(0)
    transform = train_transform(32)
    image, mask = _pair()
    for _ in range(20):
        out_image, out_mask = transform(image, mask)
        assert out_image.shape == (3, 32, 32) and out_image.dtype == torch.float32
        assert out_mask.shape == (32, 32) and out_mask.dtype == torch.int64
        assert set(out_mask.unique().tolist()) <= {0, 7, 12, 255}  # nearest only: no blended labels


def test_eval_transform_resize_crop_and_full_image():
    image, mask = _pair()
    out_image, out_mask = eval_transform(40)(image, mask)
    assert out_image.shape == (3, 40, 40) and out_mask.shape == (40, 40)
    assert set(out_mask.unique().tolist()) <= {0, 7, 12, 255}
    full_image, full_mask = eval_transform(None)(image, mask)
    assert full_image.shape == (3, 48, 64) and torch.equal(full_mask, mask.long())
    expected = (image.float() / 255 - torch.tensor([0.485, 0.456, 0.406])[:, None, None]) / torch.tensor(
        [0.229, 0.224, 0.225])[:, None, None]
    assert torch.allclose(full_image, expected, atol=1e-5)
