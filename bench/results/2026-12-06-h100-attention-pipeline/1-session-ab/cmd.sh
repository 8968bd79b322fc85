#!/bin/sh
# call 1: the whole plan (checks, bench sweep, 8192-token chunk) on the
# attention gather pipeline + score split + MoE grid order (and the checks of
# 754c899/899f592); the 8K prefill of 899f592 (base), the pipeline alone
# (pipe) and all (new); Nsight Compute on the prefill's attention and MoE
OUT=$OUT CHUNK=8192 GPU_TESTS_SKIP=tc_linear_real_dims,blas_linear_real_dims,gemv_linear_real_dims,tc_moe_real_dims RUN_S=260 BENCH_S=130 sh scripts/device-session.sh
export LD_LIBRARY_PATH=$PWD/.device/lib V4_ROOT=$PWD
M=/tmp/v4-flash-4
for b in build-cuda-base build-cuda-pipe build-cuda; do
  for ch in 2048 8192; do
    echo "== $b prefill 8192 in chunks of $ch"
    V4_KV_DTYPE=bf16 timeout 40 $b/v4serve bench --backend cuda --model $M --concurrency 1 --input-len 64 --output-len 4 --prefill-len 8192 --prefill-chunk $ch 2>&1 | grep -E "prefill of|split of one eager prefill|slowest" | head -3 | cut -c1-300
  done
done
NCU=$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu /usr/local/cuda/bin/ncu 2>/dev/null | head -1)
V4_KV_DTYPE=bf16 timeout 100 $NCU --clock-control none -k "regex:moe_(up|down)_tc_kernel|attention_tc_kernel" --launch-count 6 \
  --section SpeedOfLight --section Occupancy --section LaunchStats --section WarpStateStats \
  --metrics 'regex:smsp__average_warps_issue_stalled_.*_per_issue_active\.ratio' \
  build-cuda/v4serve bench --backend cuda --model $M --concurrency 1 --input-len 64 --output-len 2 --prefill-len 2048 --prefill-chunk 2048 >$OUT/ncu.txt 2>$OUT/ncu.err
grep -E "^  [a-z].*(moe_|attention_tc)|Duration|DRAM Throughput|L2 Cache Throughput|L1/TEX Cache|Compute \(SM\)|Registers Per|Warp Cycles Per Issued" $OUT/ncu.txt | cut -c1-110
