"""The update's per-class forgetting check, on tiny real models with fixed label maps."""

import numpy as np


def test_an_update_that_erases_a_thin_old_class_names_it():
    """The per-class check on real (if tiny) models: a parent that labels a 1 px line as
    class 2 and a child that paints it background. The overall agreement stays high (the
    line is a few pixels among many), yet the class is named."""
    import torch

    from reminder.update.frames import Frame
    from reminder.update.quality import format_report, measure_quality

    class Painter(torch.nn.Module):  # logits from a fixed label map, whatever the image
        def __init__(self, labels, num_classes):
            super().__init__()
            self.labels, self.num_classes = labels, num_classes

        def forward(self, images):
            return torch.nn.functional.one_hot(self.labels, self.num_classes).permute(2, 0, 1)[None].float() * 10

    parent_map = torch.ones(32, 48, dtype=torch.long)  # road everywhere
    parent_map[:, 20] = 2  # a 1 px lane marking
    child_map = parent_map.clone()
    child_map[:, 20] = 0  # erased
    child_map[:4, :4] = 3  # and a little of the new class
    image = np.zeros((32, 48, 3), np.uint8)
    frames = [Frame("a", image, np.full((32, 48), 255, np.uint8))]
    report = measure_quality(Painter(child_map, 4), Painter(parent_map, 3), frames, 4, [3], [],
                             ["background", "road", "lane_marking", "debris"], 0.9, torch.device("cpu"))
    assert report["old_agreement"] > 0.95  # the overall share hides it
    assert report["forgotten"] == ["lane_marking"]
    assert report["old_classes"]["lane_marking"] == {"kept": 0.0, "parent_pixels": 32, "forgotten": True}
    assert report["old_classes"]["road"]["forgotten"] is False
    text = format_report({**report, "peak_memory": {}, "iterations": 1, "stopped_by": "iterations",
                          "train_seconds": 0.1})
    assert "WARNING: old class 'lane_marking' is forgotten (0.0% of the 32 pixels the parent labels" in text
    # where held-out frames label the class, its IoU before and after decides
    labelled = np.ones((32, 48), np.uint8)
    labelled[:, 20] = 2
    report = measure_quality(Painter(child_map, 4), Painter(parent_map, 3), frames, 4, [3],
                             [Frame("h", image, labelled)], ["background", "road", "lane_marking", "debris"], 0.9,
                             torch.device("cpu"))
    assert report["old_classes"]["lane_marking"] == {"iou_before": 1.0, "iou_after": 0.0, "forgotten": True}
