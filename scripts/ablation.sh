#!/usr/bin/env bash
# The report's question 2: does augmentation or normalisation help? One branch per setting,
# the report's recipe otherwise (DeXpression with LRN, Adam 1e-4, batch 100), same seed.
#
#   scripts/ablation.sh fer.safetensors [EPOCHS] [OUTDIR]
#   PARALLEL=1 scripts/ablation.sh fer.safetensors 12 runs/ablation   # all four at once
#
# Writes OUTDIR/{plain,augment,normalize,both}.safetensors with their logs, then prints the
# table docs/RESULTS.md shows (best val accuracy and epoch, the val curve by quarters, the last
# epoch's train accuracy, wall time). Re-running resumes any setting whose checkpoint is there,
# and skips any that is finished.
#
# PARALLEL=1 trains the four settings side by side, one thread each: on a small machine the
# four then share the cores for the whole run and reach the same epoch together, so an
# interrupted session leaves four comparable checkpoints instead of one finished setting.
set -euo pipefail
data=${1:?usage: scripts/ablation.sh DATA [EPOCHS] [OUTDIR]}
epochs=${2:-30}
out=${3:-ablation}
fertool=${FERTOOL:-fertool}
mkdir -p "$out"
# A function, not an associative array: macOS's /bin/bash 3.2 has none.
flags() {
  case $1 in
    plain) echo "--no-augment --no-normalize" ;;
    augment) echo "--augment --no-normalize" ;;
    normalize) echo "--no-augment --normalize" ;;
    both) echo "--augment --normalize" ;;
  esac
}
train() {
  local name=$1 target="$out/$1.safetensors"
  [[ -f "$target" ]] && return 0
  local resume=()
  [[ -f "$target.ckpt" ]] && resume=(--resume)
  # shellcheck disable=SC2086  # the flags are meant to split
  "$fertool" train-branch "$data" -o "$target" --recipe report --seed 1 --epochs "$epochs" $(flags "$name") \
    --log "$out/$name.jsonl" ${resume[@]+"${resume[@]}"} --json > "$out/$name.json"
}
if [[ ${PARALLEL:-0} == 1 ]]; then
  pids=()
  for name in plain augment normalize both; do
    OMP_NUM_THREADS=1 train "$name" 2> "$out/$name.err" & pids+=($!)
  done
  status=0
  for pid in "${pids[@]}"; do wait "$pid" || status=$?; done
  # 130/143: stopped (Ctrl-C, kill, a time limit); each setting saved its last epoch.
  if (( status == 130 || status == 143 )); then
    echo "ablation: stopped; run the same command again to resume all four" >&2; exit "$status"
  fi
  (( status == 0 )) || { echo "ablation: a setting failed; see $out/*.err" >&2; exit "$status"; }
else
  for name in plain augment normalize both; do train "$name"; done
fi
for name in plain augment normalize both; do
  "$fertool" info "$out/$name.safetensors" --json
done | python3 -c '
import json, sys
# Per setting: the best epoch (the saved weights), the val curve at each quarter of the run
# from its log (whether it is still rising), and train accuracy in the last epoch (over-fitting).
print("| setting | best val accuracy | best epoch / epochs | val at 1/4, 1/2, 3/4, end | train, last epoch | wall time |")
print("| --- | --- | --- | --- | --- | --- |")
for line in sys.stdin:
    i = json.loads(line)
    log = i["file"].removesuffix(".safetensors") + ".jsonl"
    name = log.rsplit("/", 1)[-1].removesuffix(".jsonl")
    with open(log) as lines:
        history = {e["epoch"]: e for e in map(json.loads, lines)}  # an epoch logged twice (trained again into the same log): its last
    epochs, best, accuracy = i["epochs"], i["best_epoch"], i["val_accuracy"]
    marks = sorted({max(1, round(epochs * q / 4)) for q in (1, 2, 3, 4)})
    curve = " / ".join(format(history[e]["val_accuracy"], ".1%") for e in marks if e in history)
    at = ", ".join(map(str, marks))
    last, minutes = history[max(history)]["train_accuracy"], i["train_seconds"] / 60
    print(f"| {name} | {accuracy:.1%} | {best} / {epochs} | {curve} (epochs {at}) | {last:.1%} | {minutes:.0f} min |")
'
