#!/usr/bin/env bash
# The report's question 2: does augmentation or normalisation help? One branch per setting,
# the report's recipe otherwise (DeXpression with LRN, Adam 1e-4, batch 100), same seed.
#
#   scripts/ablation.sh fer.safetensors [EPOCHS] [OUTDIR]
#
# Writes OUTDIR/{plain,augment,normalize,both}.safetensors with their logs, then prints the
# table docs/RESULTS.md shows (best val accuracy, epoch, wall time). Re-running resumes any
# setting whose checkpoint is there, and skips any that is finished.
set -euo pipefail
data=${1:?usage: scripts/ablation.sh DATA [EPOCHS] [OUTDIR]}
epochs=${2:-30}
out=${3:-ablation}
fertool=${FERTOOL:-fertool}
mkdir -p "$out"
declare -A flags=(
  [plain]="--no-augment --no-normalize"
  [augment]="--augment --no-normalize"
  [normalize]="--no-augment --normalize"
  [both]="--augment --normalize"
)
for name in plain augment normalize both; do
  target="$out/$name.safetensors"
  [[ -f "$target" ]] && continue
  resume=()
  [[ -f "$target.ckpt" ]] && resume=(--resume)
  # shellcheck disable=SC2086  # the flags are meant to split
  "$fertool" train-branch "$data" -o "$target" --recipe report --seed 1 --epochs "$epochs" ${flags[$name]} \
    --log "$out/$name.jsonl" "${resume[@]}" --json > "$out/$name.json"
done
for name in plain augment normalize both; do
  "$fertool" info "$out/$name.safetensors" --json
done | python3 -c '
import json, sys
print("| setting | best val accuracy | best epoch / epochs | wall time |")
print("| --- | --- | --- | --- |")
for line in sys.stdin:
    i = json.loads(line)
    name = i["file"].rsplit("/", 1)[-1].removesuffix(".safetensors")
    accuracy, minutes, best, epochs = i["val_accuracy"], i["train_seconds"] / 60, i["best_epoch"], i["epochs"]
    print(f"| {name} | {accuracy:.1%} | {best} / {epochs} | {minutes:.0f} min |")
'
