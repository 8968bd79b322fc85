#!/bin/sh
# wgmma MoE tiles with x copied by cp.async: correctness, kernel timing, prefill, ncu
export LD_LIBRARY_PATH=$PWD/.device/lib V4_ROOT=$PWD
tar -xJf .device/bins.tar.xz
timeout 150 build-cuda/gpu-tests --only tc_moe_formats,tc_batch_invariance,mhc >$OUT/tests.log 2>&1
grep -E "^(ok|not ok)|passed|FAIL|fail|invariance moe|MXFP4.*fast vs cpu" $OUT/tests.log | cut -c1-200 | head -40
timeout 120 build-cuda/gpu-tests --only tc_moe_real_dims >$OUT/moe-real.log 2>&1
grep -E "TIME|^(ok|not ok)|fast vs cpu" $OUT/moe-real.log | cut -c1-220
M=/tmp/v4-flash-4
timeout 100 build-cuda/v4serve mkmodel --out $M --preset flash --layers 4 --seed 1 | tail -1
V4_KV_DTYPE=bf16 timeout 60 build-cuda/v4serve bench --backend cuda --model $M --concurrency 1 --input-len 64 --output-len 4 --prefill-len 8192 >$OUT/prefill.txt 2>&1
grep -E "prefill|split|slowest|measured" $OUT/prefill.txt | cut -c1-400
CS=$(command -v compute-sanitizer || ls /usr/local/cuda/bin/compute-sanitizer 2>/dev/null)
timeout 120 $CS --tool memcheck build-cuda/gpu-tests --quick --only tc_moe_formats >$OUT/memcheck.log 2>&1
tail -2 $OUT/memcheck.log
NCU=$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu /usr/local/cuda/bin/ncu 2>/dev/null | head -1)
V4_KV_DTYPE=bf16 timeout 200 $NCU --clock-control none -k "regex:moe_(up|down)_tc_kernel" --launch-count 2 \
  --section SpeedOfLight --section Occupancy --section WarpStateStats --section InstructionStats \
  --metrics 'regex:smsp__average_warps_issue_stalled_.*_per_issue_active\.ratio' \
  build-cuda/v4serve bench --backend cuda --model $M --concurrency 1 --input-len 64 --output-len 2 --prefill-len 2048 --prefill-chunk 2048 >$OUT/ncu.txt 2>$OUT/ncu.err
echo ncu rc=$?
grep -E "moe_.*<5|Duration|Throughput|Issued Ipc|Warp Cycles Per Issued|Executed Instructions  " $OUT/ncu.txt | head -30
grep -E "stalled" $OUT/ncu.txt | awk '$NF+0 > 0.15' | head -40
