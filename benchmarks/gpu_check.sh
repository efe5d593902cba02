#!/usr/bin/env bash
# One call for the checks that need a CUDA GPU, for the sessions that are lent one:
#   bash benchmarks/gpu_check.sh OUT_DIR        (or: make gpu-check OUT=OUT_DIR)
# It installs onnxruntime-gpu and TensorRT into .venv (when the index is reachable), runs
# the gpu- and tensorrt-marked tests, then the GPU rows of the training benchmark and the
# stream benchmark, writing one JSON (or XML) per part into OUT_DIR. Each part is bounded
# in time; a part that fails is recorded and the others still run.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:?usage: benchmarks/gpu_check.sh OUT_DIR}
mkdir -p "$out"
py=.venv/bin/python
[ -x "$py" ] || make setup >/dev/null
status="$out/status.txt"
: > "$status"
part() {  # part NAME SECONDS COMMAND...: run, bounded, record the exit code
  local name=$1 limit=$2; shift 2
  timeout "$limit" "$@" > "$out/$name.log" 2>&1
  echo "$name $?" | tee -a "$status"
}
"$py" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" \
  || { echo "no CUDA device visible to torch: nothing to check" | tee -a "$status"; exit 1; }
nvidia-smi --query-gpu=name,compute_cap,driver_version --format=csv > "$out/gpu.csv" 2>&1
part install 180 "$py" -m pip install -q "onnxruntime-gpu>=1.27" "tensorrt>=10,<12"
part tests 300 "$py" -m pytest -q -p no:cacheprovider -m "gpu or tensorrt" -ra --junitxml "$out/gpu-tests.xml"
part train_speed_fp32 60 sh -c "$py benchmarks/train_speed.py --device cuda --backbones resnet101 --batch-size 8 \
  --iterations 5 > $out/train_speed_fp32.json"
part train_speed_bf16 60 sh -c "$py benchmarks/train_speed.py --device cuda --backbones resnet101 --batch-size 8 \
  --iterations 5 --amp bf16 --channels-last > $out/train_speed_bf16_channels_last.json"
part stream 120 sh -c "$py benchmarks/stream.py --frames 200 > $out/stream.json"
cat "$status"
