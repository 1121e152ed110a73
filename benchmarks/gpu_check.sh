#!/usr/bin/env bash
# The GPU check in one call, from the repository root, inside the project's .venv (installs nothing):
#
#   bash benchmarks/gpu_check.sh            # GPU: pytest -m gpu, then Trainer / accelerate loop / bare loop on sst2
#                                           # in fp32, bf16 and fp16 -> benchmarks/results/gpu_check.json (~3-5 min)
#   bash benchmarks/gpu_check.sh --smoke    # tiny sizes on whatever device there is (a CPU here: ~2 min)
#   bash benchmarks/gpu_check.sh --epochs 20 --batch-size 2048   # extra options go to benchmarks/gpu_check.py
#
# Data: $HF_GRU_SHARED_DATA/sst2, else ./shared/data/sst2, else ../shared/data/sst2.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PYTHON="${PYTHON:-.venv/bin/python}"

if [[ -z "${HF_GRU_SHARED_DATA:-}" ]]; then
  for candidate in shared/data ../shared/data; do
    if [[ -d "$candidate/sst2" ]]; then
      HF_GRU_SHARED_DATA="$(cd "$candidate" && pwd)"
      break
    fi
  done
fi
if [[ -z "${HF_GRU_SHARED_DATA:-}" || ! -d "$HF_GRU_SHARED_DATA/sst2" ]]; then
  echo "gpu_check: no sst2 data; set HF_GRU_SHARED_DATA to the folder that holds sst2/" >&2
  exit 2
fi
export HF_GRU_SHARED_DATA HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false

args=(--data "$HF_GRU_SHARED_DATA/sst2")
if [[ "${1:-}" == "--smoke" ]]; then
  shift
  export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"  # shared small CPUs: one thread per process is the fast setting
  args+=(--preset small --model-option=--embedding_size=64 --model-option=--hidden_size=64
         --model-option=--vocab_size=4000 --batch-size 64 --epochs 3 --warmup-epochs 1 --max-train-samples 640
         --workers 0 --out benchmarks/results/gpu_check_smoke.json)
else
  if ! "$PYTHON" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    "$PYTHON" -c "import torch; print(f'gpu_check: torch {torch.__version__} (CUDA {torch.version.cuda}) sees no GPU; '
                  'a CPU build of torch in .venv cannot use one. Use --smoke for a CPU run.')" >&2
    exit 2
  fi
  args+=(--device cuda)
fi
exec "$PYTHON" benchmarks/gpu_check.py "${args[@]}" "$@"
