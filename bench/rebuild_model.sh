#!/usr/bin/env bash
# Rebuild the shipped aligned model (stage 14) in one command, then judge it against stage 7.
#
#   bash bench/rebuild_model.sh FACES SHARED_DATA WORK
#
# FACES: the folder build_faces.py wrote (celeba/, utkface/, scut/, aaf/); SHARED_DATA: the folder
# holding facecom/ and facecom_distorted/; WORK: a new folder outside the repository for the
# candidate, its checkpoints, the per-degradation validation folders and the evaluations.
# Stage 7 (the model it starts from) is taken from this repository's history, so the command
# gives the same start on any machine. Two idle CPU cores: about 12 minutes finding the faces
# of 89k images (cached in .cache/ for later runs), 8 epochs of 230-250 s, then about 20
# minutes of evaluation. An interrupted run continues where it stopped: run it again with
# RESUME=1. Run again after a finished training, it goes straight to the evaluations.
set -euo pipefail
[ $# -eq 3 ] || { echo "usage: bash bench/rebuild_model.sh FACES SHARED_DATA WORK" >&2; exit 2; }
F=$(realpath "$1"); S=$(realpath "$2"); mkdir -p "$3"; W=$(realpath "$3")
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
STAGE7=e0f533d   # the commit that shipped stage 7
for d in "$F"/{celeba,utkface,scut,aaf}/dev "$S"/facecom/dev "$S"/facecom_distorted/dev; do
  [ -d "$d" ] || { echo "error: $d is missing; build it first (see docs/training_log.md, stage 14)" >&2; exit 2; }
done

# Stage 7 and its sidecar, from git.
mkdir -p "$W/stage7"
for f in model_balanced.h5 model_balanced.json; do
  [ -f "$W/stage7/$f" ] || git show "$STAGE7:$f" > "$W/stage7/$f"
done

# One validation folder per degradation: links to facecom_distorted/dev's photos of that kind.
DEGRADATIONS="blurred foggy lowlight noisy rainy resized sunny"
for k in $DEGRADATIONS; do
  for c in female male; do
    mkdir -p "$W/valsets/$k/$c"
    find "$S/facecom_distorted/dev/$c" -name "*_$k.*" -exec ln -sf {} "$W/valsets/$k/$c/" \;
  done
done
VALSETS=$(for k in $DEGRADATIONS; do printf '%s ' "$W/valsets/$k"; done)

# Training: stage 11's flags, from stage 7, in one run (written at its end, so a candidate that
# is there is a finished one: train_model.py would refuse to replace it).
resume=(); [ "${RESUME:-0}" = 1 ] && resume=(--resume)
if [ -f "$W/candidate/model_balanced.h5" ]; then
  echo "$W/candidate/model_balanced.h5 is trained already; delete it to train again"
else
$PY train_model.py --init_model "$W/stage7/model_balanced.h5" --image_size 160 \
  --face_geometry aligned:1.0 --as_given 0.2 \
  --data_path "$S/facecom" "$S/facecom_distorted" "$F/celeba" "$F/utkface" "$F/scut" "$F/aaf" \
  --val_path "$S/facecom/dev" $VALSETS "$F/celeba/dev" "$F/utkface/dev" "$F/scut/dev" "$F/aaf/dev" \
  --balance_by age --source_weights 0.12 0.38 0.12 0.16 0.04 0.18 --degrade 0.5 \
  --epoch_images 6400 --val_limit 2000 --learning_rate 3e-5 --epochs 8 --patience 3 \
  --lr_patience 2 --lr_factor 0.5 --monitor val_worst_recall --verbose 2 \
  --model_version "0.5 (stage 14)" \
  --output "$W/candidate/model_balanced.h5" "${resume[@]}"
fi

# Evaluation: both models through their own default path, over the dev folders and the pooled
# degradations, then the rule (docs/training_log.md, stage 14).
for m in stage7 candidate; do
  [ -f "$W/$m/metrics.json" ] && [ "$W/$m/metrics.json" -nt "$W/$m/model_balanced.h5" ] && continue
  $PY test_script.py --model_path "$W/$m/model_balanced.h5" --no_copy --verbose 0 \
    --output_dir "$W/$m" --data_path "$S/facecom/dev" $VALSETS "$F/celeba/dev" "$F/utkface/dev" \
    "$F/scut/dev" "$F/aaf/dev" "$S/facecom_distorted/dev"
done
$PY bench/compare_models.py "$W/stage7/metrics.json" "$W/candidate/metrics.json"
