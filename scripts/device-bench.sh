#!/bin/sh
# The decode/prefill benchmark on a GPU machine, from the repository root,
# with binaries built here beforehand (`make cuda`) and carried. Writes a
# random full-dimension checkpoint of LAYERS layers (default 4: both sliding
# layers, one CSA, one HCA) to /tmp, then runs `v4serve bench` on it.
# Results: $OUT/bench/bench.jsonl, decode.svg, bench.txt.
#   LAYERS=4 CONC=1,8,32,64,128,256,512 INPUT=1024 OUTPUT=32 scripts/device-bench.sh
set -u
cd "$(dirname "$0")/.." || exit 1
B=build-cuda
OUT=${OUT:-/tmp/v4-device-bench}
LAYERS=${LAYERS:-4}
CONC=${CONC:-1,8,32,64,128,256,512}
INPUT=${INPUT:-1024}
OUTPUT=${OUTPUT:-32}
PREFILL=${PREFILL:-8192}
M=/tmp/v4-flash-$LAYERS
mkdir -p "$OUT/bench"
DEV=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1)
echo "== $(date -u +%Y-%m-%dT%H:%M:%SZ) $DEV"
if [ ! -f "$M/model.safetensors.index.json" ]; then
    timeout 120 $B/v4serve mkmodel --out "$M" --preset flash --layers "$LAYERS" --seed 1 2>&1 | tail -1
fi
echo "== $B/v4serve bench --backend cuda --model $M --concurrency $CONC --input-len $INPUT --output-len $OUTPUT --prefill-len $PREFILL"
timeout "${BENCH_TIMEOUT:-420}" $B/v4serve bench --backend cuda --model "$M" --concurrency "$CONC" \
    --input-len "$INPUT" --output-len "$OUTPUT" --prefill-len "$PREFILL" --out "$OUT/bench" \
    --device-name "$DEV" 2>&1 | tee "$OUT/bench/bench.txt"
