#!/usr/bin/env bash
# Reprints every table of docs/model_card.md: the model on the whole dev folders, by source, by
# degradation, by age band (UTKFace, All-Age-Faces) and by origin, each cell with its 95% interval.
#
# usage (from the repository root): bash docs/model_card_tables.sh [MODEL] [OUT]
#   MODEL defaults to model_balanced.h5, OUT (links and attributes.csv per dev set) to ../factors;
#   the report (metrics.json, evaluation.csv, plots, recall_by_age.png) goes to OUT.report.
#   FACECOM=... FACES=... point at the data if it is not where the maintainers keep it.
#
# test_script.py reports factors from an attributes.csv beside each data folder; so that each
# source and each degradation gets a table too, every dev set is linked into OUT/NAME with its
# own columns plus `source` (and `degradation` for facecom_distorted, the file name's last part).
set -euo pipefail
MODEL=${1:-model_balanced.h5}
OUT=${2:-../factors}
FACECOM=${FACECOM:-../shared/data}
FACES=${FACES:-../faces}
PYTHON=${PYTHON:-.venv/bin/python}

for d in "$FACECOM/facecom/dev" "$FACECOM/facecom_distorted/dev" \
         "$FACES/celeba/dev" "$FACES/utkface/dev" "$FACES/scut/dev" "$FACES/aaf/dev"; do
  n=$(basename "$(dirname "$d")")
  mkdir -p "$OUT/$n"
  for c in female male; do ln -sfn "$(realpath "$d/$c")" "$OUT/$n/$c"; done
  if [ -f "$d/attributes.csv" ]; then
    awk -v s="$n" 'NR == 1 {print $0 ",source"; next} {print $0 "," s}' "$d/attributes.csv"
  elif [ "$n" = facecom_distorted ]; then
    echo path,source,degradation
    (cd "$d" && ls female/* male/*) | sed -E "s/^(.*_([a-z]+)\.[a-z]+)$/\1,$n,\2/"
  else
    echo path,source
    (cd "$d" && ls female/* male/*) | sed "s/\$/,$n/"
  fi > "$OUT/$n/attributes.csv.tmp"
  mv "$OUT/$n/attributes.csv.tmp" "$OUT/$n/attributes.csv"
done
exec "$PYTHON" test_script.py --model_path "$MODEL" --data_path "$OUT"/* --no_copy --verbose 0 \
  --output_dir "$OUT.report"
