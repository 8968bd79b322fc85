#!/bin/sh
# A/B: hc_mix token tiles of 32 (16 before), indexer grid 3 blocks a multiprocessor (2 before)
export LD_LIBRARY_PATH=$PWD/.device/lib V4_ROOT=$PWD
tar -xJf .device/bins.tar.xz
timeout 150 build-cuda/gpu-tests --only mhc,attn_state_quick,attn_state_f32 >$OUT/tests.log 2>&1
grep -E "^(ok|not ok)|passed" $OUT/tests.log
M=/tmp/v4-flash-4
timeout 100 build-cuda/v4serve mkmodel --out $M --preset flash --layers 4 --seed 1 | tail -1
V4_KV_DTYPE=bf16 timeout 90 build-cuda/v4serve bench --backend cuda --model $M --concurrency 1,32,256 --input-len 1024 --output-len 32 --prefill-len 8192 >$OUT/bench.txt 2>&1
grep -E "prefill of|split|slowest|measured|^ +[0-9]+ +1024" $OUT/bench.txt | cut -c1-300
