#!/bin/sh
# hc_pre_kernel at 4 blocks a multiprocessor: mhc test, prefill, single stream, ncu of hc_pre and attention at prefill
export LD_LIBRARY_PATH=$PWD/.device/lib V4_ROOT=$PWD
tar -xJf .device/bins.tar.xz
timeout 100 build-cuda/gpu-tests --only mhc >$OUT/tests.log 2>&1
grep -E "^(ok|not ok)|passed" $OUT/tests.log
M=/tmp/v4-flash-4
timeout 100 build-cuda/v4serve mkmodel --out $M --preset flash --layers 4 --seed 1 | tail -1
V4_KV_DTYPE=bf16 timeout 60 build-cuda/v4serve bench --backend cuda --model $M --concurrency 1 --input-len 1024 --output-len 32 --prefill-len 8192 >$OUT/prefill.txt 2>&1
grep -E "prefill|split|slowest|measured|^ +1 " $OUT/prefill.txt | cut -c1-400
NCU=$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu /usr/local/cuda/bin/ncu 2>/dev/null | head -1)
V4_KV_DTYPE=bf16 timeout 200 $NCU --clock-control none -k "regex:hc_pre_kernel|attention_tc_kernel" --launch-count 4 \
  --section SpeedOfLight --section Occupancy --section WarpStateStats --section LaunchStats \
  build-cuda/v4serve bench --backend cuda --model $M --concurrency 1 --input-len 64 --output-len 2 --prefill-len 2048 --prefill-chunk 2048 >$OUT/ncu.txt 2>$OUT/ncu.err
echo ncu rc=$?
grep -E "^  [a-z_ ]+.*\(|Duration|Throughput|Warp Cycles Per Issued|Achieved Occ|Registers Per|Grid Size" $OUT/ncu.txt | cut -c1-150 | head -60
