#!/bin/sh
# indexer scoring 8 entries a warp: attention-state tests (selection), prefill, ncu of index_topk
export LD_LIBRARY_PATH=$PWD/.device/lib V4_ROOT=$PWD
tar -xJf .device/bins.tar.xz
timeout 200 build-cuda/gpu-tests --only attn_state_quick,attn_state_quick_tc,attn_state_f32,attn_state_bf16,attn_state_fp8,attn_state_fnuz >$OUT/tests.log 2>&1
grep -E "^(ok|not ok)|passed|index_topk|selection" $OUT/tests.log | cut -c1-200 | head -40
M=/tmp/v4-flash-4
timeout 100 build-cuda/v4serve mkmodel --out $M --preset flash --layers 4 --seed 1 | tail -1
V4_KV_DTYPE=bf16 timeout 60 build-cuda/v4serve bench --backend cuda --model $M --concurrency 1 --input-len 64 --output-len 4 --prefill-len 8192 >$OUT/prefill.txt 2>&1
grep -E "prefill|split|slowest|measured" $OUT/prefill.txt | cut -c1-400
CS=$(command -v compute-sanitizer || ls /usr/local/cuda/bin/compute-sanitizer 2>/dev/null)
timeout 100 $CS --tool racecheck build-cuda/gpu-tests --quick --only attn_state_quick >$OUT/racecheck.log 2>&1
tail -2 $OUT/racecheck.log
NCU=$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu /usr/local/cuda/bin/ncu 2>/dev/null | head -1)
V4_KV_DTYPE=bf16 timeout 200 $NCU --clock-control none -k "regex:index_topk|hc_mix_kernel|hc_pre_kernel|hc_post|rmsnorm" --launch-skip 0 --launch-count 8 \
  --section SpeedOfLight --section Occupancy --section WarpStateStats \
  build-cuda/v4serve bench --backend cuda --model $M --concurrency 1 --input-len 64 --output-len 2 --prefill-len 2048 --prefill-chunk 2048 >$OUT/ncu.txt 2>$OUT/ncu.err
echo ncu rc=$?
grep -E "^  [a-z_]+.*\(|Duration|Throughput|Warp Cycles Per Issued|Achieved Occ" $OUT/ncu.txt | cut -c1-150 | head -80
