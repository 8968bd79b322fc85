#!/bin/sh
# indexer 16 entries a warp, hc_post 4 channels a thread: tests, prefill, ncu
export LD_LIBRARY_PATH=$PWD/.device/lib V4_ROOT=$PWD
tar -xJf .device/bins.tar.xz
timeout 200 build-cuda/gpu-tests --only mhc,attn_state_quick,attn_state_quick_tc,attn_state_f32,attn_state_bf16,attn_state_fp8,attn_state_fnuz >$OUT/tests.log 2>&1
grep -E "^(ok|not ok)|passed|hc_post" $OUT/tests.log | cut -c1-200 | head -40
M=/tmp/v4-flash-4
timeout 100 build-cuda/v4serve mkmodel --out $M --preset flash --layers 4 --seed 1 | tail -1
V4_KV_DTYPE=bf16 timeout 60 build-cuda/v4serve bench --backend cuda --model $M --concurrency 1 --input-len 64 --output-len 4 --prefill-len 8192 >$OUT/prefill.txt 2>&1
grep -E "prefill|split|slowest|measured" $OUT/prefill.txt | cut -c1-400
NCU=$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu /usr/local/cuda/bin/ncu 2>/dev/null | head -1)
V4_KV_DTYPE=bf16 timeout 200 $NCU --clock-control none -k "regex:index_topk|hc_post" --launch-count 3 \
  --section SpeedOfLight --section Occupancy --section WarpStateStats \
  build-cuda/v4serve bench --backend cuda --model $M --concurrency 1 --input-len 64 --output-len 2 --prefill-len 2048 --prefill-chunk 2048 >$OUT/ncu.txt 2>$OUT/ncu.err
echo ncu rc=$?
grep -E "^  [a-z_]+.*\(|Duration|Throughput|Warp Cycles Per Issued|Achieved Occ" $OUT/ncu.txt | cut -c1-150 | head -40
