#!/usr/bin/env bash
# Generate the deeprelax-bulk pairs round-robin over the recipes, `STEP` more pairs per recipe per round,
# until `MAX` per recipe or a STOP file in $OUT. Resumable: rerun the same command. `SET=RECIPES_HI` runs the
# second strain level (two generators on disjoint sets can share $OUT).
#   OUT=benchmarks/work/bulk_chgnet nice -n 19 bash datasets/bulk_chgnet/generate.sh   (from the repo root)
set -u
OUT=${OUT:-benchmarks/work/bulk_chgnet}
STEP=${STEP:-4}
MAX=${MAX:-400}
QUINTET=${QUINTET:-quintet}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
source "$(dirname "$0")/recipes.sh"
mkdir -p "$OUT"
SET=${SET:-RECIPES}
declare -n CHOSEN="$SET"
for ((n = STEP; n <= MAX; n += STEP)); do
  for r in "${CHOSEN[@]}"; do
    [ -e "$OUT/STOP" ] && { echo "STOP file found"; exit 0; }
    name=${r%%|*}; args=${r#*|}
    eval "set -- $args"
    echo "== $(date -u +%H:%M:%S) $name n=$n"
    $QUINTET data relax-pairs out="$OUT/$name" n=$n prefix="$name" $COMMON "$@" || echo "!! $name failed"
  done
done
