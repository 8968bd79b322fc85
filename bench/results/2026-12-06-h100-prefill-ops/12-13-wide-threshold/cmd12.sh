#!/bin/sh
# A/B (temporary knob V4_MOE_WIDE_MIN): wgmma MoE tiles from 16 pairs an expert (prefill chunks of 1024, the server's step)
export LD_LIBRARY_PATH=$PWD/.device/lib V4_ROOT=$PWD
tar -xJf .device/bins.tar.xz
V4_MOE_WIDE_MIN=16 timeout 60 build-cuda/gpu-tests --only tc_moe_formats,tc_batch_invariance >$OUT/tests.log 2>&1
grep -E "^(ok|not ok)|passed|invariance moe" $OUT/tests.log
M=/tmp/v4-flash-4
timeout 100 build-cuda/v4serve mkmodel --out $M --preset flash --layers 4 --seed 1 | tail -1
for w in 32 16 32 16; do
V4_MOE_WIDE_MIN=$w V4_KV_DTYPE=bf16 timeout 60 build-cuda/v4serve bench --backend cuda --model $M --concurrency 1 --input-len 64 --output-len 2 --prefill-len 8192 --prefill-chunk 1024 >$OUT/p1024-$w.txt 2>&1
echo "wide_min=$w"; grep -E "prefill of|split of one eager prefill" $OUT/p1024-$w.txt | cut -c1-250
done
