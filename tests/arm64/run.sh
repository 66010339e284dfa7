#!/usr/bin/env bash
# Proves that the runtime-only install (trm-edge[ort]: numpy + onnxruntime, no torch) solves sudokus on aarch64
# (emulated: Debian bookworm arm64 + qemu user mode, as on a Raspberry Pi 5) with the same answers as on x86, and
# runs the README's other Pi commands there (info BUNDLE; bench, its report without plots).
# Needs root (mmdebstrap, chroot) and network (deb.debian.org, PyPI). Details and traps: tests/arm64/README.md.
#
# Environment (all optional):
#   TRM_ARM64_WORK     work/cache dir (sysroot, bundles, site dirs are reused); default a temp dir removed at exit
#   TRM_ARM64_KEEP=1   keep the default temp dir
#   TRM_ARM64_PUZZLES  how many puzzles (first lines of the builtin sudoku-givens24-29 file); default 3 (2-3 steps
#                      each; 4 adds one that runs all 16 steps unsolved: ~2 more emulated minutes per engine)
#   TRM_ARM64_LITERT=0 leave out the LiteRT leg (its export and one emulated run)
#   TRM_ARM64_JOBS     emulated solves run at once (each single-threaded); default nproc, at most 3
#   TRM_ARM64_TIMEOUT  seconds allowed per emulated run before it counts as hung; default 1200
#   TRM_ARM64_QEMU     qemu-aarch64 static binary; default /usr/bin/qemu-aarch64-static (installed when missing)
#   TRM_ARM64_CPU      emulated CPU (QEMU_CPU); default cortex-a76, a Raspberry Pi 5's core
set -Eeuo pipefail
trap 'echo "arm64: FAILED: line $LINENO: $BASH_COMMAND (exit $?)" >&2' ERR  # no silent exit under set -e

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
N=${TRM_ARM64_PUZZLES:-3}
HALT=learned:3            # pinned (the bundled model's recommendation) so both sides run the same policy
CPU=${TRM_ARM64_CPU:-cortex-a76}
QEMU=${TRM_ARM64_QEMU:-/usr/bin/qemu-aarch64-static}
TMO=${TRM_ARM64_TIMEOUT:-1200}
JOBS=${TRM_ARM64_JOBS:-$(( $(nproc) < 3 ? $(nproc) : 3 ))}
LITERT=${TRM_ARM64_LITERT:-1}
T0=$SECONDS

log() { echo "arm64: $*"; }
die() { echo "arm64: FAILED: $*" >&2; exit 1; }
show_fail() { tail -n 40 "$1" >&2; die "$2 (log: $1)"; }  # a step's log, then the verdict

[ "$(id -u)" = 0 ] || die "needs root (mmdebstrap, chroot)"

# Tools, as .ci/run installs sshd: only when missing. A TRM_ARM64_QEMU override is used as given, never installed.
if { [ -z "${TRM_ARM64_QEMU:-}" ] && [ ! -x "$QEMU" ]; } || ! command -v mmdebstrap >/dev/null; then
  log "installing qemu-user-static mmdebstrap"
  apt-get update -qq && apt-get install -y -qq qemu-user-static mmdebstrap >/dev/null
fi
[ -x "$QEMU" ] || die "emulation cannot start: no executable qemu at $QEMU"

if [ -n "${TRM_ARM64_WORK:-}" ]; then
  # This script replaces folders inside WORK: only a new or empty folder, or one it made (its marker), is used.
  if [ -e "$TRM_ARM64_WORK" ] && [ ! -f "$TRM_ARM64_WORK/.trm-arm64" ] && [ -n "$(ls -A "$TRM_ARM64_WORK")" ]; then
    die "TRM_ARM64_WORK=$TRM_ARM64_WORK is not empty and not a work dir of this script: choose a new or empty one"
  fi
  mkdir -p "$TRM_ARM64_WORK" && touch "$TRM_ARM64_WORK/.trm-arm64"
  WORK=$(cd "$TRM_ARM64_WORK" && pwd)
else
  WORK=$(mktemp -d /tmp/trm-arm64.XXXXXX)
  if [ "${TRM_ARM64_KEEP:-0}" = 1 ]; then log "keeping $WORK"; else trap 'rm -rf "$WORK"' EXIT; fi
fi
SYS=$WORK/sysroot OUT=$WORK/out B=$WORK/bundles
rm -rf "$OUT" && mkdir -p "$OUT" "$B"
log "work dir $WORK; $N puzzles, --halt $HALT, QEMU_CPU=$CPU"

# --- 1. arm64 sysroot: bookworm's python3.11 and the C++ runtime the wheels link against ----------------------------
# --variant=extract unpacks the packages and their dependencies without running any arm64 maintainer script.
if [ ! -f "$SYS/.complete" ]; then
  rm -rf "$SYS"
  log "mmdebstrap arm64 bookworm sysroot"
  mmdebstrap --variant=extract --architectures=arm64 --include=python3.11,libstdc++6,libgcc-s1 \
    bookworm "$SYS" http://deb.debian.org/debian >"$WORK/mmdebstrap.log" 2>&1 ||
    show_fail "$WORK/mmdebstrap.log" "mmdebstrap failed"
  touch "$SYS/.complete"
fi
# Trap: mount nothing of the host (its /sys and /proc together make the emulated ORT die of SIGSEGV). The sysroot
# gets a Pi's 4 cores in its own /sys files; /proc stays empty, so ORT's cpuinfo warns on stderr (harmless).
mkdir -p "$SYS/sys/devices/system/cpu" "$SYS/root" "$SYS/work"
echo 0-3 >"$SYS/sys/devices/system/cpu/possible"
echo 0-3 >"$SYS/sys/devices/system/cpu/present"
install -m 755 "$QEMU" "$SYS/usr/bin/qemu-aarch64-static"

# --- 2. aarch64 wheels, installed from here without emulation -------------------------------------------------------
# trm-edge's own wheel is built from a copy of the working tree (a build in place would leave build/ behind).
rm -rf "$WORK/src" "$WORK/wheels" && mkdir -p "$WORK/src"
if [ -d "$ROOT/.git" ]; then
  git -C "$ROOT" ls-files -z -co --exclude-standard |  # tracked and new files, not ignored ones
    tar -C "$ROOT" --null -T - --ignore-failed-read -cf - 2>/dev/null | tar -C "$WORK/src" -xf -
else
  tar -C "$ROOT" --exclude=./build --exclude='*.egg-info' --exclude=__pycache__ -cf - . | tar -C "$WORK/src" -xf -
fi
python -m pip wheel -q --no-deps "$WORK/src" -w "$WORK/wheels" >"$WORK/wheel.log" 2>&1 ||
  show_fail "$WORK/wheel.log" "building trm-edge's wheel failed"
WHEEL=$(ls "$WORK"/wheels/trm_edge-*-py3-none-any.whl) || die "trm-edge's wheel is not pure python"
# Any manylinux wheel up to glibc 2.36 (bookworm's) runs there; pip takes only the exact tags it is given.
PIP=(--python-version 3.11 --implementation cp --abi cp311 --abi abi3 --abi none --only-binary=:all:
     --platform manylinux2014_aarch64)
for v in $(seq 17 36); do PIP+=(--platform "manylinux_2_${v}_aarch64"); done
site() {  # EXTRA: a site dir per extra (the [ort] one is exactly what a Pi installs); dependencies cached by key
  local dir=$SYS/opt/$1 key
  key="$1 $(python -c 'import sys, zipfile; z = zipfile.ZipFile(sys.argv[1])
print(*sorted(l for n in z.namelist() if n.endswith(".dist-info/METADATA")
              for l in z.read(n).decode().splitlines() if l.startswith("Requires-Dist")))' "$WHEEL")"
  if [ "$(cat "$dir.key" 2>/dev/null)" != "$key" ]; then
    log "pip: trm-edge[$1] for cp311 manylinux aarch64 -> /opt/$1"
    rm -rf "$dir" "$dir.key"
    python -m pip install --target "$dir" "${PIP[@]}" "${WHEEL}[$1]" >"$WORK/pip-$1.log" 2>&1 ||
      show_fail "$WORK/pip-$1.log" "pip could not install trm-edge[$1] for aarch64"
    echo "$key" >"$dir.key"
  else  # dependencies unchanged: refresh trm-edge itself only
    python -m pip install --target "$dir" --upgrade --no-deps "${PIP[@]}" "$WHEEL" >"$WORK/pip-$1.log" 2>&1 ||
      show_fail "$WORK/pip-$1.log" "pip could not refresh trm-edge in /opt/$1"
  fi
  if compgen -G "$dir/torch*" >/dev/null || compgen -G "$dir/nvidia*" >/dev/null; then
    die "trm-edge[$1] pulled in torch/CUDA: the runtime install must not"
  fi
}
site ort
[ "$LITERT" = 1 ] && site litert

# --- 3. emulation: chroot + qemu user mode, probed first so that a broken one fails fast ----------------------------
# Trap: QEMU_CPU matters. qemu's default CPU ("max") advertises extensions a Pi lacks; ORT then picks other int8
# kernels (14x slower, and a different int8 answer). env -i: nothing of the host's environment leaks in.
CHROOT=$(command -v chroot)  # /usr/sbin: not on the PATH given below
emu() {  # SITE PYTHON-ARGS...; --foreground: qemu stays in our process group, so an interrupt reaches it too
  local site=$1; shift
  env -i PATH=/usr/bin:/bin HOME=/root LANG=C.UTF-8 PYTHONPATH="/opt/$site" QEMU_CPU="$CPU" \
    timeout --foreground -k 10 "$TMO" "$CHROOT" "$SYS" /usr/bin/qemu-aarch64-static /usr/bin/python3.11 "$@"
}
if ! emu ort -c 'import importlib.util as u, platform, onnxruntime, trm_edge
assert u.find_spec("torch") is None, "torch is importable"
print(platform.machine(), platform.python_version(), "onnxruntime", onnxruntime.__version__)' \
    >"$OUT/probe.txt" 2>"$OUT/probe.err"; then
  cat "$OUT/probe.err" >&2
  die "emulation cannot start: $QEMU (QEMU_CPU=$CPU) could not run python3.11 + onnxruntime in $SYS" \
    "(or it took over ${TMO}s)"
fi
read -r MACHINE _ <"$OUT/probe.txt"
[ "$MACHINE" = aarch64 ] || die "emulated machine is '$MACHINE', not aarch64"
log "emulated: $(cat "$OUT/probe.txt"), no torch; $("$QEMU" --version | sed -n 1p)"

# --- 4. x86: bundles (cached in WORK) and the reference answers -----------------------------------------------------
# One ONNX bundle holds fp32, int8 and int8-dynamic step graphs; LiteRT gets its own (its converter is the slow part).
export_bundle() {  # DIR EXPORT-ARGS...: the export is all or nothing, so a manifest means a complete bundle
  local dir=$1; shift
  if [ -f "$dir/manifest.json" ]; then log "reusing $dir (delete it to re-export)"; return; fi
  log "export $(basename "$dir"): trm-edge export --graph step $*"
  python -m trm_edge export -o "$dir" --graph step "$@" >"$dir.log" 2>&1 || show_fail "$dir.log" "x86 export failed"
}
# Both int8 routes run int8 arithmetic whose kernels differ by ISA: `int8` is the route users get (for the bundled
# model int8-rows: MatMulIntegerToFloat, activations quantized per row at run time), int8-dynamic is MatMulInteger.
# --max-drop 100: this stage is about ISAs agreeing, not accuracy (the guard is tested on x86; since it holds 512
# puzzles it refuses int8-dynamic on the bundled model, a real ~6 pp drop).
export_bundle "$B/ort" --quantize int8,int8-dynamic --max-drop 100
[ "$LITERT" = 1 ] && export_bundle "$B/litert" --format onnx,litert
# bench runs an fp32 reference through every step (~8 s each emulated for the bundled model): it gets the tests' tiny
# random model (tests/conftest.py), whose steps take moments, so the README's Pi commands cost seconds here.
if [ ! -f "$B/tiny/manifest.json" ]; then
  log "export tiny (tests/conftest.py export_tiny_bundle)"
  python -c 'import sys, pathlib
sys.path.insert(0, sys.argv[1])
from conftest import export_tiny_bundle
export_tiny_bundle(pathlib.Path(sys.argv[2]))' "$ROOT/tests" "$B/tiny" >"$B/tiny.log" 2>&1 ||
    show_fail "$B/tiny.log" "x86 export of the tiny bundle failed"
fi

DATA=$(python -c "from trm_edge.api import builtin_data as d; print(*[p for p in d('sudoku') if '24-29' in p.name])")
# puzzle,solution lines ('solved' is checked by label). One process: `grep | head` dies of SIGPIPE under pipefail.
awk -v n="$N" '!/^#/ && k++ < n' "$DATA" >"$OUT/puzzles.txt"

# name, bundle, engine options. Batch 1 (int8-dynamic quantizes activations per batch, so the batch changes its
# answers) and one thread on both sides: the two sides then differ only by CPU.
RUNS=("ort-fp32 ort --precision fp32" "ort-int8 ort --precision int8" "ort-int8dyn ort --precision int8-dynamic")
[ "$LITERT" = 1 ] && RUNS+=("litert-fp32 litert --backend litert")
SOLVE=(solve --views 1 --batch 1 --threads 1 --halt "$HALT" --json)
for r in "${RUNS[@]}"; do
  read -r name bundle opts <<<"$r"
  # shellcheck disable=SC2086  # opts: words
  python -m trm_edge "${SOLVE[@]}" $opts "$B/$bundle" "$OUT/puzzles.txt" >"$OUT/x86-$name.json" \
    2>"$OUT/x86-$name.err" || show_fail "$OUT/x86-$name.err" "x86 solve $name failed"
done
# int8: x86 also records the inputs and outputs of each step (steps.py), which aarch64 replays from the same inputs,
# and fp32 replays them too (the quantization's own gap, the scale for the aarch64 one).
STEPS=4 PY=(python "$ROOT/tests/arm64/steps.py")
for r in "${RUNS[@]}"; do
  read -r name bundle opts <<<"$r"
  [[ $name == *int8* ]] || continue
  { "${PY[@]}" record "$B/$bundle" "${opts#--precision }" "$OUT/puzzles.txt" "$STEPS" "$OUT/x86-$name.npz" &&
    "${PY[@]}" replay "$B/$bundle" fp32 "$OUT/x86-$name.npz" "$OUT/fp32-$name.npz"; } 2>"$OUT/x86-$name.err" ||
    show_fail "$OUT/x86-$name.err" "x86 step record $name failed"
done
log "x86 answers ready ($((SECONDS - T0)) s)"

# --- 5. emulated solves: the same commands, on copies of the same bundles and puzzles -------------------------------
rm -rf "$SYS/work" && cp -a "$B" "$SYS/work" && cp "$OUT/puzzles.txt" "$ROOT/tests/arm64/steps.py" "$SYS/work/"
cp "$OUT"/x86-*.npz "$SYS/work/"
run_arm() {  # NAME BUNDLE OPTS...: answers on stdout only (ORT warns on stderr under emulation); int8 replays steps
  local name=$1 bundle=$2 site=ort t=$SECONDS rc=0; shift 2
  [ "$bundle" = litert ] && site=litert
  emu "$site" -m trm_edge "${SOLVE[@]}" "$@" "/work/$bundle" /work/puzzles.txt >"$OUT/arm-$name.json" \
    2>"$OUT/arm-$name.err" || rc=$?
  if [ "$rc" = 0 ] && [[ $name == *int8* ]]; then
    emu "$site" /work/steps.py replay "/work/$bundle" "${@: -1}" "/work/x86-$name.npz" "/work/arm-$name.npz" \
      2>>"$OUT/arm-$name.err" && cp "$SYS/work/arm-$name.npz" "$OUT/" || rc=$?
  fi
  echo "$rc $((SECONDS - t))" >"$OUT/arm-$name.rc"
}
# The README's other Pi commands, on the same install: `bench` (its report without plots: no matplotlib there) and
# `info` of a bundle (its manifest, without torch).
PI=("info info /work/tiny" "bench bench /work/tiny --halt $HALT -n 2 --out /work/pi-report")
run_pi() {  # NAME TRM-EDGE-ARGS...: exit status and time, as run_arm's
  local name=$1 t=$SECONDS rc=0; shift
  emu ort -m trm_edge "$@" >"$OUT/arm-$name.out" 2>"$OUT/arm-$name.err" || rc=$?
  echo "$rc $((SECONDS - t))" >"$OUT/arm-$name.rc"
}
throttle() { while [ "$(jobs -rp | wc -l)" -ge "$JOBS" ]; do wait -n || true; done; }
log "solving under emulation, $JOBS at once (timeout ${TMO}s each)"
# shellcheck disable=SC2086  # each entry: words
for r in "${RUNS[@]}"; do throttle; run_arm $r & done
# shellcheck disable=SC2086
for r in "${PI[@]}"; do throttle; run_pi $r & done
wait

# --- 6. compare -----------------------------------------------------------------------------------------------------
for r in "${RUNS[@]}" "${PI[@]}"; do
  read -r name _ <<<"$r"
  read -r rc secs <"$OUT/arm-$name.rc" || die "arm64 $name left no exit status"
  if [ "$rc" != 0 ]; then
    tail -n 30 "$OUT/arm-$name.err" >&2
    if [ "$rc" = 124 ] || [ "$rc" = 137 ]; then die "arm64 $name hung: killed after ${TMO}s"; fi
    die "arm64 $name failed (exit $rc)"
  fi
  log "$name on arm64 took ${secs}s (emulated, not device timing)"
done
grep -q 'step\.onnx' "$OUT/arm-info.out" || die "arm64 info printed no manifest (out: $OUT/arm-info.out)"
for f in report.json report.md; do
  [ -s "$SYS/work/pi-report/$f" ] || die "arm64 bench wrote no $f"
done
grep -q "plots skipped: .*pip install 'trm-edge\[bench\]'" "$OUT/arm-bench.err" ||
  die "arm64 bench did not say why its report has no plots (err: $OUT/arm-bench.err)"
log "info and bench (report.json, report.md; plots skipped: no matplotlib) ran on the [ort] install"
# fp32 (ORT, LiteRT): every answer and step count identical, halting logits within 1e-3 (measured: ~1e-6).
# int8 routes: each step, replayed on aarch64 from x86's inputs, must be about as close to fp32 (from the same
# inputs) as x86's int8 is: carry rms within 1.25x, halting logit rms within 1.5x (12 values), cells agreeing with
# fp32 at most 1 pp fewer. ORT's int8 is not bit-portable between ISAs (steps.py); a broken kernel misses by far.
# Their solves are reported, not judged: a recursion can grow one rounding difference into another answer.
python - "$OUT" "$ROOT/tests/arm64" "${RUNS[@]}" <<'EOF'
import json, sys
out, here, bad = sys.argv[1], sys.argv[2], []
sys.path.insert(0, here)
from steps import error
for name in (r.split()[0] for r in sys.argv[3:]):
    x, a = (json.load(open(f"{out}/{side}-{name}.json")) for side in ("x86", "arm"))
    int8, diffs, notes = "int8" in name, [], []
    if (x["halt"], x["n"]) != (a["halt"], a["n"]):
        diffs.append(f"not the same run: {x['halt']}, {x['n']} puzzles vs {a['halt']}, {a['n']}")
    for i, (rx, ra) in enumerate(zip(x["results"], a["results"]), 1):
        if rx["answer"] != ra["answer"]:
            cells = [k for k, (p, q) in enumerate(zip(rx["answer"] or "", ra["answer"] or "")) if p != q]
            (notes if int8 else diffs).append(
                f"#{i} answers differ in {len(cells)} cells:\n{'':13}x86 {rx['answer']} (solved: {rx['solved']})"
                f"\n{'':13}arm {ra['answer']} (solved: {ra['solved']})")
        if rx["steps"] != ra["steps"]:
            (notes if int8 else diffs).append(f"#{i} steps x86 {rx['steps']}, arm {ra['steps']}")
    same = sum(rx["answer"] == ra["answer"] for rx, ra in zip(x["results"], a["results"]))
    same_steps = sum(rx["steps"] == ra["steps"] for rx, ra in zip(x["results"], a["results"]))
    dq = max([abs(rx["q_halt"] - ra["q_halt"]) for rx, ra in zip(x["results"], a["results"])
              if rx["q_halt"] is not None and ra["q_halt"] is not None] or [0.0])
    if not int8 and dq > 1e-3:
        diffs.append(f"halting logits differ by up to {dq:.1e} (fp32 allows 1e-3)")
    print(f"arm64: {name:11s} {'FAIL' if diffs else 'ok'}: {a['n']} puzzles, answers identical {same}/{a['n']}, "
          f"steps {same_steps}/{a['n']}, solved x86 {x['solved']} arm {a['solved']}, max |q_halt x86 - arm| "
          f"{dq:.1e}; {a['model'].split(' (')[0]} (x86: {x['model'].split(' (')[0]})")
    if int8:
        ex, ea = (error(f"{out}/fp32-{name}.npz", f"{out}/{side}-{name}.npz") for side in ("x86", "arm"))
        print(f"{'':9}int8 against fp32, {ex['calls']} steps from x86's inputs, x86 / aarch64: carry rms "
              f"{ex['carry_rms']:.2e} / {ea['carry_rms']:.2e}, halting logit rms {ex['q_rms']:.2e} / "
              f"{ea['q_rms']:.2e}, cells agreeing {ex['cells_agree']:.2%} / {ea['cells_agree']:.2%}")
        diffs += [f"{what} is {on_arm:.2e} on aarch64, over {k}x x86's {on_x86:.2e}" for what, on_x86, on_arm, k in (
            ("the carry's rms error", ex["carry_rms"], ea["carry_rms"], 1.25),
            ("the halting logit's rms error", ex["q_rms"], ea["q_rms"], 1.5)) if on_arm > k * on_x86]
        if ea["cells_agree"] < ex["cells_agree"] - 0.01:
            diffs.append(f"cells agreeing with fp32: {ea['cells_agree']:.2%} on aarch64, x86 {ex['cells_agree']:.2%}")
    for d in diffs:
        print(f"         difference: {d}")
    for d in notes:
        print(f"         reported (int8): {d}")
    bad += [name] * bool(diffs)
sys.exit(f"arm64: FAILED: aarch64 differs from x86 in {', '.join(bad)}" if bad else 0)
EOF
log "PASSED in $((SECONDS - T0))s: aarch64 ($CPU, emulated) gives the x86 fp32 answers, and int8 as accurate as x86's"
