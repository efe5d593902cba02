"""INT8 ONNX: static QDQ quantisation with ONNX Runtime, calibrated on the step's own images.

What is quantised, and how (the choices a probe on x86 CPUs measured, docs/benchmarks.md):

- the convolutions only (``op_types_to_quantize=["Conv"]``): activations U8 (asymmetric),
  weights S8 per output channel, in QDQ form (a plain ONNX graph that ONNX Runtime,
  OpenVINO and TensorRT all read). ORT's default S8 activations leave half the
  convolutions unfused on x86 and run slower than FP32. Quantising the element-wise ops
  too (MobileNetV3's hard-swish and squeeze-excitation products) cost accuracy, for a
  little speed (docs/edge.md);
- the in-graph normalisation (everything between ``images`` and the first convolution)
  and the tail from the classifier convolution on (upsampling, argmax, confidence) stay
  FP32: they are cheap, and the tail decides the labels;
- ranges from the 99.99th percentile of each activation's histogram over every
  calibration image. MinMax let a few outliers widen the scales: on the trained SynthVOC
  MobileNetV3, it agreed with FP32 on 96.9% of the pixels of held-out training images,
  against 98.4% for this choice (benchmarks.md).

Three traps of ONNX Runtime 1.32 this module steps around (each has a test):

- ``quant_pre_process`` fails in symbolic shape inference on ``torch.onnx`` dynamo exports
  ("Incomplete symbolic shape inference"): it runs with ``skip_symbolic_shape=True``;
- ``CalibMaxIntermediateOutputs`` clears the collected outputs when its limit is reached
  without computing their ranges, so images are silently dropped. It is never set; memory is
  bounded with ``CalibStridedMinMax`` instead (despite its name, any calibrator): one image
  per stride, each stride's histograms merged into the running ones;
- ``quantize_static``'s defaults (S8 activations) are the slow variant: types are explicit.
"""

from __future__ import annotations

import contextlib
import io
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from reminder.contracts.manifest import InputSpec
from reminder.errors import ReminderError
from reminder.runtime.backends import output_labels

DEFAULT_CALIBRATION_IMAGES = 32
PERCENTILE = 99.99


@dataclass
class Int8Options:
    """What an INT8 export needs: calibration images (HWC uint8 RGB) and where they came
    from (recorded in the manifest), and the quality gate's held-out ``(image, labels or
    None)`` and limits."""

    calibration: list
    source: dict
    gate: list = field(default_factory=list)
    min_agreement: float = 0.99
    max_miou_drop: float = 1.0
    gate_source: str = "held-out images"  # what the gate images are, as the messages and manifest say


class Int8GateError(ReminderError):
    """An INT8 model below its quality gate, even after the accuracy-aware fallback; the
    gate's numbers are in ``result``."""

    def __init__(self, message: str, result: dict):
        super().__init__(message)
        self.result = result


def calibration_inputs(spec: InputSpec | tuple[int, int], images: Sequence[np.ndarray]) -> list[np.ndarray]:
    """HWC uint8 RGB images -> ``(1, 3, h, w)`` float32 0..255 at the deploy size, prepared
    as the runtime prepares frames (:meth:`InputSpec.to_batch`: letterboxed, padded in the
    mean colour), so the activation ranges are those the deployed model sees."""
    spec = spec if isinstance(spec, InputSpec) else InputSpec(*spec)
    return spec.to_inputs(images)


class _Reader:
    """A calibration data reader over prepared inputs, with the ``set_range`` that
    ``CalibStridedMinMax`` drives."""

    def __init__(self, inputs: list[np.ndarray]):
        self.inputs, self.start, self.end, self.position = inputs, 0, len(inputs), 0

    def __len__(self) -> int:
        return len(self.inputs)

    def set_range(self, start_index: int, end_index: int) -> None:
        self.start, self.end, self.position = start_index, min(end_index, len(self.inputs)), start_index

    def get_next(self):
        if self.position >= self.end:
            return None
        self.position += 1
        return {"images": self.inputs[self.position - 1]}

    def rewind(self) -> None:
        self.position = self.start


def fp32_nodes(model) -> list[str]:
    """Names of the nodes kept in FP32: those reached from the input without passing a
    convolution (normalisation, shape arithmetic), and the classifier convolution (the
    last convolution before the outputs) with everything after it."""
    nodes = list(model.graph.node)
    consumers: dict[str, list] = {}
    for node in nodes:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    producers = {out: node for node in nodes for out in node.output}
    convs = [n for n in nodes if n.op_type == "Conv"]
    if not convs:
        raise ReminderError("the ONNX graph has no convolution to quantise")
    keep: dict[str, object] = {}

    def walk_down(names, stop_at_conv: bool) -> None:
        stack = list(names)
        while stack:
            for node in consumers.get(stack.pop(), []):
                if node.name in keep or (stop_at_conv and node.op_type == "Conv"):
                    continue
                keep[node.name] = node
                stack.extend(node.output)

    walk_down([i.name for i in model.graph.input], stop_at_conv=True)
    head = _classifier_conv(model, producers)
    keep[head.name] = head
    walk_down(head.output, stop_at_conv=False)
    return list(keep)


def _classifier_conv(model, producers):
    """The convolution nearest the outputs: walk up from the outputs to the first Conv."""
    stack, seen = [o.name for o in model.graph.output], set()
    while stack:
        node = producers.get(stack.pop())
        if node is None or node.name in seen:
            continue
        seen.add(node.name)
        if node.op_type == "Conv":
            return node
        stack.extend(node.input)
    raise ReminderError("no convolution feeds the ONNX graph's outputs")


@contextlib.contextmanager
def prepared_model(source: str | Path):
    """``source`` after ONNX Runtime's pre-processing for quantisation, in a temporary file."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    with tempfile.TemporaryDirectory(prefix="reminder-int8-") as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True)
        yield prepared


def quantize_int8(source: str | Path, target: str | Path, images: Sequence[np.ndarray], *,
                  size: tuple[int, int], keep_float: Sequence[str] = ()) -> dict:
    """Write the INT8 QDQ model of FP32 ``source`` to ``target``, calibrated on ``images``
    (HWC uint8 RGB) resized to ``size``; the convolutions named in ``keep_float`` stay FP32
    too (the accuracy-aware fallback). Returns what the manifest records about it."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    if len(images) == 0:
        raise ReminderError("an INT8 export needs calibration images (the step's training images, or "
                            "`calibration_images` DIR): the activation ranges are measured on them")
    inputs = calibration_inputs(size, images)
    with prepared_model(source) as prepared:
        tmp = prepared.parent
        excluded = list(dict.fromkeys(fp32_nodes(onnx.load(str(prepared))) + list(keep_float)))
        try:
            with contextlib.redirect_stdout(io.StringIO()):  # the histogram calibrator prints its settings
                quantize_static(str(prepared), str(Path(tmp) / "int8.onnx"), _Reader(inputs),
                                quant_format=QuantFormat.QDQ, activation_type=QuantType.QUInt8,
                                weight_type=QuantType.QInt8, per_channel=True, op_types_to_quantize=["Conv"],
                                calibrate_method=CalibrationMethod.Percentile, nodes_to_exclude=excluded,
                                extra_options={"CalibStridedMinMax": 1, "CalibPercentile": PERCENTILE,
                                               "ActivationSymmetric": False, "WeightSymmetric": True})
        except Exception as error:  # onnxruntime.quantization raises many types
            raise ReminderError(f"INT8 quantisation of {Path(source).name} failed: "
                                f"{str(error).splitlines()[0] if str(error) else type(error).__name__}") from None
        model = onnx.load(str(Path(tmp) / "int8.onnx"))
    source_model = onnx.load(str(source), load_external_data=False)
    for entry in source_model.metadata_props:  # the bundle's metadata travels with the INT8 model
        model.metadata_props.add().CopyFrom(entry)
    from reminder.io import atomic_write

    atomic_write(Path(target), lambda tmp_path: onnx.save_model(model, str(tmp_path)))
    from reminder.export.int8_fallback import quantized_convs

    counts = {op: sum(n.op_type == op for n in model.graph.node) for op in ("QuantizeLinear", "DequantizeLinear")}
    return {"precision": "int8", "format": "QDQ", "activations": "uint8 per-tensor", "weights": "int8 per-channel",
            "calibration_method": f"percentile {PERCENTILE}", "quantized_ops": ["Conv"], "fp32_nodes": len(excluded),
            "quantize_nodes": counts["QuantizeLinear"], "dequantize_nodes": counts["DequantizeLinear"],
            "int8_convs": len(quantized_convs(model)), "float_convs": list(keep_float)}


def quality_gate(reference, candidate, samples: Sequence[tuple[np.ndarray, np.ndarray | None]], *,
                 num_classes: int, min_agreement: float = 0.99, max_miou_drop: float = 1.0,
                 ignore_index: int = 255, spec: InputSpec | None = None) -> dict:
    """Compare backend ``candidate`` (INT8) with ``reference`` (the FP32 model of the same
    bundle) on held-out ``samples`` ``(image HWC uint8 RGB, labels or None)``, each at its
    own size: the share of pixels with the same label, and, where labels exist, the mIoU of
    both against them (points; the drop is FP32 minus INT8). ``passed`` when the agreement
    is at least ``min_agreement`` and the drop at most ``max_miou_drop``."""
    if not samples:
        raise ReminderError("the INT8 quality gate needs held-out images")
    same = total = 0
    confusion = {name: np.zeros((num_classes, num_classes), dtype=np.int64) for name in ("fp32", "int8")}
    labelled = 0
    spec = spec or InputSpec(*samples[0][0].shape[:2])
    for image, labels in samples:
        [batch] = spec.to_inputs([image], resize="none")  # each at its own size, as its labels are
        predicted = {"fp32": output_labels(reference(batch))[0], "int8": output_labels(candidate(batch))[0]}
        same += int((predicted["fp32"] == predicted["int8"]).sum())
        total += predicted["fp32"].size
        if labels is not None:
            labelled += 1
            valid = (labels != ignore_index) & (labels < num_classes)
            truth = labels[valid].astype(np.int64)
            for name, pred in predicted.items():
                confusion[name] += np.bincount(truth * num_classes + pred[valid].astype(np.int64),
                                               minlength=num_classes ** 2).reshape(num_classes, num_classes)
    result = {"images": len(samples), "pixels": total, "pixel_agreement": same / max(total, 1),
              "min_agreement": min_agreement, "labelled_images": labelled}
    passed = result["pixel_agreement"] >= min_agreement
    if labelled:
        miou = {name: 100 * _miou(matrix) for name, matrix in confusion.items()}
        drop = miou["fp32"] - miou["int8"]
        result.update({"miou_fp32": round(miou["fp32"], 3), "miou_int8": round(miou["int8"], 3),
                       "miou_drop": round(drop, 3), "max_miou_drop": max_miou_drop})
        passed = passed and drop <= max_miou_drop
    result["passed"] = passed
    return result


def describe_gate(result: dict) -> str:
    text = f"{100 * result['pixel_agreement']:.2f}% of pixels agree with FP32 (at least " \
           f"{100 * result['min_agreement']:.2f}% needed)"
    if "miou_drop" in result:
        text += f", mIoU {result['miou_fp32']:.2f} -> {result['miou_int8']:.2f} (drop {result['miou_drop']:.2f} " \
                f"points, at most {result['max_miou_drop']:.2f} allowed)"
    return text + f" on {result['images']} {result.get('images_from', 'held-out images')}"


def _miou(confusion: np.ndarray) -> float:
    """Mean IoU over the classes present in the labels or the predictions."""
    intersection = np.diag(confusion).astype(np.float64)
    union = confusion.sum(0) + confusion.sum(1) - intersection
    present = union > 0
    return float((intersection[present] / union[present]).mean()) if present.any() else 0.0
