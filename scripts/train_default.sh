#!/usr/bin/env bash
# Reproduce fertool's bundled default model from FER2013, with fertool's own commands.
#
#   scripts/train_default.sh fer.safetensors [OUTDIR]
#
# Three branches with `--recipe best` (seeds 1-3), the report's ensemble head over them, then
# scripts/pack_model.py stores the better of the ensemble and the best branch (on val) as
# src/fertool/default_model/default.safetensors: fp16 when that leaves val accuracy unchanged,
# flip test-time augmentation when it scores higher on val. Re-running resumes a stopped branch
# and skips finished ones. On the project's 2-core CPU a branch takes 30-60 min.
set -euo pipefail
data=${1:?usage: scripts/train_default.sh DATA [OUTDIR]}
out=${2:-runs/default}
fertool=${FERTOOL:-fertool}
python=${PYTHON:-python3}
mkdir -p "$out"
for seed in 1 2 3; do
  target="$out/branch$seed.safetensors"
  [[ -f "$target" ]] && continue
  resume=()
  [[ -f "$target.ckpt" ]] && resume=(--resume)
  "$fertool" train-branch "$data" -o "$target" --recipe best --seed "$seed" --log "$out/branch$seed.jsonl" \
    "${resume[@]}" --json > "$out/branch$seed.json"
done
"$fertool" ensemble "$data" "$out"/branch{1,2,3}.safetensors -o "$out/ensemble.safetensors" --log "$out/ensemble.jsonl" --json \
  > "$out/ensemble.json"
# The candidate with the best val accuracy becomes the default.
best=$("$python" - "$out" <<'PY'
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
scores = {p: json.loads(p.read_text())["best_val_accuracy"] for p in out.glob("*.json") if p.stem.startswith(("branch", "ensemble"))}
print(str(max(scores, key=scores.get)).removesuffix(".json") + ".safetensors")
PY
)
"$python" "$(dirname "$0")/pack_model.py" "$best" src/fertool/default_model/default.safetensors --data "$data" --split val
"$fertool" info src/fertool/default_model/default.safetensors
