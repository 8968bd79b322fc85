#!/bin/sh
# The CUDA backend's checks on a GPU machine, in one run from the repository
# root. The binaries are built beforehand on the build machine (`make cuda`)
# and carried: build-cuda/v4serve and build-cuda/gpu-tests; the golden data
# is tracked in git and travels with the tree.
#
#   scripts/device-run.sh
#
# Stages (each under its own time limit, skipped when the overall budget of
# DEADLINE seconds, default 510, would be exceeded):
#   1. nvidia-smi -L
#   2. build-cuda/gpu-tests: every op against the CPU backend, stateful
#      attention, sampling, graph replay vs eager (TAP)
#   3. check-golden --backend cuda on tests/golden/{tiny,rates}: the fp32
#      debug mode (V4_CUDA_PLAIN=1, fp32 KV; rel_err <= 1e-3, every greedy
#      token) at chunks 0 1 7 64; tensor-core GEMMs with fp32 KV at the same
#      chunks, and with bf16 and FP8 KV (reported as INFO: see golden1); the
#      fnuz dialect and graphs off once
#   4. compute-sanitizer memcheck and racecheck over gpu-tests --quick
#   5. a random full-dimension checkpoint (v4serve mkmodel --preset flash
#      --layers ${FULL_LAYERS:-2}, into /tmp) through gpu-tests
#      --only model_full_dims (CPU vs CUDA logits)
# Logs go to $OUT (default /tmp/v4-device-run); a summary table ends the
# output. Exit status 0 when every stage that ran passed.
# Knobs: DEADLINE (seconds), FULL_LAYERS (default 2; 4 adds a CSA and an HCA
# layer at full size), SKIP_GOLDEN=1, SKIP_SANITIZER=1, SKIP_FULL=1, GPU_TESTS_SKIP=NAME,...
# (gpu-tests --skip: leave out tests, e.g. the timing-only *_real_dims ones).
set -u
cd "$(dirname "$0")/.." || exit 1
B=build-cuda
OUT=${OUT:-/tmp/v4-device-run}
DEADLINE=${DEADLINE:-510}
mkdir -p "$OUT"
export V4_ROOT="$PWD"
SUMMARY="$OUT/summary.txt"
: >"$SUMMARY"
T0=$(date +%s)
FAILED=0

left() { echo $((DEADLINE - ($(date +%s) - T0))); }

# row STAGE RESULT SECONDS DETAIL
row() {
    printf '%-30s %-4s %4ss  %s\n' "$1" "$2" "$3" "$4" >>"$SUMMARY"
    [ "$2" = FAIL ] && FAILED=1
    printf '%-30s %-4s %4ss  %s\n' "$1" "$2" "$3" "$4"
}

# timed LIMIT LOG CMD...: runs with a limit no larger than what is left;
# sets RC (124 on timeout, 125 when skipped) and SECS.
timed() {
    lim=$1 log=$2
    shift 2
    l=$(left)
    if [ "$l" -le 20 ]; then
        RC=125 SECS=0
        return
    fi
    [ "$lim" -gt "$((l - 10))" ] && lim=$((l - 10))
    s=$(date +%s)
    timeout "$lim" "$@" >"$log" 2>&1
    RC=$?
    SECS=$(($(date +%s) - s))
}

echo "== device"
nvidia-smi -L 2>&1 | tee "$OUT/nvidia-smi.txt"
for f in $B/v4serve $B/gpu-tests; do
    if [ ! -x "$f" ]; then
        echo "missing $f: build with 'make cuda' and carry build-cuda/v4serve build-cuda/gpu-tests"
        exit 2
    fi
done

tap_result() { # LOG -> "passed/failed" detail from the TAP summary line
    sum=$(grep -E '^[0-9]+ passed, [0-9]+ failed' "$1" | tail -1)
    [ -n "$sum" ] || sum="no summary (crashed?)"
    echo "$sum"
}

echo "== gpu-tests"
timed 360 "$OUT/gpu-tests.log" $B/gpu-tests ${GPU_TESTS_SKIP:+--skip "$GPU_TESTS_SKIP"}
grep -E '^(ok|not ok) ' "$OUT/gpu-tests.log"
grep -E '^# FAIL' "$OUT/gpu-tests.log" | head -20
if [ "$RC" -eq 125 ]; then row gpu-tests SKIP 0 "no time left"; else
    [ "$RC" -eq 0 ] && r=PASS || r=FAIL
    row gpu-tests $r "$SECS" "$(tap_result "$OUT/gpu-tests.log") rc=$RC"
fi

echo "== check-golden (cuda)"
if [ "${SKIP_GOLDEN:-0}" = 1 ]; then
    row "golden" SKIP 0 "SKIP_GOLDEN=1"
else
# golden1 MODEL CHUNK KV EXTRA: one run; sets G_OK (PASS/FAIL/SKIP) and G_DETAIL
golden1() {
    m=$1 c=$2 kv=$3 extra=$4
    log="$OUT/golden-$m-$c-$kv$extra.log"
    # modes: f32 = the fp32 debug mode (plain fp32 kernels, fp32 KV), bound
    # 1e-3; fast = tensor-core GEMMs (bf16 operands), fp32 KV; bf16 / fp8 =
    # tensor-core GEMMs with bf16 / FP8 KV: reported, not judged (below)
    tol=2e-2 plain=0 kvd=$kv
    case $kv in
    f32) tol=1e-3 plain=1 ;;
    fast) kvd=f32 ;;
    esac
    opts=""
    [ "$extra" = -fnuz ] && opts="--fp8-dialect fnuz"
    graphs=1
    [ "$extra" = -nographs ] && graphs=0
    timed 60 "$log" env V4_KV_DTYPE=$kvd V4_CUDA_PLAIN=$plain V4_CUDA_GRAPHS=$graphs $B/v4serve check-golden --backend cuda \
        --model tests/golden/$m/model --golden tests/golden/$m/golden.safetensors --chunk "$c" --tolerance $tol $opts
    line=$(grep -E '^(PASS|FAIL) ' "$log" | tail -1)
    if [ "$RC" -eq 125 ]; then G_OK=SKIP G_DETAIL="c$c skipped"; return; fi
    if [ -z "$line" ]; then G_OK=FAIL G_DETAIL="c$c rc=$RC $(tail -1 "$log" | cut -c1-80)"; return; fi
    rel=$(echo "$line" | sed -n 's/.*rel_err=\([^ ]*\).*/\1/p')
    gr=$(echo "$line" | sed -n 's/.*greedy=\([0-9]*\/[0-9]*\).*/\1/p')
    over=$(echo "$line" | sed -n 's/.*positions_over=\([0-9]*\/[0-9]*\).*/\1/p')
    med=$(echo "$line" | sed -n 's/.*median_rel=\([^ ]*\).*/\1/p')
    if [ "$kv" != f32 ]; then
        # INFO, not PASS/FAIL: the golden models are random, and a bf16
        # rounding anywhere flips a top-k selection or an expert choice at a
        # few positions, which moves those positions' logits by up to ~0.18
        # of their range (the CPU backend with bf16 KV alone: tiny 0.18 at 8
        # of 184 positions, median 3.7e-4; tests/test_golden.c). "over" and
        # "median" show whether an error is such flips or everywhere. The
        # fast paths' accuracy gate is the full-dimension stage below and the
        # op tests of gpu-tests.
        G_OK=INFO
    else
        G_OK=$(echo "$line" | cut -d' ' -f1)
    fi
    G_DETAIL="c$c $rel $gr (over $over, median $med)"
}
# golden MODEL KV EXTRA CHUNKS...: one summary row over the chunkings
golden() {
    m=$1 kv=$2 extra=$3
    shift 3
    ok=PASS detail="" secs=0
    for c in "$@"; do
        golden1 "$m" "$c" "$kv" "$extra"
        echo "  $m $kv$extra chunk $c: $G_OK $G_DETAIL"
        [ "$G_OK" = FAIL ] && ok=FAIL
        [ "$G_OK" = INFO ] && ok=INFO
        [ "$G_OK" = SKIP ] && [ $ok = PASS ] && ok=SKIP
        detail="$detail${detail:+; }$G_DETAIL"
        secs=$((secs + SECS))
    done
    row "golden $m $kv KV$extra" $ok $secs "$detail"
}
for m in tiny rates; do
    golden $m f32 "" 0 1 7 64
    golden $m fast "" 0 1 7 64
    golden $m bf16 "" 0 7
    golden $m fp8 "" 0
done
golden tiny f32 -fnuz 0
golden rates f32 -fnuz 7
golden rates f32 -nographs 1
fi

echo "== compute-sanitizer"
SAN=$(command -v compute-sanitizer || ls /usr/local/cuda/bin/compute-sanitizer \
    /usr/local/cuda/compute-sanitizer/compute-sanitizer 2>/dev/null | head -1)
if [ "${SKIP_SANITIZER:-0}" = 1 ]; then
    row sanitizer SKIP 0 "SKIP_SANITIZER=1"
elif [ -z "$SAN" ]; then
    row sanitizer SKIP 0 "compute-sanitizer not found"
else
    for tool in memcheck racecheck; do
        lim=110
        [ $tool = racecheck ] && lim=90
        only=linear_formats,embed,rmsnorm,rope,mhc,elementwise,moe,tc_moe_formats,sample,attn_state_quick,gemv_linear
        skip=none
        [ $tool = memcheck ] && only=$only,graph_vs_eager,fp8_linear
        # racecheck reports hazards inside cuBLASLt's own Hopper kernels
        # (nvjet_sm90_*: shared memory ordered by asynchronous barriers it
        # does not model), so the library's tests (blas_*, fp8_linear) run
        # under memcheck only; blas.cu's and fp8_quant.cu's kernels use no
        # shared memory
        [ $tool = racecheck ] && skip=blas
        timed $lim "$OUT/$tool.log" "$SAN" --tool $tool --error-exitcode 99 \
            $B/gpu-tests --quick --only $only --skip $skip
        errs=$(grep -E '=========.*(ERROR SUMMARY|RACECHECK SUMMARY)' "$OUT/$tool.log" | tail -1)
        if [ "$RC" -eq 125 ]; then row "$tool" SKIP 0 "no time left"; continue; fi
        [ "$RC" -eq 0 ] && r=PASS || r=FAIL
        [ "$RC" -eq 124 ] && r=TIME
        row "$tool (gpu-tests --quick)" $r "$SECS" "$(tap_result "$OUT/$tool.log"); $errs rc=$RC"
    done
fi

echo "== full-dimension checkpoint"
FULL=/tmp/v4-flash-${FULL_LAYERS:-2}
if [ "${SKIP_FULL:-0}" = 1 ]; then
    row "full dims" SKIP 0 "SKIP_FULL=1"
elif ! $B/v4serve mkmodel --help >/dev/null 2>&1; then
    row "full dims" SKIP 0 "this v4serve has no mkmodel"
elif [ "$(left)" -lt 120 ]; then
    row "full dims" SKIP 0 "no time left"
else
    if [ ! -f "$FULL/.complete" ]; then
        rm -rf "$FULL"
        timed 150 "$OUT/mkmodel.log" $B/v4serve mkmodel --out "$FULL" --preset flash --layers "${FULL_LAYERS:-2}"
        if [ "$RC" -eq 0 ]; then touch "$FULL/.complete"; else
            row "mkmodel flash" FAIL "$SECS" "rc=$RC $(tail -1 "$OUT/mkmodel.log" | cut -c1-100)"; fi
    fi
    if [ -f "$FULL/.complete" ]; then
        timed 200 "$OUT/full-dims.log" $B/gpu-tests --only model_full_dims --model "$FULL"
        grep -E '^# ' "$OUT/full-dims.log" | grep -v seed | head -10
        [ "$RC" -eq 0 ] && r=PASS || r=FAIL
        [ "$RC" -eq 125 ] && r=SKIP
        row "full dims (${FULL_LAYERS:-2} layers)" $r "$SECS" "$(grep -E '^# full dims' "$OUT/full-dims.log" | tr '\n' ' ' | cut -c1-150)"
    fi
fi

echo
echo "== summary (logs in $OUT; total $(($(date +%s) - T0)) s)"
cat "$SUMMARY"
exit $FAILED
