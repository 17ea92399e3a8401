#!/usr/bin/env bash
# The main job, end to end on this machine: start the local stack (Redis, SeaweedFS, a Celery
# worker, Flower), submit the vgg16-hed layer grids and the sample photos' heatmaps, wait with
# progress, download the results. The stack stays up for you to look at Flower; stop it with
#   .venv/bin/convatlas stack down --dir .stack
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh

STACK=${CONVATLAS_STACK_DIR:-.stack}
OUT=${CONVATLAS_DEMO_OUT:-out/demo}
CLI=.venv/bin/convatlas

$CLI stack up --dir "$STACK" --workers "${CONVATLAS_DEMO_WORKERS:-1}" --detach
set -a
# shellcheck disable=SC1091
source "$STACK/stack.env"
set +a

LAYERS=block1_conv1,block2_conv1,block3_conv1,block4_conv1,block5_conv1
grids_log=$(mktemp)
heat_log=$(mktemp)
$CLI submit grids --model vgg16-hed --layers "$LAYERS" --filters 0:64 --wait | tee "$grids_log"
$CLI submit heatmaps samples/photos --model efficientnet-lite0 --wait | tee "$heat_log"

for log in "$grids_log" "$heat_log"; do
    run=$(grep -oE '^run [a-z]-[0-9a-f]+' "$log" | head -1 | cut -d' ' -f2)
    $CLI fetch "$run" "$OUT/$run"
done
rm -f "$grids_log" "$heat_log"

echo
echo "Results (grids, overlays, report.json, index.html) are in $OUT/"
ls -d "$OUT"/*/runs/*/index.html 2>/dev/null || true
$CLI stack env --dir "$STACK" | grep -i FLOWER_URL || true
echo "Flower (user/password in $STACK/stack.env): see the URL above; stop everything with:"
echo "  $CLI stack down --dir $STACK"
