"""DeepStream configuration for a bundle (``reminder triton deepstream-config``).

- ``nvinferserver``: DeepStream's Triton plugin on the model that ``reminder triton add``
  put in a repository (local repository, or gRPC to a running server). The graph already
  outputs ``labels`` and ``confidence`` (B, H, W), so the plugin's post-processing is
  ``other`` and the tensors are attached as tensor meta for the application to read.
- ``nvinfer``: TensorRT through DeepStream's own plugin, on a bundle exported with
  ``--output logits``: a segmentation network (``network-type=2``) whose output blob is
  ``logits`` (K, H, W), which nvinfer turns into a class map itself.

Both feed the graph what it expects: RGB in 0..255 (the mean and standard deviation are
applied inside it), letterboxed to the bundle's input size.
"""

from __future__ import annotations

from pathlib import Path

from reminder.bundle import open_bundle
from reminder.errors import ReminderError
from reminder.io import atomic_write_text

MODES = ("nvinferserver", "nvinfer")


def deepstream_config(bundle: str | Path, out: str | Path, *, mode: str = "nvinferserver", repo: str | None = None,
                      grpc_url: str | None = None, max_batch_size: int = 8, gpu_id: int = 0) -> Path:
    """Write the plugin's configuration for ``bundle`` into folder ``out``; return its path."""
    if mode not in MODES:
        raise ReminderError(f"unknown `mode` {mode!r}; expected one of {', '.join(MODES)}")
    folder, manifest = open_bundle(bundle)
    height, width = manifest.input.size
    names = list(manifest.class_names)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    labels = out / "labels.txt"
    atomic_write_text(labels, "\n".join(names) + "\n")
    if mode == "nvinfer":
        if manifest.outputs.kind != "logits":
            raise ReminderError(f"nvinfer reads class scores: export {folder} again with `output` logits "
                                f"(reminder export --output logits), or use mode nvinferserver")
        onnx = folder / manifest.artifact("onnx").path
        text = "\n".join([
            "[property]", f"gpu-id={gpu_id}", "net-scale-factor=1.0", "offsets=0;0;0",
            "model-color-format=0", f"onnx-file={onnx.resolve()}", f"infer-dims=3;{height};{width}",
            f"batch-size={max_batch_size}", "network-mode=0", "network-type=2",
            f"num-detected-classes={len(names)}", "output-blob-names=logits", "segmentation-threshold=0.0",
            "maintain-aspect-ratio=1", "symmetric-padding=1", "process-mode=1", "gie-unique-id=1",
            f"labelfile-path={labels.resolve()}", ""])
        path = out / "config_infer_nvinfer.txt"
    else:
        if repo is None and grpc_url is None:
            raise ReminderError("nvinferserver needs the model repository (`repo`) or a running server (`grpc_url`)")
        where = (f'grpc {{ url: "{grpc_url}" }}' if grpc_url
                 else f'model_repo {{ root: "{Path(repo).resolve()}" strict_model_config: true }}')
        text = "\n".join([
            "infer_config {", "  unique_id: 1", f"  gpu_ids: [{gpu_id}]", f"  max_batch_size: {max_batch_size}",
            "  backend {", f'    triton {{ model_name: "{manifest.name}" version: -1 {where} }}',
            "    output_mem_type: MEMORY_TYPE_CPU", "  }",
            "  preprocess {", "    network_format: IMAGE_FORMAT_RGB", "    tensor_order: TENSOR_ORDER_LINEAR",
            "    maintain_aspect_ratio: 1", "    symmetric_padding: 1",
            "    normalize { scale_factor: 1.0 channel_offsets: [0, 0, 0] }", "  }",
            "  postprocess { labelfile_path: \"" + str(labels.resolve()) + "\" other {} }", "}",
            "input_control { process_mode: PROCESS_MODE_FULL_FRAME interval: 0 }",
            "output_control { output_tensor_meta: true }", ""])
        path = out / "config_infer_triton.txt"
    atomic_write_text(path, text)
    return path
