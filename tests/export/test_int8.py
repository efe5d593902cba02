"""INT8 bundles: static QDQ export, its quality gate, ONNX Runtime's traps, and the runtime's
``precision`` choice (ONNX Runtime and OpenVINO run the real models)."""

import json
import shutil

import numpy as np
import onnx
import pytest
from click.testing import CliRunner

from reminder.bundle import open_bundle, read_manifest, verify_bundle
from reminder.cli import main
from reminder.errors import ReminderError
from reminder.export.exporter import export_bundle
from reminder.export.quantize import Int8Options, describe_gate, quality_gate, quantize_int8
from reminder.runtime.backends import open_artifact
from reminder.runtime.predictor import Predictor

QUIET = {"log": lambda message: None}


def _initializers(model):
    return {t.name: t for t in model.graph.initializer}


def test_int8_bundle_records_calibration_and_passes_its_gate(int8_bundle):
    manifest = verify_bundle(int8_bundle).to_json()
    assert list(manifest["artifacts"]) == ["onnx", "onnx-int8"]  # the FP32 reference comes with it
    entry = manifest["artifacts"]["onnx-int8"]
    assert entry["path"] == "model.int8.onnx" and entry["precision"] == "int8"
    calibration = entry["calibration"]
    assert calibration["images"] == 16 and len(calibration["ids"]) == 16 and calibration["size"] == [64, 64]
    assert "training images of step 0" in calibration["source"]
    gate = manifest["parity"]["onnx-int8"]
    assert gate["reference"] == "onnx" and gate["passed"]
    assert gate["pixel_agreement"] >= 0.99 and gate["labelled_images"] == gate["images"] > 0
    assert gate["miou_drop"] <= 1.0 and {"miou_fp32", "miou_int8"} <= set(gate)


def test_int8_graph_is_u8_activations_s8_per_channel_weights_with_fp32_ends(int8_bundle):
    model = onnx.load(str(int8_bundle / "model.int8.onnx"))
    inits = _initializers(model)
    quantize = [n for n in model.graph.node if n.op_type == "QuantizeLinear"]
    assert quantize, "no activation was quantised"
    # activations: uint8 zero points (ORT's default int8 activations are the slow S8S8 variant)
    assert all(inits[n.input[2]].data_type == onnx.TensorProto.UINT8 for n in quantize)
    weight_dq = [n for n in model.graph.node if n.op_type == "DequantizeLinear" and n.input[0] in inits
                 and inits[n.input[0]].data_type == onnx.TensorProto.INT8 and len(inits[n.input[0]].dims) == 4]
    assert weight_dq and all(len(inits[n.input[1]].dims) == 1 and inits[n.input[1]].dims[0] > 1 for n in weight_dq)
    producers = {o: n for n in model.graph.node for o in n.output}
    # the normalisation reads the raw input in FP32: nothing quantises "images"
    assert all(n.op_type not in ("QuantizeLinear", "DequantizeLinear") for n in model.graph.node if "images" in n.input)
    # the classifier convolution has FP32 weights, and the argmax reads FP32 values
    argmax = next(n for n in model.graph.node if n.op_type == "ArgMax")
    assert producers[argmax.input[0]].op_type not in ("DequantizeLinear", "QuantizeLinear")
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    float_weight_convs = [c for c in convs
                          if c.input[1] in inits and inits[c.input[1]].data_type == onnx.TensorProto.FLOAT]
    kept_float = read_manifest(int8_bundle).to_json()["artifacts"]["onnx-int8"]["float_convs"]  # the fallback's, if any
    assert len(float_weight_convs) == 1 + len(kept_float)
    assert {p.key for p in model.metadata_props} >= {"classes", "step"}


def test_quant_pre_process_needs_skip_symbolic_shape(int8_bundle, tmp_path, monkeypatch):
    """The trap: ORT's symbolic shape inference fails on dynamo exports. If this starts to
    pass, the workaround in quantize_int8 may go."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    monkeypatch.chdir(tmp_path)  # the failing inference leaves temporary files in the working folder
    with pytest.raises(Exception, match="symbolic shape"):
        quant_pre_process(str(int8_bundle / "model.onnx"), str(tmp_path / "pre.onnx"))
    quant_pre_process(str(int8_bundle / "model.onnx"), str(tmp_path / "pre.onnx"), skip_symbolic_shape=True)


def test_calibration_keeps_every_image(int8_bundle, tmp_path):
    """Only the last of 12 images holds pure black and white (half its pixels, 4% of all):
    the first quantiser (the normalised input) must span both, so no image was dropped
    (CalibMaxIntermediateOutputs in ORT 1.32 would drop it); the others alone span less
    than a quarter of that range."""
    rng = np.random.default_rng(0)
    images = [rng.integers(100, 156, (64, 64, 3), dtype=np.uint8) for _ in range(11)]
    extreme = np.zeros((64, 64, 3), np.uint8)
    extreme[:, 32:] = 255
    quantize_int8(int8_bundle / "model.onnx", tmp_path / "q.onnx", images + [extreme], size=(64, 64))
    model = onnx.load(str(tmp_path / "q.onnx"))
    inits = _initializers(model)
    first_conv = next(n for n in model.graph.node if n.op_type == "Conv")
    producers = {o: n for n in model.graph.node for o in n.output}
    dq = producers[first_conv.input[0]]
    scale = onnx.numpy_helper.to_array(inits[dq.input[1]]).item()
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
    low, high = (-mean / std).min(), ((1 - mean) / std).max()
    assert scale == pytest.approx((high - low) / 255, rel=0.05)


def test_gate_refuses_a_bad_model_with_both_numbers(int8_bundle, runtime_run, tmp_path):
    folder, manifest = open_bundle(int8_bundle)
    fp32 = open_artifact(folder, manifest, "onnx")

    def shifted(batch):  # a broken INT8 model: every label moved by one class
        out = fp32(batch)
        return {**out, "labels": ((out["labels"].astype(int) + 1) % 16).astype(np.uint8)}

    image = np.random.default_rng(1).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    result = quality_gate(fp32, shifted, [(image, np.zeros((64, 64), np.uint8))], num_classes=16)
    assert not result["passed"] and result["pixel_agreement"] == 0
    assert "0.00% of pixels agree" in describe_gate(result) and "mIoU" in describe_gate(result)
    out = tmp_path / "refused"
    with pytest.raises(ReminderError, match=r"below its quality gate: .*% of pixels agree.*drop .* points"):
        export_bundle(runtime_run, out=out, formats="onnx-int8", step=0, calibration_count=4,
                      int8_max_miou_drop=-100.0, **QUIET)
    assert not out.exists() and not list(tmp_path.glob(".refused*"))


def test_int8_without_calibration_images_is_refused(runtime_run, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ReminderError, match="no images"):
        export_bundle(runtime_run, out=tmp_path / "b", formats="onnx-int8", calibration_images=empty, **QUIET)
    with pytest.raises(ReminderError, match="needs calibration images"):
        quantize_int8(tmp_path / "m.onnx", tmp_path / "q.onnx", [], size=(64, 64))
    from reminder.export.exporter import write_bundle
    from reminder.export.formats import parse_formats

    with pytest.raises(ReminderError, match="needs calibration images"):
        write_bundle(None, {"name": "x", "version": "1"}, out=tmp_path / "c", formats=parse_formats("onnx-int8"),
                     parity_set=[], files={})
    assert not (tmp_path / "b").exists() and not (tmp_path / "c").exists()
    assert Int8Options([], {}).min_agreement == 0.99


def test_precision_chooses_the_artifact(int8_bundle, bundles, frames):
    int8 = Predictor(int8_bundle, backend="ort", precision="int8")
    fp32 = Predictor(int8_bundle, backend="ort", precision="fp32")
    auto = Predictor(int8_bundle, backend="ort")  # a CPU here: auto prefers INT8
    assert (int8.backend.artifact, fp32.backend.artifact, auto.backend.artifact) == ("onnx-int8", "onnx", "onnx-int8")
    assert int8.precision == "int8" and "int8" in int8.backend_name
    a, b = int8.predict(frames[:6]), fp32.predict(frames[:6])
    agreement = np.mean([(x.labels == y.labels).mean() for x, y in zip(a, b)])
    assert agreement >= 0.97
    assert Predictor(bundles[0], backend="ort").precision == "fp32"  # no INT8 artifact: FP32
    with pytest.raises(ReminderError, match=r"has no INT8 artifact \(it has: onnx \(fp32\)\).*`format` onnx-int8"):
        Predictor(bundles[0], precision="int8")
    with pytest.raises(ReminderError, match="unknown precision"):
        Predictor(int8_bundle, precision="int4")


def test_tampered_int8_artifact_is_refused(int8_bundle, tmp_path):
    copy = shutil.copytree(int8_bundle, tmp_path / "copy")
    data = bytearray((copy / "model.int8.onnx").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (copy / "model.int8.onnx").write_bytes(bytes(data))
    with pytest.raises(ReminderError, match="model.int8.onnx does not match its sha256"):
        Predictor(copy, precision="int8")


def test_export_cli_and_bench_with_precisions(int8_run, tmp_path):
    out = tmp_path / "cli"
    result = CliRunner().invoke(main, ["export", str(int8_run), "--step", "0", "--format", "onnx-int8", "--out",
                                       str(out), "--calibration-count", "8"])
    assert result.exit_code == 0, result.output
    assert "quality gate onnx-int8:" in result.output and "held-out images" in result.output
    manifest = read_manifest(out).to_json()
    assert manifest["artifacts"]["onnx-int8"]["calibration"]["images"] == 8
    assert manifest["parity"]["onnx-int8"]["passed"] and manifest["parity"]["onnx-int8"]["pixel_agreement"] >= 0.99
    bench = CliRunner().invoke(main, ["bench", str(out), "--backend", "ort", "--precision", "fp32,int8",
                                      "--iterations", "2", "--warmup", "1"])
    assert bench.exit_code == 0, bench.output
    report = json.loads(bench.output[bench.output.index("{"):])
    assert sorted(r["precision"] for r in report["results"]) == ["fp32", "int8"]
    assert {r["artifact"] for r in report["results"]} == {"onnx", "onnx-int8"}


def test_fallback_keeps_the_most_sensitive_convolutions_float_until_the_gate_passes(int8_bundle, tmp_path):
    """The loop of the accuracy-aware fallback on the real models: the quality gate is
    measured for real each round, but whether a round passes is decided here by how many
    convolutions stayed INT8, so that the loop's path does not hang on this machine's
    numerics (the fixture's INT8 agreement sits close to 99% and differs by machine)."""
    from reminder.export.int8_fallback import conv_sensitivity, quantize_with_fallback, quantized_convs
    from reminder.export.quantize import calibration_inputs, prepared_model
    from reminder.runtime.backends import OrtBackend

    folder, manifest = open_bundle(int8_bundle)
    fp32 = open_artifact(folder, manifest, "onnx")
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, (64, 64, 3), dtype=np.uint8) for _ in range(6)]
    total = len(quantized_convs(onnx.load(str(int8_bundle / "model.int8.onnx"))))
    rounds, messages = [], []

    def gate(path):
        result = quality_gate(fp32, OrtBackend(path, providers=["CPUExecutionProvider"]),
                              [(image, None) for image in images[:2]], num_classes=16)
        rounds.append(len(quantized_convs(onnx.load(str(path)))))
        return {**result, "passed": rounds[-1] <= total - 3}

    source = int8_bundle / "model.onnx"
    extra, result = quantize_with_fallback(source, tmp_path / "q.onnx", images, size=(64, 64), gate=gate,
                                           log=messages.append)
    group = extra["fallback"]["group"]
    assert result["passed"] and rounds[0] == total and rounds[-1] == total - len(extra["float_convs"])
    assert len(extra["float_convs"]) == group * (len(rounds) - 1) >= 3
    assert [a["float_convs"] for a in extra["fallback"]["attempts"]] == [group * i for i in range(len(rounds))]
    assert "most sensitive of" in messages[0] and extra["speedup_vs_fp32"]["value"] > 0
    model = onnx.load(str(tmp_path / "q.onnx"))
    assert set(extra["float_convs"]).isdisjoint(c.name for c in quantized_convs(model))
    # the ones kept float are those whose return to FP32 lowers the class-score error most
    with prepared_model(source) as prepared:
        ranking = conv_sensitivity(onnx.load(str(prepared)), onnx.load(str(tmp_path / "q.onnx")),
                                   calibration_inputs((64, 64), images))
    assert ranking == sorted(ranking, key=lambda item: -item[1])


def test_a_model_that_cannot_pass_even_mostly_float_is_refused_with_the_way_out(runtime_run, tmp_path):
    logs = []
    with pytest.raises(ReminderError, match=r"below its quality gate.*`format` onnx\b.*`int8_min_agreement`"):
        export_bundle(runtime_run, out=tmp_path / "b", formats="onnx,onnx-int8", step=0, calibration_count=4,
                      int8_min_agreement=1.0, int8_max_miou_drop=-100.0, log=logs.append)
    assert any("most sensitive of" in line for line in logs)
    assert not (tmp_path / "b").exists()


def test_image_folders_that_are_missing_or_files_are_one_line(runtime_run, tmp_path):
    (tmp_path / "a.jpg").write_bytes(b"x")
    for folder, message in ((tmp_path / "nope", "nope does not exist"), (tmp_path / "a.jpg", "a.jpg is a file")):
        with pytest.raises(ReminderError, match=f"image folder .*{message}"):
            export_bundle(runtime_run, out=tmp_path / "b", formats="onnx-int8", step=0, calibration_images=folder,
                          **QUIET)
        with pytest.raises(ReminderError, match=f"image folder .*{message}"):
            export_bundle(runtime_run, out=tmp_path / "b", formats="onnx", step=0, images=folder, **QUIET)
    assert not (tmp_path / "b").exists()
