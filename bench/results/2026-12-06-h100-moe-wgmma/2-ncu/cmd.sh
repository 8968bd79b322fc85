#!/bin/sh
# ncu of the wgmma MoE kernels in a 2048-token prefill chunk
export LD_LIBRARY_PATH=$PWD/.device/lib V4_ROOT=$PWD
tar -xJf .device/bins.tar.xz
M=/tmp/v4-flash-4
timeout 100 build-cuda/v4serve mkmodel --out $M --preset flash --layers 4 --seed 1 | tail -1
NCU=$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu /usr/local/cuda/bin/ncu 2>/dev/null | head -1)
V4_KV_DTYPE=bf16 timeout 300 $NCU --clock-control none -k "regex:moe_(up|down)_tc_kernel" --launch-count 2 \
  --section SpeedOfLight --section Occupancy --section LaunchStats --section WarpStateStats --section MemoryWorkloadAnalysis \
  --section ComputeWorkloadAnalysis --section InstructionStats --section SourceCounters \
  build-cuda/v4serve bench --backend cuda --model $M --concurrency 1 --input-len 64 --output-len 2 --prefill-len 2048 --prefill-chunk 2048 >$OUT/ncu.txt 2>$OUT/ncu.err
echo rc=$?; tail -3 $OUT/ncu.err
grep -E "moe_|Duration|Throughput|Pipe|Registers|Achieved Occ|Theoretical Occ|Warp Cycles|Issued Ipc|Stall|stall|Eligible|Bank" $OUT/ncu.txt | head -120
