#!/bin/sh
export LD_LIBRARY_PATH=$PWD/.device/lib V4_ROOT=$PWD
tar -xJf .device/bins.tar.xz
M=/tmp/v4-flash-4
timeout 100 build-cuda/v4serve mkmodel --out $M --preset flash --layers 4 --seed 1 | tail -1
NCU=$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu /usr/local/cuda/bin/ncu 2>/dev/null | head -1)
for w in 16 32; do
V4_MOE_WIDE_MIN=$w V4_KV_DTYPE=bf16 timeout 60 $NCU --metrics gpu__time_duration.sum -k "regex:moe_(up|down)" --launch-count 4 build-cuda/v4serve bench --backend cuda --model $M --concurrency 1 --input-len 64 --output-len 2 --prefill-len 1024 --prefill-chunk 1024 2>&1 | grep -E "moe_(up|down)|duration" | cut -c1-120
done
