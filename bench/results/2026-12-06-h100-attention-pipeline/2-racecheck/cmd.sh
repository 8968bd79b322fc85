#!/bin/sh
# call 2: racecheck of the attention kernels: the pipeline alone (pipe), the
# score split with named pair barriers (named, call 1's build) and with
# block barriers (new); attention tests; the 8K prefill of named and new
export LD_LIBRARY_PATH=$PWD/.device/lib V4_ROOT=$PWD
tar -xJf .device/bins.tar.xz
CS=$(command -v compute-sanitizer || ls /usr/local/cuda/bin/compute-sanitizer 2>/dev/null)
G="check-golden --backend cuda --model tests/golden/tiny/model --golden tests/golden/tiny/golden.safetensors --tolerance 2e-2"
for b in build-cuda-pipe build-cuda-named build-cuda; do
  echo "== racecheck $b: tiny golden, chunks of 7 (bf16 KV)"
  V4_KV_DTYPE=bf16 timeout 100 $CS --tool racecheck $b/v4serve $G --chunk 7 >$OUT/race-$(basename $b).log 2>&1
  grep -E "RACECHECK SUMMARY|^(PASS|FAIL)" $OUT/race-$(basename $b).log | head -3
done
echo "== racecheck gpu-tests attn (new)"
timeout 120 $CS --tool racecheck --error-exitcode 99 build-cuda/gpu-tests --quick --only attn_state_quick,mhc >$OUT/race-tests.log 2>&1
echo rc=$?; grep -E "RACECHECK SUMMARY|passed" $OUT/race-tests.log
echo "== gpu-tests attn (new, full)"
timeout 150 build-cuda/gpu-tests --only attn_state,graph_vs_eager,model_full_dims >$OUT/tests.log 2>&1
grep -E "^(ok|not ok)|passed|# FAIL|attention" $OUT/tests.log | cut -c1-160 | head -30
M=/tmp/v4-flash-4
timeout 100 build-cuda/v4serve mkmodel --out $M --preset flash --layers 4 --seed 1 | tail -1
for b in build-cuda-named build-cuda; do
  for ch in 2048 8192; do
    echo "== $b prefill 8192 in chunks of $ch"
    V4_KV_DTYPE=bf16 timeout 40 $b/v4serve bench --backend cuda --model $M --concurrency 1 --input-len 64 --output-len 4 --prefill-len 8192 --prefill-chunk $ch 2>&1 | grep -E "prefill of|slowest" | head -2 | cut -c1-200
  done
done
