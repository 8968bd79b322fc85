#!/bin/sh
# One device call's whole plan, from the repository root on the GPU machine,
# after `scripts/device-pack.sh` here (BASE=... adds a baseline binary):
#   1. unpack .device/bins.tar.xz (binaries, baseline, the libraries the
#      image lacks: LD_LIBRARY_PATH=.device/lib)
#   2. scripts/device-run.sh: gpu-tests, the golden matrix, sanitizers
#      (knobs passed through: DEADLINE, SKIP_*, GPU_TESTS_SKIP, FULL_LAYERS)
#   3. scripts/device-bench.sh (CONC, PREFILL, V4_KV_DTYPE=bf16 by default)
#   4. the baseline's single-stream decode on the same checkpoint, when packed
#   5. with AB="VAR=value ..." set, the same single-stream decode with that
#      environment (e.g. AB="V4_CUDA_GEMV_MAX_TOKENS=0": the matrix-vector
#      path off), so one change is measured against its absence
#   6. with CHUNK=N set, the 8192-token prefill in chunks of N
#   7. with NCU=1, every kernel's duration in a short single-stream run
#      (Nsight Compute, gpu__time_duration; kernels serialised, so gaps
#      between kernels are not in it): ncu.csv, to set against the step time
#   8. with NCU_DETAIL=REGEX, Nsight Compute's throughput, occupancy and
#      warp-stall sections for NCU_COUNT (default 8) kernels matching REGEX
#      after skipping NCU_SKIP of them, in the same run: ncu-detail.txt
#      (NCU_EXTRA: more ncu arguments, e.g. "--section SourceCounters";
#      NCU_CONC: the run's concurrency, default 1)
# Everything is written under /tmp/session and packed into $OUT/session.tgz:
# the device tool returns a limited number of files, and a call that times
# out still returns what $OUT holds, so the summary is copied there after
# each stage. Stage limits: RUN_S (default 330) and BENCH_S (default 200).
set -u
cd "$(dirname "$0")/.." || exit 1
OUT=${OUT:-/tmp/v4-session}
S=/tmp/session
mkdir -p "$OUT" "$S"
tar -xJf .device/bins.tar.xz || { echo "no .device/bins.tar.xz: run scripts/device-pack.sh and carry it"; exit 2; }
export LD_LIBRARY_PATH="$PWD/.device/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" V4_ROOT="$PWD"
snap() { cp "$S"/*.txt "$OUT"/ 2>/dev/null; tar -czf "$OUT/session.tgz" -C /tmp session 2>/dev/null; }

OUT="$S/run" DEADLINE=${RUN_S:-330} scripts/device-run.sh >"$S/run.log" 2>&1
cp "$S/run/summary.txt" "$S/summary.txt" 2>/dev/null
snap
cut -c1-240 "$S/summary.txt"

OUT="$S/bench" V4_KV_DTYPE=${V4_KV_DTYPE:-bf16} BENCH_TIMEOUT=${BENCH_S:-200} scripts/device-bench.sh >"$S/bench.log" 2>&1
grep -E '^ *[0-9]+ +[0-9]+ +[0-9]+ \||split|slowest|prefill|measured' "$S/bench.log" >"$S/bench-summary.txt"
snap
cut -c1-400 "$S/bench-summary.txt"

# single_stream NAME BINARY [VAR=value ...]: one-sequence decode on the
# bench checkpoint (and a 1024-token prefill, or PREFILL_ARGS)
single_stream() {
    name=$1 bin=$2
    shift 2
    # shellcheck disable=SC2086 # PREFILL_ARGS is a list of words
    env "$@" V4_KV_DTYPE=${V4_KV_DTYPE:-bf16} timeout 60 "$bin" bench --backend cuda \
        --model "/tmp/v4-flash-${LAYERS:-4}" --concurrency 1 --input-len 1024 --output-len 32 \
        ${PREFILL_ARGS:---prefill-len 1024} --out "$S/$name" >"$S/$name.log" 2>&1
    grep -E '^ *[0-9]+ +[0-9]+ +[0-9]+ \||split|slowest|prefill' "$S/$name.log" >"$S/$name-summary.txt"
    snap
    cut -c1-400 "$S/$name-summary.txt"
}

if [ -x build-cuda-base/v4serve ]; then
    echo "== baseline"
    single_stream base build-cuda-base/v4serve
fi
if [ -n "${AB:-}" ]; then
    echo "== with $AB"
    # shellcheck disable=SC2086 # AB is a list of VAR=value words
    single_stream ab build-cuda/v4serve $AB
fi
if [ -n "${CHUNK:-}" ]; then
    echo "== prefill in chunks of $CHUNK"
    PREFILL_ARGS="--prefill-len 8192 --prefill-chunk $CHUNK" single_stream chunk build-cuda/v4serve
fi
NCU_BIN=$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu /usr/local/cuda/bin/ncu 2>/dev/null | head -1)
# ncu_single ARGS...: ncu on a short run of NCU_CONC (default 1) sequences
# (two decode steps)
ncu_single() {
    V4_KV_DTYPE=${V4_KV_DTYPE:-bf16} timeout 300 "$NCU_BIN" --clock-control none --cache-control none "$@" \
        build-cuda/v4serve bench --backend cuda --model "/tmp/v4-flash-${LAYERS:-4}" --concurrency "${NCU_CONC:-1}" \
        --input-len 1024 --output-len 2 --prefill-len 0
}
if [ "${NCU:-0}" = 1 ]; then
    echo "== kernel durations (ncu)"
    ncu_single --metrics gpu__time_duration.sum --csv --print-units base >"$S/ncu.csv" 2>"$S/ncu.err"
    echo "ncu rc=$? $(wc -l <"$S/ncu.csv") lines"
    tail -3 "$S/ncu.err"
    snap
fi
if [ -n "${NCU_DETAIL:-}" ]; then
    echo "== ncu sections for $NCU_DETAIL"
    ncu_single -k "regex:$NCU_DETAIL" --launch-skip "${NCU_SKIP:-0}" --launch-count "${NCU_COUNT:-8}" \
        --section SpeedOfLight --section Occupancy --section LaunchStats --section WarpStateStats \
        --section MemoryWorkloadAnalysis ${NCU_EXTRA:-} >"$S/ncu-detail.txt" 2>"$S/ncu-detail.err"
    echo "ncu rc=$? $(wc -l <"$S/ncu-detail.txt") lines"
    tail -3 "$S/ncu-detail.err"
    snap
fi
