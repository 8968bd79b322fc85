#!/bin/sh
# call 3: the MoE wgmma kernels without spills (a weight word at a time, row
# pointers found once) with the slow-scale vote per warpgroup (build-cuda)
# or per block (build-cuda-v1), against 6262a59 (build-cuda-g4): the MoE
# tests and sanitizers of build-cuda, the 8K prefill A/B
set -u
tar -xJf .device/bins.tar.xz
export LD_LIBRARY_PATH=$PWD/.device/lib V4_ROOT=$PWD
M=/tmp/v4-flash-4
X=$OUT; nvidia-smi -L
build-cuda/v4serve mkmodel --out $M --preset flash --layers 4 --seed 1 >/dev/null 2>&1 || echo mkmodel failed
timeout 100 build-cuda/gpu-tests --only tc_moe_formats,tc_batch_invariance,moe_experts_small,tc_moe_real_dims,graph_vs_eager >$X/tests.log 2>&1
echo "tests rc=$?"; grep -E "^(not ok|ok)|passed|TIME moe MXFP4 n 512" $X/tests.log | cut -c1-160
for tool in racecheck memcheck; do
  timeout 45 compute-sanitizer --tool $tool build-cuda/gpu-tests --quick --only tc_moe_formats,tc_batch_invariance >$X/$tool.log 2>&1
  echo "$tool rc=$? $(grep -E 'passed|SUMMARY' $X/$tool.log | tr '\n' ' ')"
done
for rep in 1 2; do
for b in build-cuda-g4 build-cuda-v1 build-cuda; do
  for ch in 2048 $([ $rep = 1 ] && echo 8192); do
    echo "== $b prefill 8192 in chunks of $ch (rep $rep)"
    V4_KV_DTYPE=bf16 timeout 40 $b/v4serve bench --backend cuda --model $M --concurrency 1 --input-len 64 --output-len 4 --prefill-len 8192 --prefill-chunk $ch 2>&1 | grep -E "prefill of|split of one eager prefill|slowest" | head -3 | cut -c1-300
  done
done
done >$X/prefill-ab.txt 2>&1
grep -E "==|split" $X/prefill-ab.txt | sed 's/(ms; ms, TFLOP.*MoE/ MoE/' | cut -c1-120
