#!/usr/bin/env bash
# A larger sudoku model on a lent GPU, as one prepared command (the device tool's `run`, ~10 minutes in all).
#
# Here, on the CPU machine, first (about 10 minutes on 2 cores; the GPU's minutes then go to training alone):
#   trm-edge train --task sudoku-large -o runs/large --data-only
# Then, through the device tool:
#   run(command="bash training/gpu_run.sh 7.5 runs/large", carry=["runs/large"], timeout_s=600)
# It trains the `sudoku-large` recipe (training/recipes.py) for MINUTES of optimizer steps (fitted to the pace of
# the warm-up; start-up, evaluations and saving add under a minute, and a command may run 10), evaluates on
# held-out puzzles, and copies the model and its log to $OUT. At batch 1024 the recipe needs ~40 GB of GPU memory
# (measured at batch 128 on the CPU: 6.4 GB peak); on a CPU it does not fit in 24 GB. Bring the model back into
# runs/large/model, then judge it on the CPU against the bundled model (benchmarks/RESULTS.md, issue 16: one view
# on the held-out files, top95 at 64 views over three view draws) before shipping it.
# A dry run on a CPU: DEVICE=cpu OUT=/tmp/out bash training/gpu_run.sh 0.2 RUN sudoku (the third argument: a
# recipe name, or a TrainConfig JSON file).
set -euo pipefail
minutes=${1:-7.5}
run=${2:-runs/large}
recipe=(--task "${3:-sudoku-large}")
if [ -f "${3:-}" ]; then recipe=(--config "$3"); fi
: "${OUT:?set OUT to the folder that receives the model}"
# The machine's python holds torch and our other needs; nothing can be installed there. Lay the package out as
# pyproject's package-dir does (the subsystem folders inside the trm_edge namespace) and import it from there.
site=$(mktemp -d)
cp -r trm_edge "$site/"
for d in export runtimes benchmarks training; do cp -r "$d" "$site/trm_edge/$d"; done
export PYTHONPATH="$site" PYTHONUNBUFFERED=1
[ -f "$run/data/pool.npz" ] || echo "gpu_run: $run/data/pool.npz is missing, so the pool is built here, on device" \
  "time; run 'trm-edge train ... -o $run --data-only' on the CPU machine first and carry $run" >&2
if command -v nvidia-smi >/dev/null; then nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv; fi
python3 -c 'import torch; print("torch", torch.__version__, "cuda", torch.cuda.is_available())'
python3 -m trm_edge train "${recipe[@]}" -o "$run" --device "${DEVICE:-cuda}" --minutes "$minutes" 2>&1 \
  | tee "$OUT/train.log"
cp "$run"/model/* "$run"/metrics.jsonl "$OUT"/
ls -l "$OUT"
