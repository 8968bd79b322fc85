#!/bin/sh
# session 2026-12-06b call 2: the tensor-core mHC mixing product (build-cuda) against 228babd (build-cuda-base):
# checks, bench, prefill A/B, Nsight Compute of the prefill's non-MoE kernels at 2048 tokens
set -u
OUT=$OUT CHUNK=2048 CONC=1,256 GPU_TESTS_SKIP=tc_linear_real_dims,blas_linear_real_dims,gemv_linear_real_dims RUN_S=300 BENCH_S=90 sh scripts/device-session.sh
export LD_LIBRARY_PATH=$PWD/.device/lib V4_ROOT=$PWD
M=/tmp/v4-flash-4
X=/tmp/extra; mkdir -p $X
for rep in 1 2; do
for b in build-cuda-base build-cuda; do
  for ch in 2048 8192; do
    echo "== $b prefill 8192 in chunks of $ch (rep $rep)"
    V4_KV_DTYPE=bf16 timeout 40 $b/v4serve bench --backend cuda --model $M --concurrency 1 --input-len 64 --output-len 4 --prefill-len 8192 --prefill-chunk $ch 2>&1 | grep -E "prefill of|split of one eager prefill|slowest" | head -3 | cut -c1-400
  done
done
done 2>&1 | tee $X/prefill-ab.txt
NCU=$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu /usr/local/cuda/bin/ncu 2>/dev/null | head -1)
V4_KV_DTYPE=bf16 timeout 150 $NCU --clock-control none -k "regex:hc_mix|hc_pre_kernel|hc_head" --launch-skip 0 --launch-count 12 \
  --section SpeedOfLight --section Occupancy --section LaunchStats --section WarpStateStats --section SourceCounters \
  --import-source no -o /tmp/ops \
  build-cuda/v4serve bench --backend cuda --model $M --concurrency 1 --input-len 64 --output-len 2 --prefill-len 2048 --prefill-chunk 2048 >$X/ncu.log 2>&1
echo ncu rc=$?
timeout 60 $NCU -i /tmp/ops.ncu-rep --page details >$X/ncu-details.txt 2>&1
grep -E "^  [a-z].*\(|Duration|DRAM Throughput|L2 Cache Throughput|Compute \(SM\)|Warp Cycles Per Issued|Achieved Occ|Registers Per" $X/ncu-details.txt | cut -c1-120 | head -150
ls -la $X; tar -czf $OUT/extra.tgz -C /tmp extra
