"""The ``model.py`` that ``reminder triton add --platform python`` writes into every version
folder: Triton's Python backend running ``model.onnx`` beside it with ONNX Runtime (for
servers without the onnxruntime backend, such as the tritonserver of the ``nvidia-pytriton``
wheel). It is kept here as text: it runs inside the server, imports nothing from reminder,
and needs numpy and onnxruntime in the server's Python. ``REMINDER_TRITON_SITE`` (a path
list, set by ``reminder triton serve``) adds a Python environment's site-packages.
"""

SOURCE = '''"""reminder bundle on Triton's Python backend: model.onnx beside this file, run with ONNX Runtime."""

import os
import sys

sys.path[:0] = [p for p in os.environ.get("REMINDER_TRITON_SITE", "").split(os.pathsep) if p]

import numpy as np  # noqa: E402
import onnxruntime  # noqa: E402
import triton_python_backend_utils as pb_utils  # noqa: E402


def _tensor(name, array):
    return pb_utils.Tensor(name, np.ascontiguousarray(array))


class TritonPythonModel:
    def initialize(self, args):
        folder = os.path.join(args["model_repository"], args["model_version"])
        options = onnxruntime.SessionOptions()
        threads = os.environ.get("REMINDER_TRITON_THREADS")
        if threads:
            options.intra_op_num_threads = int(threads)
        self.session = onnxruntime.InferenceSession(os.path.join(folder, "model.onnx"), sess_options=options,
                                                    providers=["CPUExecutionProvider"])
        self.outputs = [o.name for o in self.session.get_outputs()]

    def execute(self, requests):
        """One ONNX Runtime call per input shape in the dynamic batch, split back per request."""
        images = [pb_utils.get_input_tensor_by_name(r, "images").as_numpy() for r in requests]
        results = [None] * len(requests)
        by_shape = {}
        for i, batch in enumerate(images):
            by_shape.setdefault(batch.shape[1:], []).append(i)
        for members in by_shape.values():
            stacked = np.concatenate([images[i] for i in members]).astype(np.float32, copy=False)
            outputs = dict(zip(self.outputs, self.session.run(None, {"images": stacked})))
            start = 0
            for i in members:
                count = images[i].shape[0]
                results[i] = pb_utils.InferenceResponse([_tensor(name, outputs[name][start:start + count])
                                                         for name in ("labels", "confidence")])
                start += count
        return results
'''
