#!/usr/bin/env bash
# Reproduces the figures in benchmarks/RESULTS.md on this machine: bash benchmarks/results.sh OUT_DIR
# (the bundled model is used wherever no model is named; timings are noisy on a shared machine: compare rows
# of one run, and read ratios beside absolute times)
# Run it from the repository root: the studies run as `python -m benchmarks.studies.NAME` (benchmarks/studies/).
set -euo pipefail
OUT=${1:-results}
mkdir -p "$OUT"
TOP95=${TOP95:-../shared/data/sudoku/top95.txt}

# accuracy of the bundled model: per givens bucket (builtin held-out files) and on top95, fixed:16 vs learned:0
trm-edge eval --data builtin --halt fixed --halt learned:0 --json > "$OUT/eval-builtin.json"
trm-edge eval --data "$TOP95" --halt fixed --halt learned:0 --json > "$OUT/eval-top95.json"

# export: all three graph forms and the default int8 route, verified and guarded (default budget: 1 pp; since the
# guard holds 512 puzzles it refuses int8-dynamic on this model, which the next export measures unguarded)
trm-edge export -o "$OUT/sudoku-bundle" --graph step,loop,unrolled --quantize int8 --json > "$OUT/export.json"
# the same with every MatMul but the two heads in int8 (no guard): the speed int8 could give, and what it costs
trm-edge export -o "$OUT/sudoku-int8-full" --graph step,loop,unrolled --quantize int8,int8-dynamic --max-drop 100 \
  --json > "$OUT/export-int8-full.json"

# the default bench of the bundled model: every backend, precision, graph form and halting policy, batch 1, 2 threads
trm-edge bench "$OUT/sudoku-bundle" --backend torch,ort --precision fp32,int8,int8-dynamic \
  --graph step,loop,unrolled --halt fixed:16,learned:0 --data builtin -n 64 --batch 1 --threads 2 \
  --out "$OUT/bench-bundled" --json > /dev/null
trm-edge bench "$OUT/sudoku-int8-full" --backend torch,ort --precision fp32,int8,int8-dynamic --graph step,loop,unrolled \
  --halt fixed:16,learned:3 --data builtin -n 64 --batch 1 --threads 2 --out "$OUT/bench-int8-full" --json > /dev/null
# batch 64
trm-edge bench "$OUT/sudoku-int8-full" --backend torch,ort --precision fp32,int8,int8-dynamic --graph step \
  --halt fixed:16,learned:0 --data builtin -n 256 --batch 64 --threads 2 --out "$OUT/bench-bundled-b64" \
  --json > /dev/null
# continuous batching vs plain batches at 64 slots under learned:0
python -m benchmarks.studies.throughput "$OUT/sudoku-bundle" --halt learned:0 --slots 64 -n 512 --threads 2 \
  > "$OUT/throughput.json"

# the official Sudoku-MLP size (5.0M parameters, random weights: latency only)
python -m benchmarks.studies.official_size "$OUT/official-mlp"
trm-edge export "$OUT/official-mlp" -o "$OUT/official-bundle" --graph step,loop,unrolled \
  --quantize int8,int8-dynamic --calib 16 --heldout 32 --max-drop 100 --json > "$OUT/export-official.json"
trm-edge bench "$OUT/official-bundle" --backend torch,ort --precision fp32,int8,int8-dynamic \
  --graph step,loop,unrolled --halt fixed:16 --data builtin -n 6 --batch 1 --threads 2 --warmup 1 \
  --out "$OUT/bench-official" --json > /dev/null
trm-edge bench "$OUT/official-bundle" --backend torch,ort --precision fp32,int8,int8-dynamic --graph step \
  --halt fixed:16 --data builtin -n 64 --batch 64 --threads 2 --warmup 0 --out "$OUT/bench-official-b64" --json > /dev/null

# cold start: session creation + the first 16-step solve of one puzzle, per graph form (fresh process each)
for g in step loop unrolled; do
  python - "$OUT/sudoku-bundle" "$g" <<'PY' >> "$OUT/cold-start.jsonl"
import json, sys, time
t0 = time.perf_counter()
from trm_edge.runtimes import open_solver
s = open_solver(sys.argv[1], "ort", sys.argv[2], threads=2)
t1 = time.perf_counter()
from trm_edge.halting import HaltPolicy  # loaded with the runtime already
fixed = HaltPolicy.parse("fixed", s.config.halt_max_steps)
s.solve(s.codec.parse("4.....8.5.3..........7......2.....6.....8.4......1.......6.3.7.5..2.....1.4......")[None], fixed)
t2 = time.perf_counter()
print(json.dumps({"graph": sys.argv[2], "import_and_session_ms": round(1000 * (t1 - t0), 1),
                  "session_ms": round(s.init_ms, 1), "first_solve_ms": round(1000 * (t2 - t1), 1)}))
PY
done

# the int8 float-by-default choice (q_head, lm_head), measured
python -m benchmarks.studies.int8_defaults "$OUT/sudoku-bundle" --per-module > "$OUT/int8-defaults.json"

# the halting threshold: exact-solve rate vs steps and latency (ORT fp32 loop graph, batch 1)
trm-edge bench "$OUT/sudoku-bundle" --backend ort --precision fp32 --graph loop \
  --halt fixed:16,learned:0,learned:1,learned:2,learned:3,learned:4 --data builtin -n 400 --batch 1 --threads 2 \
  --out "$OUT/bench-threshold" --json > /dev/null

# reliability: 5,000 solves with one loaded solver (resident memory, answers stable)
python -m benchmarks.studies.soak "$OUT/sudoku-bundle" --solves 5000 > "$OUT/soak.json"
# views and verified halting: 1, 4, 16 views under the default policy; top95 at 16 and 64 (ORT step graph, batch 1)
TOP95="${TOP95:-$(dirname "$0")/../../shared/data/sudoku/top95.txt}"
trm-edge eval "$OUT/sudoku-bundle" --data builtin --views 1 --views 4 --views 16 --batch 1 --threads 2 --json \
  > "$OUT/eval-views.json"
trm-edge eval "$OUT/sudoku-bundle" --data "$TOP95" --views 1 --views 16 --views 64 --batch 1 --threads 2 --json \
  > "$OUT/eval-views-top95.json"
# inference depth (torch reference, the bundled model's weights at other H,L cycles)
for d in 1,2 2,2 3,1 3,2 4,2; do
  trm-edge eval --depth "$d" --data builtin --views 1 --views 16 --json > "$OUT/eval-depth-${d/,/-}.json"
done
# depth x views x halting in one bench (the bundled model exported at four depths), then views streamed through 64
# slots against rounds of views over batches of 64 (same views, same answers), 512 puzzles, 24-29 givens
HARD=$(python -c "from trm_edge.api import builtin_data as d; print(*[p for p in d('sudoku') if '24-29' in p.name])")
for d in 3,2 2,2 3,1 1,2; do
  trm-edge export --depth "$d" --graph step -o "$OUT/depth-${d/,/-}" --json > /dev/null
done
trm-edge bench "$OUT"/depth-{3-2,2-2,3-1,1-2} --halt learned:3,learned:3,max=6,verify --views 1,16 -n 150 \
  --data "$HARD" --threads 2 --energy none --out "$OUT/bench-depth" --json > /dev/null
for v in 1 16; do
  python -m benchmarks.studies.throughput "$OUT/depth-3-2" --halt learned:3 --views "$v" --slots 64 -n 512 \
    --data "$HARD" --threads 2 > "$OUT/throughput-views$v.json"
done

# int8 routes (issue 15): every ONNX route of the bundled model unguarded, its QAT fine-tune with learned ranges
# under the default guard; paired accuracy against the bundled fp32 on 1,000 held-out puzzles with 95% intervals;
# speed side by side at batch 1 and 64; the per-op profile in RESULTS came from ORT's profiler (40 steps, batch 1)
trm-edge finetune --qat -o "$OUT/qat" --steps 600
trm-edge export -o "$OUT/routes" --graph step --quantize int8-static,int8-dynamic,int8-rows,int8-weights,int4-weights \
  --max-drop 100 --json > "$OUT/export-routes.json"
trm-edge export "$OUT/qat/model" -o "$OUT/routes-qat" --graph step --quantize int8 --json > "$OUT/export-routes-qat.json"
python -m benchmarks.studies.int8_routes "$OUT/routes" "$OUT/routes-qat" -n 1000 --halt learned:3,fixed --json \
  > "$OUT/int8-routes.json"
for b in 1 64; do
  trm-edge bench "$OUT/routes" --backend ort --precision fp32,int8-static,int8-dynamic,int8-rows,int8-weights,int4-weights \
    --graph step --halt fixed:16 --data builtin -n $((b == 1 ? 16 : 128)) --batch $b --threads 2 --warmup $((b == 1 ? 2 : 1)) \
    --out "$OUT/bench-routes-b$b" --json > /dev/null
  trm-edge bench "$OUT/routes-qat" --backend ort --precision fp32,int8 --graph step --halt fixed:16 --data builtin \
    -n $((b == 1 ? 16 : 128)) --batch $b --threads 2 --warmup $((b == 1 ? 2 : 1)) --out "$OUT/bench-routes-qat-b$b" \
    --json > /dev/null
done
# the same on LiteRT: int8-dynamic and int8-static unguarded, paired against the ORT fp32 on the same 1,000 puzzles;
# 16-bit activations (A16W8, measured only); speed side by side with ORT fp32 at batch 1 and 64
trm-edge export -o "$OUT/routes-litert" --format litert --graph step --quantize litert:int8-dynamic,litert:int8-static \
  --max-drop 100 --json > "$OUT/export-routes-litert.json"
python -m benchmarks.studies.int8_routes "$OUT/routes-litert" -n 1000 --halt learned:3,fixed --json \
  > "$OUT/int8-routes-litert.json"
python -m benchmarks.studies.litert_a16w8 "$OUT/routes-litert" -n 1000 > "$OUT/litert-a16w8.json"
for b in 1 64; do
  trm-edge bench "$OUT/routes-litert" --backend ort,litert --precision fp32,int8-dynamic,int8-static --graph step \
    --halt fixed:16 --data builtin -n $((b == 1 ? 16 : 128)) --batch $b --threads 2 --warmup $((b == 1 ? 2 : 1)) \
    --out "$OUT/bench-routes-litert-b$b" --json > /dev/null
done
# the official Sudoku-MLP size (from the "official size" block above): every route, batch 1
trm-edge export "$OUT/official-mlp" -o "$OUT/routes-official" --graph step \
  --quantize int8-static,int8-dynamic,int8-rows,int8-weights,int4-weights --calib 16 --heldout 32 --max-drop 100 \
  --json > "$OUT/export-routes-official.json"
trm-edge bench "$OUT/routes-official" --backend ort --precision fp32,int8-static,int8-dynamic,int8-rows,int8-weights,int4-weights \
  --graph step --halt fixed:16 --data builtin -n 6 --batch 1 --threads 2 --warmup 1 --out "$OUT/bench-routes-official" \
  --json > /dev/null
# ONNX's default int8 route (int8-rows) on the bundled model, timed
( time trm-edge export -o "$OUT/main-int8" --quantize int8 --json > "$OUT/export-main-int8.json" ) 2> "$OUT/main-int8.time"
for b in 1 64; do  # what the main job ships, int8 beside fp32 on this CPU
  trm-edge bench "$OUT/main-int8" --backend ort --precision fp32,int8 --graph step --halt fixed:16 --data builtin \
    -n $((b == 1 ? 16 : 128)) --batch $b --threads 2 --warmup $((b == 1 ? 2 : 1)) --energy none \
    --out "$OUT/bench-main-int8-b$b" --json > /dev/null
done
# LiteRT int8 under the default guard (1 pp on 512 held-out) beside the ONNX forms, timed: what the guard ships,
# paired against ORT fp32 on 1,000 held-out puzzles, and its speed beside ORT fp32 at batch 1 and 64
( time trm-edge export -o "$OUT/main" --format onnx,litert --quantize litert:int8 --json > "$OUT/export-main.json" ) \
  2> "$OUT/main.time"
python -m benchmarks.studies.int8_routes "$OUT/main" -n 1000 --halt learned:3,fixed --json > "$OUT/int8-routes-main.json"
for b in 1 64; do
  trm-edge bench "$OUT/main" --backend ort,litert --precision fp32,int8 --graph step --halt fixed:16 --data builtin \
    -n $((b == 1 ? 16 : 128)) --batch $b --threads 2 --warmup $((b == 1 ? 2 : 1)) --out "$OUT/bench-main-b$b" \
    --json > /dev/null
done

# engines: one export in every format (ONNX, OpenVINO IR, LiteRT), each engine x precision x form side by side,
# batch 1 and 64, 2 threads; the bundled model, then the official Sudoku-MLP size
trm-edge export -o "$OUT/engines-bundle" --format onnx,openvino,litert --graph step,loop,unrolled \
  --quantize int8-dynamic,openvino:int8 --json > "$OUT/export-engines.json"
trm-edge bench "$OUT/engines-bundle" --backend ort,openvino,litert --precision fp32,int8,int8-dynamic \
  --graph step,loop,unrolled --halt learned:3 --data builtin -n 128 --batch 1 --threads 2 \
  --out "$OUT/bench-engines" --json > /dev/null
trm-edge bench "$OUT/engines-bundle" --backend ort,openvino,litert --precision fp32,int8,int8-dynamic --graph step,loop \
  --halt learned:3 --data builtin -n 256 --batch 64 --threads 2 --out "$OUT/bench-engines-b64" --json > /dev/null
trm-edge export "$OUT/official-mlp" -o "$OUT/engines-official" --format onnx,openvino,litert --graph step,loop \
  --quantize int8-dynamic,openvino:int8 --calib 16 --heldout 32 --max-drop 100 --json > "$OUT/export-engines-official.json"
trm-edge bench "$OUT/engines-official" --backend ort,openvino,litert --precision fp32,int8,int8-dynamic \
  --graph step,loop --halt fixed:16 --data builtin -n 6 --batch 1 --threads 2 --warmup 1 \
  --out "$OUT/bench-engines-official" --json > /dev/null
trm-edge bench "$OUT/engines-official" --backend ort,openvino,litert --precision fp32,int8,int8-dynamic --graph step,loop \
  --halt fixed:16 --data builtin -n 64 --batch 64 --threads 2 --warmup 0 --out "$OUT/bench-engines-official-b64" \
  --json > /dev/null

# speed against the machine (issue 39): one export with the default int8 on every engine (each guarded), this
# machine's matrix-multiply peak, each engine's share of it at batch 1 and 64, tune's choice beside bench's own timing
# of the same routes, where ORT's step goes (its profiler), and the headline: the best verified configuration against
# the official way (PyTorch eager fp32, fixed 16 steps, one view), side by side on 400 held-out puzzles
trm-edge export -o "$OUT/engines-int8" --format onnx,openvino,litert --graph step --quantize int8 \
  --json > "$OUT/export-engines-int8.json"
trm-edge doctor --refresh --json > "$OUT/doctor.json"
trm-edge bench "$OUT/engines-int8" --backend ort,openvino,litert --precision fp32,int8 --halt fixed:16 --data builtin \
  -n 64 --batch 1 --threads 2 --out "$OUT/bench-peak-b1" --json > /dev/null
trm-edge bench "$OUT/engines-int8" --backend ort,openvino,litert --precision fp32,int8 --halt fixed:16 --data builtin \
  -n 256 --batch 64 --threads 2 --out "$OUT/bench-peak-b64" --json > /dev/null
trm-edge tune "$OUT/engines-int8" --json > "$OUT/tune.json"
for t in 1 2; do
  trm-edge bench "$OUT/engines-int8" --backend ort,openvino,litert --precision fp32,int8 --threads "$t" --halt learned:3 \
    --data builtin -n 32 --batch 1 --out "$OUT/bench-tune-t$t" --json > /dev/null
done
python -m benchmarks.studies.ort_profile "$OUT/engines-int8" --json > "$OUT/ort-profile.json"
python -m benchmarks.studies.overhead "$OUT/engines-int8" --json > "$OUT/overhead.json"  # item 5: batch-1 overhead
python -m benchmarks.studies.hrm_size --rounds 3 --json > "$OUT/hrm-size.json"  # issue 36: HRM against TRM a step
trm-edge bench "$OUT/engines-int8" --backend torch,litert --precision fp32,int8 --halt fixed:16,learned:3,verify \
  --data builtin -n 400 --batch 1 --threads 2 --out "$OUT/bench-headline" --json > /dev/null

# devices: the web page in headless Chromium (desktop, WASM) beside native ORT in one run; then the runtime-only
# install on emulated aarch64 (correctness only: emulated timings are not device timings)
trm-edge export -o "$OUT/devices-bundle" --graph step --quantize int8-dynamic --json > "$OUT/export-devices.json"
python -m benchmarks.studies.browser "$OUT/devices-bundle" --precision fp32,int8-dynamic -n 16 > "$OUT/browser.md"
TRM_ARM64_WORK="$OUT/arm64" bash tests/arm64/run.sh > "$OUT/arm64.txt"
