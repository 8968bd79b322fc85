#!/bin/sh
# call 2: the 4-warpgroup MoE wgmma kernels (build-cuda) against HEAD
# (build-cuda-base): the device checks, single stream and c=256 decode, the
# 8K prefill A/B, Nsight Compute of the MoE kernels with source counters, SASS
set -u
OUT=$OUT CHUNK=8192 CONC=1,256 GPU_TESTS_SKIP=tc_linear_real_dims,blas_linear_real_dims,gemv_linear_real_dims RUN_S=280 BENCH_S=90 sh scripts/device-session.sh
export LD_LIBRARY_PATH=$PWD/.device/lib V4_ROOT=$PWD
M=/tmp/v4-flash-4
X=/tmp/extra; mkdir -p $X
for rep in 1 2; do
for b in build-cuda-base build-cuda; do
  for ch in 2048 8192; do
    echo "== $b prefill 8192 in chunks of $ch (rep $rep)"
    V4_KV_DTYPE=bf16 timeout 40 $b/v4serve bench --backend cuda --model $M --concurrency 1 --input-len 64 --output-len 4 --prefill-len 8192 --prefill-chunk $ch 2>&1 | grep -E "prefill of|split of one eager prefill|slowest" | head -3 | cut -c1-300
  done
done
done 2>&1 | tee $X/prefill-ab.txt
NCU=$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu /usr/local/cuda/bin/ncu 2>/dev/null | head -1)
V4_KV_DTYPE=bf16 timeout 100 $NCU --clock-control none -k "regex:moe_(up|down)_tc_kernel" --launch-skip 2 --launch-count 2 \
  --section SpeedOfLight --section Occupancy --section LaunchStats --section WarpStateStats --section SourceCounters \
  --metrics 'regex:smsp__average_warps_issue_stalled_.*_per_issue_active\.ratio' --import-source no -o /tmp/moe \
  build-cuda/v4serve bench --backend cuda --model $M --concurrency 1 --input-len 64 --output-len 2 --prefill-len 2048 --prefill-chunk 2048 >$X/ncu.log 2>&1
timeout 60 $NCU -i /tmp/moe.ncu-rep --page details >$X/ncu-details.txt 2>&1
timeout 60 $NCU -i /tmp/moe.ncu-rep --page source --csv --print-source sass >$X/moe-source.csv 2>&1
echo "== ncu"; grep -E "^  [a-z].*moe_|Duration|DRAM Throughput|L2 Cache Throughput|Compute \(SM\)|Registers Per|Warp Cycles Per Issued" $X/ncu-details.txt | cut -c1-110
OBJ=$(command -v cuobjdump || ls /usr/local/cuda*/bin/cuobjdump 2>/dev/null | head -1)
for f in _Z16moe_up_tc_kernelILi5ELi64EEv8moe_planPK8cu_wdesciPKtillfbb _Z18moe_down_tc_kernelILi5ELi64EEv8moe_planPK8cu_wdescillbb; do
  $OBJ -sass -fun $f build-cuda/v4serve >$X/sass-$(echo $f | cut -c5-12).txt 2>&1
done
ls -la $X; tar -czf $OUT/extra.tgz -C /tmp extra
