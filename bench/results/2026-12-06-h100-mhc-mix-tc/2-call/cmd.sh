#!/bin/sh
# session 2026-12-06b call 3 (short: device time): the mHC mixing product in tiles of 32 tokens
# (build-cuda) against tiles of 64 (build-cuda-v1) and 228babd (build-cuda-base): the mHC and
# graph tests, memcheck and racecheck of mhc, the 8K prefill of the three, decode c=1,256
set -u
tar -xJf .device/bins.tar.xz
export LD_LIBRARY_PATH=$PWD/.device/lib V4_ROOT=$PWD
X=/tmp/extra; mkdir -p $X
timeout 60 build-cuda/gpu-tests --only mhc,graph_vs_eager,attn_state_quick >$X/tests.log 2>&1; echo "tests rc=$?"
grep -E "^(ok|not ok)|passed" $X/tests.log
SAN=$(command -v compute-sanitizer || ls /usr/local/cuda/bin/compute-sanitizer 2>/dev/null | head -1)
for tool in memcheck racecheck; do
  timeout 60 $SAN --tool $tool --error-exitcode 99 build-cuda/gpu-tests --quick --only mhc >$X/$tool.log 2>&1; echo "$tool rc=$?"
  grep -E "SUMMARY|passed" $X/$tool.log | tail -2
done
M=/tmp/v4-flash-4
timeout 100 build-cuda/v4serve mkmodel --out $M --preset flash --layers 4 --seed 1 | tail -1
for b in build-cuda-base build-cuda-v1 build-cuda; do
  for ch in 2048 8192; do
    echo "== $b prefill 8192 in chunks of $ch"
    V4_KV_DTYPE=bf16 timeout 40 $b/v4serve bench --backend cuda --model $M --concurrency 1 --input-len 64 --output-len 4 --prefill-len 8192 --prefill-chunk $ch 2>&1 | grep -E "prefill of|slowest" | head -2 | cut -c1-300
  done
done 2>&1 | tee $X/prefill-ab.txt
V4_KV_DTYPE=bf16 timeout 90 build-cuda/v4serve bench --backend cuda --model $M --concurrency 1,256 --input-len 1024 --output-len 32 >$X/decode.txt 2>&1
grep -E "measured|^ +[0-9]+ +[0-9]+ +[0-9]+ \||slowest" $X/decode.txt | cut -c1-250
tar -czf $OUT/extra.tgz -C /tmp extra
