import json
import shutil
import subprocess
import sys

import cv2
import numpy as np
import pytest

from reminder.errors import ReminderError
from reminder.bundle import file_entry, open_bundle, write_manifest
from reminder.runtime.engines import with_header
from reminder.runtime.backends import open_artifact
from reminder.runtime.overlay import colorize, overlay, render
from reminder.runtime.predictor import Predictor


def test_predict_equals_the_backend_at_network_size(bundles, frames):
    """With frames at the network size nothing is resized: labels are the model's own."""
    predictor = Predictor(bundles[0], backend="ort")
    folder, manifest = open_bundle(bundles[0])
    backend = open_artifact(folder, manifest, "onnx")
    batch = np.stack([f[:, :, ::-1].transpose(2, 0, 1) for f in frames[:4]]).astype(np.float32)
    expected = backend(batch)["labels"]
    predictions = predictor.predict(np.stack(frames[:4]))
    assert predictor.size == (64, 64)
    assert all(np.array_equal(p.labels, e) for p, e in zip(predictions, expected))
    assert len(np.unique(expected)) > 1, "the fixture model should predict several classes"
    for mode in ("fit", "stretch", "none"):
        other = Predictor(bundles[0], backend="ort", resize=mode).predict(frames[:4])
        assert all(np.array_equal(p.labels, o.labels) for p, o in zip(predictions, other))


def test_large_frames_are_resized_and_labels_come_back_at_frame_size(bundles, frames):
    predictor = Predictor(bundles[0])
    big = cv2.resize(frames[0], (128, 128), interpolation=cv2.INTER_NEAREST)
    [prediction] = predictor.predict(big)
    assert prediction.labels.shape == (128, 128)
    [small] = predictor.predict(cv2.resize(big, (64, 64), interpolation=cv2.INTER_AREA))
    assert np.array_equal(prediction.labels, np.repeat(np.repeat(small.labels, 2, 0), 2, 1))


def test_letterbox_pads_and_crops_back(bundles, frames):
    """A 64x32 frame is letterboxed into 64x64: its labels equal those of the frame placed
    by hand in the middle of a mean-coloured canvas, cropped back."""
    predictor = Predictor(bundles[0])
    narrow = np.ascontiguousarray(frames[1][:, 16:48])
    [prediction] = predictor.predict(narrow)
    assert prediction.labels.shape == (64, 32)
    canvas = np.empty((64, 64, 3), np.uint8)
    canvas[:] = [round(255 * m) for m in (0.406, 0.456, 0.485)]  # mean colour, BGR
    canvas[:, 16:48] = narrow
    [whole] = predictor.predict(canvas)
    assert np.array_equal(prediction.labels, whole.labels[:, 16:48])
    fit = Predictor(bundles[0], resize="fit", size=128).predict(narrow)[0]
    assert fit.labels.shape == (64, 32)


def test_frames_of_different_sizes_in_one_call(bundles, frames):
    predictor = Predictor(bundles[0], resize="fit")
    sizes = [(64, 64), (48, 80), (64, 64), (30, 40)]
    batch = [cv2.resize(f, (w, h)) for f, (h, w) in zip(frames, sizes)]
    predictions = predictor.predict(batch)
    assert [p.labels.shape for p in predictions] == sizes
    # the two 64x64 frames went through the same batch and match single-frame calls
    assert np.array_equal(predictions[2].labels, predictor.predict(batch[2])[0].labels)


def test_rgb_frames_give_the_same_labels_as_bgr(bundles, frames):
    bgr = Predictor(bundles[0]).predict(frames[:3])
    rgb = Predictor(bundles[0], color="rgb").predict([f[:, :, ::-1] for f in frames[:3]])
    assert all(np.array_equal(a.labels, b.labels) for a, b in zip(bgr, rgb))


def test_logits_bundle_is_argmaxed_like_the_labels_bundle(runtime_run, bundles, frames, tmp_path):
    from reminder.export.exporter import export_bundle

    logits = export_bundle(runtime_run, out=tmp_path / "logits", formats="onnx", step=0, output="logits",
                           log=lambda message: None)
    with_logits = Predictor(logits, confidence=True).predict(frames[:4])
    with_labels = Predictor(bundles[0], confidence=True).predict(frames[:4])
    for a, b in zip(with_logits, with_labels):
        assert (a.labels == b.labels).mean() > 0.999
        assert np.allclose(a.confidence, b.confidence, atol=1e-4)
        assert a.confidence.min() > 0 and a.confidence.max() <= 1 + 1e-6


def test_counts_and_shares(bundles, frames):
    predictor = Predictor(bundles[0])
    [prediction] = predictor.predict(frames[2])
    assert np.array_equal(prediction.counts, np.bincount(prediction.labels.ravel(), minlength=16))
    shares = predictor.shares(prediction)
    assert sum(shares.values()) == pytest.approx(1.0, abs=1e-4)
    assert set(shares) <= set(predictor.names)


@pytest.mark.parametrize("frame, message", [
    (np.zeros((8, 8, 3), np.float32), "dtype float32"),
    (np.zeros((8, 8), np.uint8), "shape (8, 8)"),
    (np.zeros((8, 8, 4), np.uint8), "3 colour channels"),
    ([np.zeros((8, 8, 3), np.uint8), "frame.png"], "numpy array"),
])
def test_bad_frames_are_refused_with_the_reason(bundles, frame, message):
    with pytest.raises(ReminderError, match=message.replace("(", r"\(").replace(")", r"\)")):
        Predictor(bundles[0]).predict(frame)


def test_overlay_colours_only_the_classes_found():
    frame = np.full((4, 4, 3), 100, np.uint8)
    labels = np.zeros((4, 4), np.uint8)
    labels[1:3, 1:3] = 2
    palette = np.array([[0, 0, 0], [0, 0, 255], [0, 255, 0]], np.uint8)
    out = overlay(frame, labels, palette, alpha=0.25)
    assert np.array_equal(out[0, 0], [100, 100, 100])
    assert np.array_equal(out[1, 1], [75, 139, 75])  # 0.75 * 100 + 0.25 * (0, 255, 0)
    assert np.array_equal(colorize(labels, palette)[1, 1], [0, 255, 0])
    assert render(frame, labels, palette, view="both").shape == (4, 8, 3)
    with pytest.raises(ReminderError, match="alpha"):
        overlay(frame, labels, palette, alpha=1.5)


def test_legend_lists_the_classes_present_in_their_colours():
    frame = np.full((240, 320, 3), 90, np.uint8)
    labels = np.zeros((240, 320), np.uint8)
    labels[150:, 200:] = 2
    palette = np.array([[0, 0, 0], [0, 0, 255], [0, 255, 0]], np.uint8)
    names = ["background", "forklift", "pallet"]
    plain = render(frame, labels, palette)
    drawn = render(frame, labels, palette, names=names)
    changed = np.argwhere(np.any(drawn != plain, axis=2))
    assert changed.size and changed[:, 0].max() < 40 and changed[:, 1].max() < 120  # one line at the top left
    # its colour box holds the present class's colour; the absent class has none
    assert np.any(np.all(drawn[:40, :40] == [0, 255, 0], axis=2))
    assert not np.any(np.all(drawn[:40, :120] == [0, 0, 255], axis=2))
    assert np.array_equal(render(frame, np.zeros_like(labels), palette, names=names), frame)  # nothing found
    assert np.array_equal(render(frame[:64, :64], labels[:64, :64] + 1, palette, names=names),
                          render(frame[:64, :64], labels[:64, :64] + 1, palette))  # too small to hold one


def test_label_png_is_a_palette_png_of_ids(tmp_path):
    from PIL import Image

    from reminder.runtime.overlay import write_label_png

    labels = (np.arange(48, dtype=np.uint8).reshape(6, 8) % 3)
    colors = np.array([[0, 0, 0], [250, 200, 0], [30, 140, 230]], np.uint8)
    write_label_png(tmp_path / "l.png", labels, colors)
    with Image.open(tmp_path / "l.png") as image:
        assert image.mode == "P" and np.array_equal(np.array(image), labels)
        assert np.array_equal(np.array(image.convert("RGB")), colors[labels])
    with pytest.raises(ReminderError, match="uint8"):
        write_label_png(tmp_path / "x.png", labels.astype(np.int64), colors)


def test_tampered_bundle_is_refused(bundles, tmp_path):
    copy = shutil.copytree(bundles[0], tmp_path / "b")
    with open(copy / "model.onnx", "r+b") as handle:
        handle.seek(100)
        handle.write(b"\0\0\0\0")
    with pytest.raises(ReminderError, match="model.onnx does not match its sha256"):
        Predictor(copy)


def test_foreign_engine_falls_back_to_onnx_runtime(bundles, tmp_path):
    """A bundle carrying a TensorRT engine for another GPU (or without TensorRT here):
    ``auto`` says why and runs ONNX; ``trt`` named explicitly is an error."""
    copy = shutil.copytree(bundles[0], tmp_path / "b")
    engine = copy / "model.sm87.engine"
    engine.write_bytes(with_header({"tensorrt": "10.3.0", "compute_capability": "sm87"}, b"\0" * 64))
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["artifacts"]["tensorrt"] = {"path": engine.name, **file_entry(engine), "tensorrt": "10.3.0",
                                         "compute_capability": "sm87", "precision": "fp16"}
    write_manifest(copy, manifest)
    messages = []
    predictor = Predictor(copy, log=messages.append)
    assert predictor.backend.name in ("ort", "openvino")  # the ONNX artifact
    assert messages and "trt backend not usable here" in messages[0]
    with pytest.raises(ReminderError, match="TensorRT is not installed|built for"):
        Predictor(copy, backend="trt")


def test_missing_backend_library_names_the_package(bundles):
    script = ("import sys; sys.modules['onnxruntime'] = None\n"
              "from reminder.errors import ReminderError\n"
              "from reminder.runtime.predictor import Predictor\n"
              f"try:\n    Predictor({str(bundles[0])!r}, backend='ort')\n"
              "except ReminderError as error:\n    print(error)\n")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert "pip install onnxruntime" in result.stdout, result.stderr


def test_unknown_options_are_refused(bundles):
    with pytest.raises(ReminderError, match="resize mode"):
        Predictor(bundles[0], resize="crop")
    with pytest.raises(ReminderError, match="unknown backend"):
        Predictor(bundles[0], backend="tflite")
    with pytest.raises(ReminderError, match="no torchscript artifact"):
        Predictor(bundles[0], backend="torchscript")


def test_bundle_archive_runs_like_its_folder(bundles, frames, tmp_path):
    from reminder.bundle import pack_bundle

    archive = pack_bundle(bundles[0], tmp_path / "b.tar")
    from_tar = Predictor(archive)
    unpacked = from_tar.path
    assert np.array_equal(from_tar.predict(frames[0])[0].labels, Predictor(bundles[0]).predict(frames[0])[0].labels)
    del from_tar
    import gc

    gc.collect()
    assert not unpacked.exists()  # the unpacked copy goes with the predictor


def test_an_int8_only_bundle_runs_under_the_default_backend(int8_bundle, frames, tmp_path):
    """The default backend chose among the FP32 formats only: an INT8-only bundle said "no
    runnable artifact", yet ran with backend="ort" (a fleet device's smoke test uses the default)."""
    only = shutil.copytree(int8_bundle, tmp_path / "int8-only")
    manifest = json.loads((only / "manifest.json").read_text())
    del manifest["artifacts"]["onnx"], manifest["parity"]["onnx"]
    (only / "model.onnx").unlink()
    write_manifest(only, manifest)
    predictor = Predictor(only)
    assert predictor.backend.artifact == "onnx-int8" and predictor.precision == "int8"
    assert predictor.predict(frames[0])[0].labels.shape == frames[0].shape[:2]
    with pytest.raises(ReminderError, match="has no FP32 artifact"):
        Predictor(only, backend="ort", precision="fp32")


def test_an_unknown_predictor_option_is_named(bundles):
    with pytest.raises(ReminderError, match="unknown backend option 'thread'.*threads"):
        Predictor(bundles[0], thread=4)
    assert Predictor(bundles[0], backend="ort", threads=1, hint="LATENCY").backend.name == "ort"
