#!/usr/bin/env bash
# Reproduce fertool's bundled default model from FER2013, with fertool's own commands.
#
#   scripts/train_default.sh fer.safetensors [OUTDIR]
#   ... TEACHER=...: the bundled one (71.36 %), in two runs: see TEACHER below
#   ARCH=dexpression_bn_gentle_wide SEEDS="1 2 3" EPOCHS=100 HEAD=average \
#     scripts/train_default.sh fer.safetensors   # the one before it (70.88 %), its teacher
#   ARCH=dexpression_bn_gentle_wide SEEDS="1 2" EPOCHS=100 HEAD=average ...   # before that (70.66 %)
#   SEEDS="1:dexpression_bn_gentle_wide 2:dexpression_bn_gentle_deep 3:dexpression_bn_gentle_deep" EPOCHS=100 \
#     HEAD=average scripts/train_default.sh fer.safetensors   # and before (70.35 %)
#   ARCH=dexpression_bn_gentle_deep SEEDS="1 2 3" EPOCHS=100 HIDDEN=416,256 HEAD_DROPOUT=0.3 \
#     scripts/train_default.sh fer.safetensors   # and before that (69.8 %)
#   ARCH=dexpression_bn_gentle_deep SEEDS="1@100 2 3" EPOCHS=60 ...   # seed 1 100 epochs, the others 60
#   SEEDS="1 2 3" EPOCHS=22 MORE="10 10" MILD=6 scripts/train_default.sh fer.safetensors   # 2 stages more
#
# Branches with `--recipe best` (one per seed in SEEDS, EPOCHS epochs each), of architecture ARCH
# (the recipe's when unset); an entry SEED:ARCH in SEEDS sets one seed's architecture, SEED@N (or
# SEED:ARCH@N) its first stage's epochs. MORE lists further
# stages, each training that many epochs from the previous stage's best weights (`--init`, cosine
# from --lr 0.01: the way to go past what one sitting allows); MILD > 0 adds a last stage with the
# report's milder augmentation (cosine from --lr 0.005), a fine-tune once the strong augmentation
# has done its work. Then the report's ensemble head over the branches' last stages, and
# scripts/pack_model.py stores the best candidate on val (a branch or the ensemble) as
# src/fertool/default_model/default.safetensors: fp16 when that leaves val accuracy unchanged,
# test-time augmentation when it scores higher on val. Re-running resumes a stopped run and skips
# finished ones. On the project's 2-core CPU an epoch takes 70-80 s (120 s for gentle_deep) in fp32,
# 28 s for gentle_deep in bf16 where the CPU has AVX512-BF16.
# DEFAULT_OUT names another place for the packed model; HIDDEN the head's hidden widths (the
# report's 512,256 by default; four branches want 256,256 to stay under 10 MB; one gentle_deep
# branch 480,256, three 416,256); HEAD_EPOCHS the head's epochs (40: the head over three branches
# was still rising at the report's 20); HEAD_DROPOUT its dropout (the report's 0.5 when unset);
# HEAD=average joins the branches by averaging their probabilities instead of training a head.
# TEACHER=MODEL distils: MODEL's predictions on the training faces (`eval --tta crops`, once, to
# OUTDIR/teacher.npz) are blended into every stage's targets, weight TEACHER_WEIGHT (0.5) at
# TEMPERATURE (1); with TEACHER_ONLINE=1 the model itself is the teacher, run on every step's
# transformed faces instead (no teacher.npz; 1.7x the epoch time of a wide branch next to the
# default, docs/RESULTS.md "A teacher run on every step's faces").
# The bundled model: three branches distilled from the three-wide-branch average:
#   ARCH=dexpression_bn_gentle_wide SEEDS="1 2 3" EPOCHS=100 HEAD=average DEFAULT_OUT=runs/wide.safetensors \
#     scripts/train_default.sh fer.safetensors runs/wide
#   TEACHER=runs/wide.safetensors ARCH=dexpression_bn_gentle_wide SEEDS="1 2 3" EPOCHS=100 HEAD=average \
#     scripts/train_default.sh fer.safetensors runs/students
# Later stages keep their first stage's architecture. Empty arrays are expanded as
# ${a[@]+"${a[@]}"}: under set -u, bash before 4.4 (macOS's /bin/bash) calls "${a[@]}" unbound.
set -euo pipefail
data=${1:?usage: scripts/train_default.sh DATA [OUTDIR]}
out=${2:-runs/default}
seeds=${SEEDS:-1 2 3}
epochs=${EPOCHS:-40}
more=${MORE:-}
mild=${MILD:-0}
hidden=${HIDDEN:-512,256}
head_epochs=${HEAD_EPOCHS:-40}
head_dropout=${HEAD_DROPOUT:-0.5}
head=${HEAD:-trained}
[[ "$head" == trained || "$head" == average ]] || { echo "HEAD=$head: use trained or average" >&2; exit 2; }
teacher=${TEACHER:-}
[[ -z "$teacher" || -f "$teacher" ]] || { echo "TEACHER=$teacher: no such model file; train the teacher first" >&2; exit 2; }
arch=()
[[ -n "${ARCH:-}" ]] && arch=(--arch "$ARCH")
default_out=${DEFAULT_OUT:-src/fertool/default_model/default.safetensors}
fertool=${FERTOOL:-fertool}
python=${PYTHON:-python3}
mkdir -p "$out"

distil=()
if [[ -n "$teacher" && "${TEACHER_ONLINE:-0}" == 1 ]]; then
  distil=(--teacher "$teacher" --teacher-weight "${TEACHER_WEIGHT:-0.5}" --temperature "${TEMPERATURE:-1}")
elif [[ -n "$teacher" ]]; then
  # eval writes atomically: a stopped run leaves no half-made teacher.npz to reuse.
  [[ -f "$out/teacher.npz" ]] ||
    "$fertool" eval "$data" "$teacher" --split train --tta crops -o "$out/teacher.npz" --json > "$out/teacher.json"
  distil=(--teacher "$out/teacher.npz" --teacher-weight "${TEACHER_WEIGHT:-0.5}" --temperature "${TEMPERATURE:-1}")
fi

# train NAME ARGS...: one train-branch run to OUTDIR/NAME.safetensors, resumed if it was stopped.
# `--recipe best` as the bundled model was trained with it, before its classifier rate and
# augmentation warm-up (docs/experiments/2026-12-07-first-epoch.md): the default is remade as it is.
train() {
  local name=$1 target="$out/$1.safetensors"
  shift
  [[ -f "$target" ]] && return 0
  local resume=()
  [[ -f "$target.ckpt" ]] && resume=(--resume)
  "$fertool" train-branch "$data" -o "$target" --recipe best --classifier-lr 1 --augment-warmup 0 --log "$out/$name.jsonl" "$@" ${distil[@]+"${distil[@]}"} ${resume[@]+"${resume[@]}"} --json \
    > "$out/$name.json"
}

branches=()
for entry in $seeds; do
  branch_epochs=$epochs
  if [[ "$entry" == *@* ]]; then
    branch_epochs=${entry##*@}
    entry=${entry%@*}
  fi
  seed=${entry%%:*}
  branch_arch=(${arch[@]+"${arch[@]}"})
  [[ "$entry" == *:* ]] && branch_arch=(--arch "${entry#*:}")
  last="branch$seed"
  train "$last" --seed "$seed" --epochs "$branch_epochs" ${branch_arch[@]+"${branch_arch[@]}"}
  stage=0
  for extra in $more; do
    (( extra > 0 )) || continue
    stage=$((stage + 1))
    name="branch$seed-more"  # then branch1-more2, branch1-more3, ...
    if (( stage > 1 )); then name+=$stage; fi
    train "$name" --seed "$seed" --init "$out/$last.safetensors" --lr 0.01 --schedule cosine --epochs "$extra"
    last=$name
  done
  if (( mild > 0 )); then
    train "branch$seed-mild" --seed "$seed" --init "$out/$last.safetensors" --augment-preset report --lr 0.005 \
      --schedule cosine --epochs "$mild"
    last="branch$seed-mild"
  fi
  branches+=("$out/$last.safetensors")
done
if (( ${#branches[@]} > 1 )) && [[ ! -f "$out/ensemble.safetensors" ]]; then
  if [[ "$head" == average ]]; then
    "$fertool" ensemble "$data" "${branches[@]}" -o "$out/ensemble.safetensors" --average --json > "$out/ensemble.json"
  else
    "$fertool" ensemble "$data" "${branches[@]}" -o "$out/ensemble.safetensors" \
      --hidden "$hidden" --dropout "$head_dropout" --epochs "$head_epochs" --log "$out/ensemble.jsonl" --json > "$out/ensemble.json"
  fi
fi
# The candidate with the best val accuracy becomes the default.
best=$("$python" - "$out" "${branches[@]}" <<'PY'
import json, sys
from pathlib import Path
out, branches = Path(sys.argv[1]), [Path(b) for b in sys.argv[2:]]
candidates = branches + ([out / "ensemble.safetensors"] if len(branches) > 1 else [])
scores = {c: json.loads(c.with_suffix(".json").read_text())["best_val_accuracy"] for c in candidates}
print(max(scores, key=scores.get))
PY
)
"$python" "$(dirname "$0")/pack_model.py" "$best" "$default_out" --data "$data" --split val
"$fertool" info "$default_out"
