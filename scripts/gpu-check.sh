#!/usr/bin/env bash
# One prepared run of everything trtq can only check on an NVIDIA GPU, for a session lent one:
#   1. every test marked gpu or ngc (tests/gating.py; they skip with a reason elsewhere),
#   2. sensitivity on CUDA in bf16, whole model and block-sequential (and the same on the CPU in float32,
#      to compare), a plan from a roofline profile, quantize and eval on CUDA,
#   3. the CUDA profile of one GEMM table (the measured kernels of the GPU in hand).
# Everything it measures goes to $OUT (default: gpu-check-out/); a step that fails is recorded there
# and the script goes on, so one run answers as much as it can. Exit status: the number of failed steps.
#
#   OUT=/some/dir scripts/gpu-check.sh            # from the repository root, in the project's venv
set -u
cd "$(dirname "$0")/.."
OUT="${OUT:-gpu-check-out}"
PY="${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python )}"
mkdir -p "$OUT"
failed=0
step() {  # step NAME COMMAND...: run, log to $OUT/NAME.log, note the status
  local name="$1"; shift
  local started=$(date +%s)
  "$@" >"$OUT/$name.log" 2>&1
  local rc=$?
  echo "$name rc=$rc seconds=$(( $(date +%s) - started ))" | tee -a "$OUT/summary.txt"
  [ "$rc" -eq 0 ] || failed=$((failed + 1))
}

"$PY" -c "import torch; assert torch.cuda.is_available(), 'no CUDA'; print(torch.cuda.get_device_name(0))" \
  >"$OUT/device.txt" 2>&1 || { echo "no CUDA device: nothing to check" | tee "$OUT/summary.txt"; exit 1; }
nvidia-smi >"$OUT/nvidia-smi.txt" 2>&1 || true

step gated-tests "$PY" -m pytest -m "gpu or ngc" -ra -q tests
step sens-output-cuda "$PY" -m trtq sensitivity smollm2-135m --method output --device cuda --dtype bfloat16 \
  --samples 8 --seq-len 512 -o "$OUT/sens-output-cuda.json"
step sens-output-seq-cuda "$PY" -m trtq sensitivity smollm2-135m --method output --sequential --device cuda \
  --dtype bfloat16 --samples 8 --seq-len 512 -o "$OUT/sens-output-seq-cuda.json"
step sens-output-cpu "$PY" -m trtq sensitivity smollm2-135m --method output --samples 8 --seq-len 512 \
  -o "$OUT/sens-output-cpu.json"
step sens-fisher-cuda "$PY" -m trtq sensitivity smollm2-135m --method fisher --device cuda --dtype bfloat16 \
  -o "$OUT/sens-fisher-cuda.json"
step sens-hessian-cuda "$PY" -m trtq sensitivity smollm2-135m --method hessian --device cuda --dtype float32 \
  -o "$OUT/sens-hessian-cuda.json"
# The same two tables block by block (they must equal the two above within float rounding)
step sens-fisher-seq-cuda "$PY" -m trtq sensitivity smollm2-135m --method fisher --sequential --device cuda \
  --dtype bfloat16 -o "$OUT/sens-fisher-seq-cuda.json"
step sens-hessian-seq-cuda "$PY" -m trtq sensitivity smollm2-135m --method hessian --sequential --device cuda \
  --dtype float32 -o "$OUT/sens-hessian-seq-cuda.json"
step profile-roofline "$PY" -m trtq profile smollm2-135m --backend roofline --gpu H100-SXM --tokens 1,16,2048 \
  -o "$OUT/profile-roofline.json"
step profile-cuda "$PY" -m trtq profile smollm2-135m --backend cuda --gpu auto -o "$OUT/profile-cuda.json"
step plan "$PY" -m trtq plan smollm2-135m --profile "$OUT/profile-roofline.json" \
  --sensitivity "$OUT/sens-output-cuda.json" --gpu H100-SXM --budget decode@16=0.6 -o "$OUT/plan.yaml"
step quantize-cuda "$PY" -m trtq quantize smollm2-135m --plan "$OUT/plan.yaml" --device cuda --dtype bfloat16 \
  -o "$OUT/engine"
step quantize-seq-cuda "$PY" -m trtq quantize smollm2-135m --plan "$OUT/plan.yaml" --device cuda --dtype bfloat16 \
  --sequential -o "$OUT/engine-seq"
step eval-checkpoint-seq-cuda "$PY" -m trtq eval smollm2-135m --checkpoint "$OUT/engine-seq" --device cuda \
  --dtype bfloat16 -o "$OUT/eval-checkpoint-seq-cuda.json"
step eval-checkpoint-streamed-cuda "$PY" -m trtq eval smollm2-135m --checkpoint "$OUT/engine-seq" --sequential \
  --device cuda --dtype bfloat16 -o "$OUT/eval-checkpoint-streamed-cuda.json"
step eval-plan-seq-cuda "$PY" -m trtq eval smollm2-135m --plan "$OUT/plan.yaml" --sequential --device cuda \
  --dtype bfloat16 -o "$OUT/eval-plan-seq-cuda.json"
step eval-plan-cuda "$PY" -m trtq eval smollm2-135m --plan "$OUT/plan.yaml" --device cuda --dtype bfloat16 \
  -o "$OUT/eval-plan-cuda.json"
step eval-checkpoint-cuda "$PY" -m trtq eval smollm2-135m --checkpoint "$OUT/engine" --device cuda \
  --dtype bfloat16 -o "$OUT/eval-checkpoint-cuda.json"
step bench-scale "$PY" benchmarks/scale.py --device cuda --dtype bfloat16 --depths 8,32 --repeats 1 --moe-blocks 4 --samples 8 --seq-len 512 \
  --modes output-whole,output-sequential,fisher-whole,fisher-sequential,hessian-sequential,quantize-whole,quantize-sequential,eval-whole,eval-sequential
echo "failed steps: $failed" | tee -a "$OUT/summary.txt"
exit "$failed"
