"""Accuracy-aware INT8: when the quantised model misses its quality gate, keep the
convolutions that quantisation hurts most in float, one group at a time, until it passes.

How sensitive a convolution is, is measured on the calibration images, never on the gate's
images. For each quantised convolution, the fully quantised model is copied with that one
convolution back in FP32 (a graph edit: no new calibration). Each copy runs on up to
``SENSITIVITY_IMAGES`` calibration images. The convolution's score is how much the error of
the class scores falls: the classifier convolution's output, by its normalised squared error
against the FP32 model. A first version scored each layer by the error it adds locally.
That ranked the head's convolutions first, and keeping 6 of 14 in float gained nothing. The
early layers, whose error the network amplifies, are what matter to the labels.

The ranking is computed once. Each round keeps ``GROUP_SHARE`` more of the quantised
convolutions in float, re-quantises and re-gates. Rounds stop when the gate passes, or
when more than ``MAX_FLOAT_SHARE`` of them would be float. A model that is mostly float has
lost the point of INT8, and the export refuses it as before. The manifest records which
convolutions stayed float, every round's gate numbers, and the speed-up that remains
against the FP32 model.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

import numpy as np

from reminder.contracts.manifest import Manifest
from reminder.runtime.backends import open_artifact

if TYPE_CHECKING:
    from reminder.export.quantize import Int8Options

SENSITIVITY_IMAGES = 8
GROUP_SHARE = 0.1
MAX_FLOAT_SHARE = 0.5


def _producers(model) -> dict:
    return {out: node for node in model.graph.node for out in node.output}


def quantized_convs(model) -> list:
    """The convolutions of a QDQ model whose weights are dequantised (the INT8 ones)."""
    producers = _producers(model)
    return [n for n in model.graph.node if n.op_type == "Conv" and len(n.input) > 1
            and getattr(producers.get(n.input[1]), "op_type", None) == "DequantizeLinear"]


def _float_input(conv, producers) -> str | None:
    """The FP32 tensor a quantised convolution reads (the input of its Q -> DQ pair)."""
    dq = producers.get(conv.input[0])
    q = producers.get(dq.input[0]) if dq is not None and dq.op_type == "DequantizeLinear" else None
    return q.input[0] if q is not None and q.op_type == "QuantizeLinear" else None


def _session(model, extra_outputs: Sequence[str]):
    import onnx
    import onnxruntime as ort

    model = onnx.ModelProto.FromString(model.SerializeToString())
    present = {o.name for o in model.graph.output}
    model.graph.output.extend(onnx.helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, None)
                              for n in extra_outputs if n not in present)
    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def _reverted(int8_model, fp32_model, conv_name: str):
    """``int8_model`` with convolution ``conv_name`` back in FP32: it reads the float tensor
    before its Q -> DQ pair and the FP32 model's weights (no new calibration needed)."""
    import onnx

    model = onnx.ModelProto.FromString(int8_model.SerializeToString())
    producers = _producers(model)
    conv = next(n for n in model.graph.node if n.name == conv_name)
    original = next(n for n in fp32_model.graph.node if n.name == conv_name)
    float_input = _float_input(conv, producers)
    if float_input is not None:
        conv.input[0] = float_input
    fp32_inits = {t.name: t for t in fp32_model.graph.initializer}
    for i in range(1, len(original.input)):
        if original.input[i] not in fp32_inits:
            continue
        tensor = onnx.TensorProto()
        tensor.CopyFrom(fp32_inits[original.input[i]])
        tensor.name = f"{original.input[i]}.fp32.{conv_name}"  # the QDQ graph uses the old names itself
        model.graph.initializer.append(tensor)
        conv.input[i] = tensor.name
    return model


def conv_sensitivity(fp32_model, int8_model, inputs: Sequence[np.ndarray]) -> list[tuple[str, float]]:
    """``(conv node name, score)`` of every quantised convolution of ``int8_model``, most
    sensitive first. The score is how much the error of the class scores (the classifier
    convolution's output, normalised squared error against ``fp32_model``) falls when that
    convolution alone goes back to FP32; ``inputs`` are prepared calibration inputs."""
    from reminder.export.quantize import _classifier_conv

    logits = _classifier_conv(fp32_model, _producers(fp32_model)).output[0]
    fp32 = _session(fp32_model, [logits])  # one session for every input
    reference = [fp32.run([logits], {"images": x})[0] for x in inputs]
    scale = sum(float(np.mean(r ** 2)) for r in reference) or 1e-12

    def error(model) -> float:
        session = _session(model, [logits])
        return sum(float(np.mean((session.run([logits], {"images": x})[0] - r) ** 2))
                   for x, r in zip(inputs, reference)) / scale

    fp32_convs = {n.name for n in fp32_model.graph.node if n.op_type == "Conv"}
    base = error(int8_model)
    scores = [(conv.name, base - error(_reverted(int8_model, fp32_model, conv.name)))
              for conv in quantized_convs(int8_model) if conv.name in fp32_convs]
    return sorted(scores, key=lambda item: -item[1])


def measure_speedup(fp32_path: Path, int8_path: Path, size: tuple[int, int], repeats: int = 5) -> float:
    """FP32 time over INT8 time on one input at ``size`` (ONNX Runtime, this CPU)."""
    from reminder.runtime.backends import OrtBackend

    image = np.random.default_rng(0).uniform(0, 255, (1, 3, *size)).astype(np.float32)
    times = {}
    for name, path in (("fp32", fp32_path), ("int8", int8_path)):
        backend = OrtBackend(path, providers=["CPUExecutionProvider"])
        backend(image)
        runs = []
        for _ in range(repeats):
            began = time.perf_counter()
            backend(image)
            runs.append(time.perf_counter() - began)
        times[name] = float(np.median(runs))
    return round(times["fp32"] / times["int8"], 2)


def _attempt(float_convs: int, result: dict) -> dict:
    keys = ("pixel_agreement", "miou_fp32", "miou_int8", "miou_drop", "passed")
    return {"float_convs": float_convs, **{k: result[k] for k in keys if k in result}}


def quantize_with_fallback(source: Path, target: Path, images: Sequence[np.ndarray], *, size: tuple[int, int],
                           gate: Callable[[Path], dict], log: Callable[[str], None]) -> tuple[dict, dict]:
    """Quantise ``source`` into ``target``, gate it with ``gate(target)`` and fall back as
    the module says. Returns what the manifest records about the INT8 model, and the
    last gate result (``passed`` False when even the last round missed the gate)."""
    import onnx

    from reminder.export.quantize import calibration_inputs, describe_gate, prepared_model, quantize_int8

    extra = quantize_int8(source, target, images, size=size)
    result = gate(target)
    attempts = [_attempt(0, result)]
    if not result["passed"]:
        int8_model = onnx.load(str(target))
        with prepared_model(source) as prepared:
            ranking = [name for name, _ in conv_sensitivity(
                onnx.load(str(prepared)), int8_model, calibration_inputs(size, images[:SENSITIVITY_IMAGES]))]
        group = max(1, math.ceil(GROUP_SHARE * len(ranking)))
        kept = 0
        while not result["passed"] and kept + group <= MAX_FLOAT_SHARE * len(ranking):
            kept += group
            log(f"INT8 below its gate ({describe_gate(result)}): keeping the {kept} most sensitive of "
                f"{len(ranking)} convolutions in float")
            extra = quantize_int8(source, target, images, size=size, keep_float=ranking[:kept])
            result = gate(target)
            attempts.append(_attempt(kept, result))
        extra["fallback"] = {"ranked_convs": len(ranking), "group": group, "attempts": attempts,
                             "sensitivity": f"class-score error removed by each convolution back in FP32, on "
                                            f"{min(len(images), SENSITIVITY_IMAGES)} calibration images"}
    if result["passed"]:
        extra["speedup_vs_fp32"] = {"value": measure_speedup(source, target, size), "size": list(size),
                                    "backend": "onnxruntime CPU, batch 1, at export"}
    return extra, result


# -- the exporter's side: the gate against the bundle's FP32 ONNX, and the refusal --------------


def gate_int8(staging: Path, manifest: Manifest, fmt: str, int8: Int8Options, log, candidate=None,
               formats: Sequence[str] = ()) -> dict:
    """The INT8 artifact ``fmt`` (or backend ``candidate``) against the bundle's FP32 ONNX
    on held-out images; refused with the gate's numbers and the formats without ``fmt``."""
    from reminder.export.quantize import quality_gate

    result = quality_gate(open_artifact(staging, manifest, "onnx"),
                          candidate or open_artifact(staging, manifest, fmt), int8.gate,
                          num_classes=len(manifest.classes), min_agreement=int8.min_agreement,
                          max_miou_drop=int8.max_miou_drop, spec=manifest.input)
    result["images_from"] = int8.gate_source
    manifest.record_parity(fmt, {**result, "reference": "onnx", "threshold": int8.min_agreement})
    if candidate is None:
        refuse_below_gate(fmt, result, formats or manifest.formats, log)
    return result


def refuse_below_gate(fmt: str, result: dict, formats: Sequence[str], log) -> None:
    from reminder.export.quantize import Int8GateError, describe_gate

    log(f"quality gate {fmt}: {describe_gate(result)}")
    if not result["passed"]:
        rest = ",".join(f for f in formats if f != fmt) or "onnx"
        raise Int8GateError(f"the {fmt} model is below its quality gate: {describe_gate(result)}; no bundle written. "
                            f"Export the other formats without it (`format` {rest}), or lower the gate "
                            f"(`int8_min_agreement`, `int8_max_miou_drop`)", result)


def quantize_gated(staging: Path, manifest: Manifest, path: Path, int8: Int8Options, formats: Sequence[str],
                    log) -> dict:
    """The INT8 ONNX, gated, with the accuracy-aware fallback (export.int8_fallback)."""
    from reminder.runtime.backends import OrtBackend

    size = manifest.input.size

    def gate(candidate: Path) -> dict:
        backend = OrtBackend(candidate, providers=["CPUExecutionProvider"])
        return gate_int8(staging, manifest, "onnx-int8", int8, log, candidate=backend)

    extra, result = quantize_with_fallback(staging / "model.onnx", path, int8.calibration, size=size, gate=gate,
                                           log=log)
    refuse_below_gate("onnx-int8", result, formats, log)
    extra["calibration"] = {**int8.source, "size": list(size)}
    return extra
