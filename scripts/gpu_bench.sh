#!/usr/bin/env bash
# The GPU benches of issue 15 item 7, in one run: the same RATIO lines as `make bench`, at GPU sizes.
#
#   scripts/gpu_bench.sh              # on a CUDA machine (~6-9 min; budget GPU_BENCH_BUDGET, default 540 s)
#   scripts/gpu_bench.sh --dry-run    # tiny sizes on CPU (GPU_BENCH_DEVICE=cpu), to check the script itself
#
# Log: "${OUT:-results}/gpu_bench.txt" (nvidia-smi header, each bench's output under "== <command>", a
# "TIME <bench> <wall s>" line after it, "FAILED ..." lines, "TIME total"); table: "$OUT/gpu_bench.md",
# rendered by bench/_run_all.py from that log. A failing or timed-out bench is recorded and the run goes on;
# the exit status is the number of failed benches. See docs/gpu-bench.md.
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-results}
mkdir -p "$OUT"
LOG="$OUT/gpu_bench.txt"
: >"$LOG"
DRY=0
[ "${1:-}" = "--dry-run" ] && DRY=1
if [ "$DRY" = 1 ]; then DEVICE=${GPU_BENCH_DEVICE:-cpu}; else DEVICE=${GPU_BENCH_DEVICE:-cuda}; fi
if [ -z "${PY:-}" ]; then
  if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
fi
BUDGET=${GPU_BENCH_BUDGET:-540}  # seconds for all benches together (one device command may run 600 s)
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 GRADIO_ANALYTICS_ENABLED=False TOKENIZERS_PARALLELISM=false
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

# shellcheck source=scripts/_capped_run.sh
. scripts/_capped_run.sh  # log, log_header, run_capped, FAILED

START=$SECONDS
log_header "scripts/gpu_bench.sh: device=$DEVICE dry_run=$DRY budget=${BUDGET}s python=$PY"
"$PY" -c "import torch; print('# torch', torch.__version__, 'cuda', torch.version.cuda, 'available', torch.cuda.is_available())" 2>&1 | tee -a "$LOG"

# bench CAP SCRIPT ARGS...: run one bench under `timeout` (its cap, or what is left of the budget), log it.
bench() {
  local cap=$1 script=$2
  shift 2
  local left=$((BUDGET - (SECONDS - START)))
  local limit=$((cap < left ? cap : left))
  log "== $script $*"
  if [ "$limit" -lt 20 ]; then
    log "FAILED $script: skipped, ${left}s of the ${BUDGET}s budget left"
    FAILED+=("$script (skipped)")
    return
  fi
  run_capped "$script" "$limit" "$PY" "$script" "$@"
}

if [ "$DRY" = 1 ]; then  # tiny sizes: each bench's code path on $DEVICE in a few minutes
  bench 240 bench/tfup.py --device "$DEVICE" --repeats 1 --floor-size 2000 --size 2000
  bench 120 bench/constrained_decoding.py --device "$DEVICE" --quick --vocab 5000 --items 20000
  bench 240 bench/beam_search.py --device "$DEVICE" --quick --exact-rows 1
  bench 120 bench/ares.py --size quick --device "$DEVICE" --repeats 3
else  # GPU sizes (issue 15 item 7)
  bench 180 bench/tfup.py --device "$DEVICE" --floor-size 2000 20000 1000000 --size 20000 1000000
  bench 150 bench/constrained_decoding.py --device "$DEVICE" --vocab 150000
  bench 180 bench/beam_search.py --device "$DEVICE"
  bench 150 bench/ares.py --size smollm2 --device "$DEVICE"
fi
log "TIME total $((SECONDS - START)).0"
log "# budget ${BUDGET}s, used $((SECONDS - START))s; failed: ${#FAILED[@]}"

"$PY" bench/_run_all.py --from "$LOG" --table "$OUT/gpu_bench.md" --label "scripts/gpu_bench.sh ($DEVICE)" ||
  FAILED+=("bench/_run_all.py (table)")
if [ "${#FAILED[@]}" -gt 0 ]; then
  { echo; echo "Failed or skipped (see gpu_bench.txt):"; for f in "${FAILED[@]}"; do echo "- $f"; done; } | tee -a "$OUT/gpu_bench.md"
fi
exit "${#FAILED[@]}"
