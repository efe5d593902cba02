import torch

from reminder.export.graph import ExportModule, example_input
from reminder.models import build_segmenter


def test_labels_and_confidence_equal_argmax_and_softmax_of_normalised_input():
    torch.manual_seed(0)
    model = build_segmenter("tiny", num_classes=5).eval()
    model.add_classes(2)
    images = example_input(2, 48, 64)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    with torch.no_grad():
        logits = model((images / 255 - mean) / std)
        labels, confidence = ExportModule(model)(images)
        exported_logits = ExportModule(model, output="logits")(images)
    torch.testing.assert_close(exported_logits, logits, atol=1e-5, rtol=1e-5)
    assert labels.dtype == torch.uint8 and torch.equal(labels.long(), logits.argmax(dim=1))
    torch.testing.assert_close(confidence, logits.softmax(dim=1).max(dim=1).values, atol=1e-6, rtol=1e-5)
    assert len(ExportModule(model).model.classifier.heads) == 1  # the head is fused


def test_fp16_onnx_keeps_float_io_and_leaves_the_module_float(tmp_path):
    import numpy as np

    from reminder.export.onnx import export_onnx
    from reminder.export.tensorrt import _is_fp16_onnx
    from reminder.runtime.backends import OrtBackend

    torch.manual_seed(0)
    module = ExportModule(build_segmenter("tiny", num_classes=6))
    path = export_onnx(module, tmp_path / "model.fp16.onnx", example_input(), fp16=True)
    assert _is_fp16_onnx(path)
    assert next(module.parameters()).dtype == torch.float32  # the caller's module is untouched
    frames = np.random.default_rng(0).uniform(0, 255, (2, 3, 48, 64)).astype(np.float32)
    out = OrtBackend(path)(frames)
    assert out["labels"].dtype == np.uint8 and out["confidence"].dtype == np.float32
    with torch.no_grad():
        expected = module(torch.from_numpy(frames))[0].numpy()
    assert (out["labels"] == expected).mean() >= 0.99
