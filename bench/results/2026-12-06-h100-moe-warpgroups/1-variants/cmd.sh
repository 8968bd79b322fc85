#!/bin/sh
# call 1: MoE wgmma kernels with 3 (build-cuda) and 4 (build-cuda-g4)
# warpgroups a block against 2 (build-cuda-base = HEAD): MoE tests of the
# 3-group build, 8K prefill A/B, Nsight Compute of the MoE kernels, SASS
set -u
tar -xJf .device/bins.tar.xz
export LD_LIBRARY_PATH=$PWD/.device/lib V4_ROOT=$PWD
M=/tmp/v4-flash-4
nvidia-smi --query-gpu=name,clocks.max.sm --format=csv,noheader
build-cuda/v4serve mkmodel --out $M --preset flash --layers 4 --seed 1 >/dev/null 2>&1 || echo mkmodel failed
timeout 120 build-cuda/gpu-tests --only tc_moe_formats,tc_batch_invariance,moe_experts_small,tc_moe_real_dims >$OUT/tests-g3.log 2>&1
echo "tests rc=$?"; grep -E "^(not ok|ok)|passed|rel err|TIME moe" $OUT/tests-g3.log | cut -c1-200 | tail -16
for rep in 1 2; do
for b in build-cuda build-cuda-i2 build-cuda-g4; do
  for ch in 2048 8192; do
    echo "== $b prefill 8192 in chunks of $ch (rep $rep)"
    V4_KV_DTYPE=bf16 timeout 40 $b/v4serve bench --backend cuda --model $M --concurrency 1 --input-len 64 --output-len 4 --prefill-len 8192 --prefill-chunk $ch 2>&1 | grep -E "prefill of|split of one eager prefill|slowest" | head -3 | cut -c1-300
  done
done
done 2>&1 | tee $OUT/prefill-ab.txt
NCU=$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu /usr/local/cuda/bin/ncu 2>/dev/null | head -1)
for b in build-cuda build-cuda-i2 build-cuda-g4; do
V4_KV_DTYPE=bf16 timeout 90 $NCU --clock-control none -k "regex:moe_(up|down)_tc_kernel" --launch-skip 2 --launch-count 2 \
  --section SpeedOfLight --section Occupancy --section LaunchStats --section WarpStateStats \
  --metrics 'regex:smsp__average_warps_issue_stalled_.*_per_issue_active\.ratio' \
  $b/v4serve bench --backend cuda --model $M --concurrency 1 --input-len 64 --output-len 2 --prefill-len 2048 --prefill-chunk 2048 >$OUT/ncu-$b.txt 2>$OUT/ncu-$b.err
echo "== ncu $b"; grep -E "^  [a-z].*moe_|Duration|DRAM Throughput|L2 Cache Throughput|Compute \(SM\)|Registers Per|Warp Cycles Per Issued" $OUT/ncu-$b.txt | cut -c1-110
done
OBJ=$(command -v cuobjdump || ls /usr/local/cuda*/bin/cuobjdump 2>/dev/null | head -1)
echo "cuobjdump: $OBJ"
for b in build-cuda-i2 build-cuda; do
  $OBJ -sass -fun _Z16moe_up_tc_kernelILi5ELi64EEv8moe_planPK8cu_wdesciPKtillfbb $b/v4serve > $OUT/up-sass-$b.txt 2>&1
  wc -l $OUT/up-sass-$b.txt
done
# per-instruction stall samples of the 3-group up kernel (SASS)
V4_KV_DTYPE=bf16 timeout 90 $NCU --clock-control none -k "regex:moe_up_tc_kernel" --launch-skip 2 --launch-count 1 \
  --section SourceCounters --section WarpStateStats --import-source no -o /tmp/up-g3 \
  build-cuda/v4serve bench --backend cuda --model $M --concurrency 1 --input-len 64 --output-len 2 --prefill-len 2048 --prefill-chunk 2048 >$OUT/ncu-src.log 2>&1
timeout 60 $NCU -i /tmp/up-g3.ncu-rep --page source --csv --print-source sass >$OUT/up-g3-source.csv 2>>$OUT/ncu-src.log
echo "source page rc=$? $(wc -l <$OUT/up-g3-source.csv) lines"; tail -3 $OUT/ncu-src.log
gzip -9 $OUT/up-g3-source.csv $OUT/up-sass-*.txt 2>/dev/null; ls -la $OUT
