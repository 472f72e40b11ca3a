# Sourced by scripts/gpu_bench.sh and scripts/gpu_recsys.sh: their log, its header, and one command run under a
# time limit. The caller sets LOG (the log file) before sourcing; FAILED collects "<name> (<why>)" entries.
FAILED=()

log() { echo "$*" | tee -a "$LOG"; }

# log_header TEXT: "# TEXT <UTC time> commit <hash>", then the GPU (nvidia-smi) when there is one.
log_header() {
  log "# $* $(date -u +%Y-%m-%dT%H:%M:%SZ) commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
  if command -v nvidia-smi >/dev/null 2>&1; then
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1 | sed 's/^/# gpu: /' | tee -a "$LOG"
    nvidia-smi 2>&1 | head -n 12 | sed 's/^/# /' | tee -a "$LOG"
  else
    log "# nvidia-smi: not found"
  fi
}

# run_capped NAME LIMIT CMD...: CMD under `timeout LIMIT` (seconds), its output into the log, then
# "TIME NAME <s>"; on failure "FAILED NAME: <why>" and an entry in FAILED. The run goes on either way.
run_capped() {
  local name=$1 limit=$2
  shift 2
  local t0=$SECONDS
  timeout --kill-after=10 "$limit" "$@" 2>&1 | tee -a "$LOG"
  local rc=${PIPESTATUS[0]}
  log "TIME $name $((SECONDS - t0)).0"
  if [ "$rc" -ne 0 ]; then
    local why="exit status $rc"
    { [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; } && why="timed out after ${limit}s (exit status $rc)"
    log "FAILED $name: $why"
    FAILED+=("$name ($why)")
  fi
}
