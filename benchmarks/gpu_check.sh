#!/usr/bin/env bash
# One call for the checks that need a CUDA GPU, for the sessions that are lent one:
#   bash benchmarks/gpu_check.sh OUT_DIR        (or: make gpu-check OUT=OUT_DIR)
# It installs onnxruntime-gpu and TensorRT into .venv (from the index, or from wheels in
# $WHEELS when the machine has no internet), runs the gpu- and tensorrt-marked tests, then
# the GPU rows of the training benchmark (fp32 eager, bf16 + channels-last, torch.compile),
# of the export latency benchmark (ORT CUDA, TensorRT FP16 and INT8, AOTInductor CUDA) and
# the stream benchmark, writing one JSON (or XML) per part into OUT_DIR, within 10 minutes
# in all. Each part is bounded in time; a part that fails is recorded and the others run.
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
find_links=${WHEELS:+--find-links $WHEELS}
part install 90 "$py" -m pip install -q $find_links "onnxruntime-gpu>=1.27" "tensorrt>=10,<12"
part tests 210 "$py" -m pytest -q -p no:cacheprovider -m "gpu or tensorrt" -ra --junitxml "$out/gpu-tests.xml"
part train_speed_fp32 40 sh -c "$py benchmarks/train_speed.py --device cuda --backbones resnet101 --batch-size 8 \
  --iterations 5 > $out/train_speed_fp32.json"
part train_speed_bf16 40 sh -c "$py benchmarks/train_speed.py --device cuda --backbones resnet101 --batch-size 8 \
  --iterations 5 --amp bf16 --channels-last > $out/train_speed_bf16_channels_last.json"
part train_speed_compile 40 sh -c "$py benchmarks/train_speed.py --device cuda --backbones resnet101 --batch-size 8 \
  --iterations 5 --amp bf16 --channels-last --compile --methods plop reminder > $out/train_speed_compile.json"
part export_latency 120 sh -c "$py benchmarks/export_latency.py --backbones mobilenet_v3_large resnet101 \
  --backends ort ort-cuda trt-fp16 trt-int8 aoti-cuda --sizes 512 --repeats 20 > $out/export_latency.json"
part stream 50 sh -c "$py benchmarks/stream.py --frames 200 > $out/stream.json"
cat "$status"
