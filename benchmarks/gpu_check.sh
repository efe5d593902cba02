#!/usr/bin/env bash
# One call for the checks that need a CUDA GPU, for the sessions that are lent one:
#   bash benchmarks/gpu_check.sh OUT_DIR        (or: make gpu-check OUT=OUT_DIR)
# It installs onnxruntime-gpu and TensorRT into the Python it runs (from the index, from
# wheels in $WHEELS, or not at all with INSTALL=0, for a machine that has them or has no
# network), runs the gpu- and tensorrt-marked tests, then the GPU rows of the training
# benchmark (fp32 eager, bf16 + channels-last, torch.compile), of the export latency
# benchmark (ORT CUDA, TensorRT FP16 and INT8, AOTInductor CUDA) and the stream benchmark,
# writing one JSON (or XML) per part into OUT_DIR, within 10 minutes in all. Each part is
# bounded in time; a part that fails is recorded and the others run.
#   PY=python3 INSTALL=0 bash benchmarks/gpu_check.sh OUT_DIR   # a machine's own Python
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:?usage: benchmarks/gpu_check.sh OUT_DIR}
mkdir -p "$out"
py=${PY:-.venv/bin/python}
if [ "$py" = .venv/bin/python ] && [ ! -x "$py" ]; then make setup >/dev/null; fi
# the repository's code, whichever Python runs it (a machine's own Python has no editable install)
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
status="$out/status.txt"
: > "$status"
part() {  # part NAME SECONDS COMMAND...: run, bounded, record the exit code
  local name=$1 limit=$2; shift 2
  local began=$SECONDS
  timeout "$limit" "$@" > "$out/$name.log" 2>&1
  echo "$name $? $((SECONDS - began))s" | tee -a "$status"
}
"$py" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" \
  || { echo "no CUDA device visible to torch: nothing to check" | tee -a "$status"; exit 1; }
nvidia-smi --query-gpu=name,compute_cap,driver_version,memory.total --format=csv > "$out/gpu.csv" 2>&1
if [ "${INSTALL:-1}" = 1 ]; then
  find_links=${WHEELS:+--find-links $WHEELS}
  part install 90 "$py" -m pip install -q $find_links "onnxruntime-gpu>=1.27" "tensorrt>=10,<12"
else
  echo "install skipped (INSTALL=0)" | tee -a "$status"
fi
# ONNX Runtime's CUDA provider loads the CUDA libraries that torch's nvidia-* wheels carry
libs=$("$py" -c "import glob, os, site
dirs = {os.path.dirname(p) for s in site.getsitepackages() for p in glob.glob(s + '/nvidia/**/lib*.so*', recursive=True)}
print(':'.join(sorted(dirs)))" 2>/dev/null)
export LD_LIBRARY_PATH="${libs}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
"$py" - > "$out/versions.json" 2>&1 <<'PYEOF'
import json, platform, sys
import torch
versions = {"python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda,
            "cudnn": torch.backends.cudnn.version(), "gpu": torch.cuda.get_device_name(0)}
for name in ("onnxruntime", "onnx", "onnxscript", "tensorrt", "torchvision"):
    try:
        module = __import__(name)
        versions[name] = getattr(module, "__version__", "?")
    except Exception as error:
        versions[name] = f"not importable: {type(error).__name__}: {error}"[:200]
try:
    import onnxruntime
    versions["ort_providers"] = onnxruntime.get_available_providers()
except Exception:
    pass
print(json.dumps(versions, indent=2))
PYEOF
cat "$out/versions.json"
part tests 190 "$py" -m pytest -q -p no:cacheprovider -m "gpu or tensorrt" -ra --junitxml "$out/gpu-tests.xml"
part export_latency 150 sh -c "$py benchmarks/export_latency.py --backbones mobilenet_v3_large resnet101 \
  --backends ort ort-cuda trt-fp16 trt-int8 aoti-cuda --sizes 512 --repeats 20 > $out/export_latency.json"
part stream 90 sh -c "$py benchmarks/stream.py --frames 200 --starts 3 --rounds 2 > $out/stream.json"
part train_speed_fp32 25 sh -c "$py benchmarks/train_speed.py --device cuda --backbones resnet101 --batch-size 8 \
  --iterations 5 > $out/train_speed_fp32.json"
part train_speed_bf16 25 sh -c "$py benchmarks/train_speed.py --device cuda --backbones resnet101 --batch-size 8 \
  --iterations 5 --amp bf16 --channels-last > $out/train_speed_bf16_channels_last.json"
part train_speed_compile 90 sh -c "$py benchmarks/train_speed.py --device cuda --backbones resnet101 --batch-size 8 \
  --iterations 5 --amp bf16 --channels-last --compile --methods plop reminder > $out/train_speed_compile.json"
cat "$status"
